"""Which runtime segments, and the ONNX model set it loads. Never imports torch.

Runtimes: ``torch`` (the PyTorch models), ``onnx`` (the float32 ONNX export on ONNX Runtime)
and ``int8`` (the quantized set). A model set is the folder ``automedseg quantize`` writes
(``onnx/`` and ``int8/``, each with image_encoder, mask_decoder and prompter, and the report
``quantization.json``); a task may carry one in its folder (``tasks.Task.model_set``).

The default runtime is the fastest whose recorded fidelity is within its budget: ``int8`` when
the task's (or ``--models``') report says so, else ``torch``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from automedseg.errors import AutomedsegError, WeightsError
from automedseg.runtime.onnx import (
    OnnxBackbonePrompter,
    OnnxHeadPrompter,
    OnnxLiteMedSAMPredictor,
    load_onnx_predictor,
    load_onnx_prompter,
)

RUNTIMES = ("torch", "onnx", "int8")
REPORT = "quantization.json"


@dataclass(frozen=True)
class OnnxSet:
    predictor: OnnxLiteMedSAMPredictor
    prompter: OnnxHeadPrompter | OnnxBackbonePrompter | None
    folder: Path


def choose_runtime(requested: str | None, models: Path | None) -> str:
    """``requested`` when given, else ``int8`` if the set's report is within budget, else torch."""
    if requested is not None:
        if requested not in RUNTIMES:
            raise AutomedsegError(f"unknown runtime {requested!r}; choose one of {RUNTIMES}")
        return requested
    if models is None or not (models / REPORT).is_file():
        return "torch"
    try:
        report = json.loads((models / REPORT).read_text())
        return "int8" if report["int8"]["within_budget"] is True else "torch"
    except (OSError, ValueError, KeyError, TypeError):
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
    predictor = load_onnx_predictor(sub / "image_encoder.json", sub / "mask_decoder.json", threads)
    prompter = None
    if prompter_sha256 is not None:
        prompter = load_onnx_prompter(sub / "prompter.json", threads)
        source = prompter.model.card.get("source", {}).get("weights_sha256")
        if source != prompter_sha256:
            raise WeightsError(
                "these ONNX models were made from another prompter (its weights' SHA-256 "
                f"{str(source)[:12]}…, the requested one has {prompter_sha256[:12]}…): "
                "quantize this task again",
                sub / "prompter.json",
            )
    return OnnxSet(predictor, prompter, sub)
