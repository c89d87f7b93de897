"""Post-training INT8 quantization of an exported ONNX model with ONNX Runtime's quantizer.

A ``Recipe`` says which operator types become INT8 and how: *static* recipes calibrate the
activation ranges on real inputs and write a QDQ graph (INT8 activations, per-channel INT8
weights; ONNX Runtime fuses QDQ pairs into integer kernels, VNNI/AMX where the CPU has them);
*dynamic* recipes store INT8 weights and quantize activations on the fly at run time, which
needs no calibration. Every operator type a recipe leaves out (softmax, layer norm, GELU, the
decoder's upsampling, ...) stays float32. Which recipe a model gets is decided by measurement
(``deploy.fidelity``), not here.

The quantized model keeps its source's inputs, outputs and card fields, so ``runtime.onnx``
loads it like the float32 one; its card adds ``precision`` "int8" and ``quantization`` (the
recipe, the calibration count, the source ONNX file's SHA-256 and the onnxruntime version).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from automedseg import io
from automedseg.checkpoints import file_sha256, read_card
from automedseg.errors import WeightsError
from automedseg.runtime.onnx import card_path_for

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class Recipe:
    name: str
    static: bool
    """Calibrated INT8 activations (QDQ); else dynamic (INT8 weights, activations at run time)."""
    op_types: tuple[str, ...]
    """ONNX operator types that become INT8; all others stay float32."""
    per_channel: bool = True
    calibrate_method: str = "MinMax"
    """onnxruntime.quantization.CalibrationMethod member for static recipes."""


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over a list of input feeds."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        self._feeds: Iterator[Feed] = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._feeds, None)

    def __iter__(self) -> Iterator[Feed]:
        return self._feeds


def quantize_model(
    source_card: str | Path,
    out: str | Path,
    recipe: Recipe,
    calibration: Sequence[Feed] = (),
) -> Path:
    """Write ``out.onnx`` and its card ``out.json``: the model of ``source_card`` in INT8.

    ``calibration`` (static recipes only, at least one feed): inputs named as in the model.
    Returns the new card's path. Nothing is left behind when quantization fails.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source_card = card_path_for(source_card)
    card = read_card(source_card)
    source = source_card.parent / card["weights_file"]
    if recipe.static and not calibration:
        raise ValueError(f"recipe {recipe.name} is static: it needs calibration inputs")
    out_onnx = Path(out).with_suffix(".onnx")
    out_onnx.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_onnx.parent, prefix=".quantize-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "quantized.onnx"
        try:
            quant_pre_process(str(source), str(prepared))  # shape inference + graph cleanup
            if recipe.static:
                quantize_static(
                    str(prepared),
                    str(quantized),
                    _Feeds(calibration),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(recipe.op_types),
                    per_channel=recipe.per_channel,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, recipe.calibrate_method),
                )
            else:
                quantize_dynamic(
                    str(prepared),
                    str(quantized),
                    op_types_to_quantize=list(recipe.op_types),
                    per_channel=recipe.per_channel,
                    weight_type=QuantType.QInt8,
                )
        except Exception as error:  # the quantizer raises many kinds; name the model
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise WeightsError(f"quantization with {recipe.name} failed: {first}", source) from None
        io.write_bytes(out_onnx, quantized.read_bytes())
    import onnxruntime

    card.pop("_path", None)
    card.update(
        weights_file=out_onnx.name,
        sha256=file_sha256(out_onnx),
        precision="int8",
        quantization={
            "recipe": asdict(recipe),
            "calibration_inputs": len(calibration) if recipe.static else 0,
            "source_sha256": file_sha256(source),
            "onnxruntime": onnxruntime.__version__,
        },
    )
    return io.write_json(card_path_for(out_onnx), card)
