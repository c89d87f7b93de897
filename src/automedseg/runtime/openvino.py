"""The exported models on OpenVINO, without torch: bfloat16 where the CPU computes it.

An OpenVINO model is an IR pair (``.xml`` graph + ``.bin`` weights) with a JSON card beside
it (kind "openvino", written by ``deploy.openvino``): which model it is (the names of
``runtime.onnx``), its inputs and outputs, the SHA-256 of both files and of its source, the
automedseg version that wrote it. ``load_openvino_model`` checks all of that, then compiles
the model for the CPU with

* ``INFERENCE_PRECISION_HINT`` bf16 when the CPU has native bfloat16 (AVX-512 BF16 or AMX,
  read from OpenVINO's ``OPTIMIZATION_CAPABILITIES`` at run time), f32 elsewhere — or as asked,
  or f32 where the card says ``"inference_precision": "f32"`` (``automedseg quantize`` found
  bfloat16 outside the Dice budget for that model);
* ``INFERENCE_NUM_THREADS`` = ``threads``, one stream, the latency hint;
* no CPU pinning (``ENABLE_CPU_PINNING`` off): OpenVINO would bind the threads of every
  process to the first cores, so two one-thread batch workers would share one core
  (``benchmarks/cpu_scaling.py``).

``OpenVinoModel.run`` has the signature of ``runtime.onnx.OnnxModel.run``, so the predictor and
prompters of ``runtime.onnx`` run on it unchanged. ``run_many`` runs a batch of inputs (a
volume's planes) on ``threads`` streams of one thread each, several inputs at a time: on 2
cores this encodes about 1.7 times as many planes per second as one 2-thread request
(``benchmarks/pipeline_speed.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from automedseg import __version__
from automedseg.checkpoints import read_card
from automedseg.errors import WeightsError

KIND = "openvino"
CARD_VERSION = 1
PRECISIONS = ("auto", "bf16", "f32")


@cache
def core() -> Any:
    """The process's OpenVINO ``Core`` (one per process)."""
    try:
        import openvino as ov
    except ModuleNotFoundError as error:
        raise WeightsError("openvino is not installed (pip install openvino)") from error
    return ov.Core()


def cpu_has_bf16() -> bool:
    """Whether OpenVINO computes bfloat16 natively on this CPU."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def inference_precision(requested: str = "auto") -> str:
    """"bf16" or "f32": ``requested``, or for "auto" bf16 exactly when the CPU has it."""
    if requested not in PRECISIONS:
        raise WeightsError(f"unknown precision {requested!r}; choose one of {PRECISIONS}")
    if requested == "auto":
        return "bf16" if cpu_has_bf16() else "f32"
    return requested


@dataclass
class OpenVinoModel:
    """A compiled OpenVINO model and the card it was checked against."""

    compiled: Any  # openvino.CompiledModel
    card: dict[str, Any]
    path: Path
    precision: str
    _streams: Any = None  # the same model compiled for throughput, made on first run_many

    @property
    def name(self) -> str:
        return str(self.card["model"])

    @property
    def threads(self) -> int:
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def run(self, **inputs: np.ndarray) -> list[np.ndarray]:
        """The model's outputs, in the card's order, for inputs named as in the card."""
        request = self.compiled.create_infer_request()
        request.infer({k: np.ascontiguousarray(v) for k, v in inputs.items()})
        return [np.asarray(request.get_output_tensor(i).data).copy()
                for i in range(len(self.compiled.outputs))]  # fmt: skip

    def run_many(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """``run`` for each of ``feeds``, several at a time on one-thread streams; the outputs
        in the order of ``feeds``."""
        threads = self.threads
        if len(feeds) < 2 or threads < 2:
            return [self.run(**feed) for feed in feeds]
        import openvino as ov

        if self._streams is None:
            config = {"INFERENCE_PRECISION_HINT": self.precision, "NUM_STREAMS": threads,
                      "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False,
                      "PERFORMANCE_HINT": "THROUGHPUT"}  # fmt: skip
            weights = self.path.parent / self.card["bin_file"]
            model = core().read_model(self.path, weights)  # the files checked at load time
            self._streams = core().compile_model(model, "CPU", config)
        outputs: list[list[np.ndarray] | None] = [None] * len(feeds)
        count = len(self.compiled.outputs)

        def keep(request: Any, index: int) -> None:
            outputs[index] = [np.asarray(request.get_output_tensor(i).data).copy()
                              for i in range(count)]  # fmt: skip

        queue = ov.AsyncInferQueue(self._streams, threads)
        queue.set_callback(keep)
        for index, feed in enumerate(feeds):
            queue.start_async({k: np.ascontiguousarray(v) for k, v in feed.items()}, index)
        queue.wait_all()
        return outputs  # type: ignore[return-value]


def latency_config(precision: str, threads: int) -> dict[str, Any]:
    """The CPU plugin's settings for one request at a time: ``precision`` ("bf16" or "f32"),
    ``threads`` threads, one stream, no pinning."""
    return {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": int(threads),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_openvino_model(
    path: str | Path, model: str, threads: int = 2, precision: str = "auto"
) -> OpenVinoModel:
    """A checked, compiled ``model`` from its card (or its ``.xml``); ``WeightsError`` for a
    missing or foreign card, another model or automedseg version, IR files whose SHA-256
    differ from the card's, or an IR OpenVINO cannot compile."""
    path = Path(path)
    card_path = path if path.suffix == ".json" else path.with_suffix(".json")
    if not card_path.is_file():
        raise WeightsError(f"no model card {card_path.name} beside the OpenVINO model", path)
    card = read_card(card_path)
    if card.get("kind") != KIND:
        raise WeightsError(f"not an OpenVINO model card (kind {card.get('kind')!r})", card_path)
    if card.get("model") != model:
        raise WeightsError(f"the card is for {card.get('model')!r}, expected {model!r}", card_path)
    if card.get("card_version") != CARD_VERSION or card.get("automedseg_version") != __version__:
        raise WeightsError(
            f"written by automedseg {card.get('automedseg_version')} (card version "
            f"{card.get('card_version')}), this is {__version__}: convert the model again",
            card_path,
        )
    xml, weights = card_path.parent / card["weights_file"], card_path.parent / card["bin_file"]
    for file, key in ((xml, "sha256"), (weights, "bin_sha256")):
        if not file.is_file():
            raise WeightsError("file named by the card does not exist", file)
        if (actual := _sha256(file)) != card[key]:
            raise WeightsError(
                f"SHA-256 mismatch (card says {card[key][:12]}…, file has {actual[:12]}…): "
                "damaged, or belongs to another card",
                file,
            )
    if precision == "auto" and card.get("inference_precision") == "f32":
        precision = "f32"  # quantize measured bfloat16 outside the Dice budget for this model
    chosen = inference_precision(precision)
    try:
        compiled = core().compile_model(
            core().read_model(xml, weights), "CPU", latency_config(chosen, threads)
        )
    except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise WeightsError(f"OpenVINO cannot compile this model ({first})", xml) from None
    names = tuple([port.get_any_name() for port in ports]
                  for ports in (compiled.inputs, compiled.outputs))  # fmt: skip
    expected = ([i["name"] for i in card["inputs"]], [o["name"] for o in card["outputs"]])
    if names != expected:
        raise WeightsError(f"the IR's inputs/outputs {names} differ from the card's {expected}",
                           xml)  # fmt: skip
    return OpenVinoModel(compiled, card, xml, chosen)
