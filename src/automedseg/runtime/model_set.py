"""Which runtime segments, and the ONNX model set it loads. Never imports torch.

Runtimes: ``torch`` (the PyTorch models), ``onnx`` (the float32 ONNX export on ONNX Runtime),
``int8`` (the ONNX Runtime INT8 set) and ``openvino`` (the OpenVINO set: bfloat16 where the CPU
has it, NNCF INT8 where measured within budget). A model set is the folder ``automedseg
quantize`` writes (``onnx/``, ``int8/`` and ``openvino/``, each with image_encoder,
mask_decoder and prompter, and the report ``quantization.json``); a task may carry one in its
folder (``tasks.Task.model_set``).

The default runtime is the first of ``openvino``, ``int8`` whose recorded fidelity is within
its budget in the task's (or ``--models``') report, else ``torch``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from automedseg.checkpoints import read_card
from automedseg.errors import AutomedsegError, WeightsError
from automedseg.runtime.onnx import (
    BACKBONE,
    DECODER,
    ENCODER,
    HEAD,
    OnnxBackbonePrompter,
    OnnxHeadPrompter,
    OnnxLiteMedSAMPredictor,
    load_onnx_predictor,
    load_onnx_prompter,
    prompter_of,
)
from automedseg.runtime.openvino import load_openvino_model

RUNTIMES = ("torch", "onnx", "int8", "openvino")
PREFERRED = ("openvino", "int8")
"""Runtimes a model set's report can make the default, in order of preference (their speed is
measured by benchmarks, not assumed here)."""
REPORT = "quantization.json"


@dataclass(frozen=True)
class OnnxSet:
    predictor: OnnxLiteMedSAMPredictor
    prompter: OnnxHeadPrompter | OnnxBackbonePrompter | None
    folder: Path


def choose_runtime(requested: str | None, models: Path | None) -> str:
    """``requested`` when given, else the first of ``PREFERRED`` whose part of the set's report
    is within budget (and whose models the set has), else torch."""
    if requested is not None:
        if requested not in RUNTIMES:
            raise AutomedsegError(f"unknown runtime {requested!r}; choose one of {RUNTIMES}")
        return requested
    if models is None or not (models / REPORT).is_file():
        return "torch"
    try:
        report = json.loads((models / REPORT).read_text())
    except (OSError, ValueError):
        return "torch"
    for runtime in PREFERRED:
        part = report.get(runtime) if isinstance(report, dict) else None
        if isinstance(part, dict) and part.get("within_budget") is True:
            if (models / runtime).is_dir():
                return runtime
    return "torch"


def load_model_set(
    folder: Path | None,
    runtime: str,
    prompter_sha256: str | None,
    threads: int = 2,
) -> OnnxSet:
    """The ``runtime`` ("onnx" or "int8") models of a set; the prompter only when
    ``prompter_sha256`` (the card of the prompter they must have been made from) is given."""
    if folder is None:
        raise AutomedsegError(
            f"--runtime {runtime} needs ONNX models: pass --models DIR (written by "
            "`automedseg quantize`) or a --task that ships them"
        )
    sub = Path(folder) / runtime
    if not sub.is_dir():
        raise WeightsError(
            f"no {runtime}/ models here: `automedseg quantize --out DIR` writes both onnx/ "
            "and int8/; pass --models DIR",
            folder,
        )
    if runtime == "openvino":
        encoder = load_openvino_model(sub / "image_encoder.json", ENCODER, threads)
        decoder = load_openvino_model(sub / "mask_decoder.json", DECODER, threads)
        predictor = OnnxLiteMedSAMPredictor(encoder, decoder)
    else:
        predictor = load_onnx_predictor(sub / "image_encoder.json", sub / "mask_decoder.json",
                                        threads)  # fmt: skip
    prompter = None
    if prompter_sha256 is not None:
        prompter = _prompter(sub / "prompter.json", runtime, threads)
        source = prompter.model.card.get("source", {}).get("weights_sha256")
        if source != prompter_sha256:
            raise WeightsError(
                "these ONNX models were made from another prompter (its weights' SHA-256 "
                f"{str(source)[:12]}…, the requested one has {prompter_sha256[:12]}…): "
                "quantize this task again",
                sub / "prompter.json",
            )
    return OnnxSet(predictor, prompter, sub)


def _prompter(card: Path, runtime: str, threads: int) -> OnnxHeadPrompter | OnnxBackbonePrompter:
    if runtime != "openvino":
        return load_onnx_prompter(card, threads)
    model = read_card(card).get("model") if card.is_file() else HEAD
    return prompter_of(load_openvino_model(card, BACKBONE if model == BACKBONE else HEAD, threads))
