"""ONNX exports → OpenVINO IR (float32 weights; bfloat16 is chosen when compiling), and NNCF
INT8 of a model's matrix multiplications.

``convert`` reads an exported model's ONNX card (``deploy.export``) and writes the IR pair
with an OpenVINO card beside it, carrying over what the runtime needs (labels, thresholds,
refinement and propagation settings of a prompter). ``quantize_matmuls`` runs NNCF's
post-training quantization on calibration inputs with every convolution left out: on
LiteMedSAM's encoder, INT8 convolutions broke the embedding (cosine 0.65, as with ONNX
Runtime), while INT8 MatMuls with bfloat16 elsewhere kept it (0.997). ``quantize_all``
quantizes every layer NNCF can (a convolutional network such as the backbone prompter).
``int8_weights`` stores the weights of every MatMul and convolution as 8-bit integers (per
output channel) and leaves the activations in floating point: half the disk of float16, no
calibration inputs, and no activation rounding (the thin larynx folds lost 10 % same-box Dice
with INT8 MatMuls).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import automedseg
from automedseg import io
from automedseg.checkpoints import file_sha256, read_card
from automedseg.errors import WeightsError
from automedseg.runtime.openvino import CARD_VERSION, KIND

CARRIED = ("task", "architecture", "members", "flip", "fallback", "labels", "score_threshold",
           "pixel_threshold", "min_area_fraction", "refinement", "propagation",
           "segmenter_sha256")  # fmt: skip
"""ONNX card fields an OpenVINO card keeps (the prompters' settings)."""


def convert(onnx_card: str | Path, out_stem: str | Path, half_weights: bool = False) -> Path:
    """The ONNX model of ``onnx_card`` as OpenVINO IR at ``out_stem``.xml/.bin; returns the
    card written beside them. ``half_weights`` stores the weights as float16 (half the disk;
    computed in bfloat16 or float32 all the same)."""
    import openvino as ov

    card = read_card(onnx_card)
    onnx_path = Path(card["_path"]).parent / card["weights_file"]
    if file_sha256(onnx_path) != card["sha256"]:
        raise WeightsError("SHA-256 mismatch: the ONNX file does not match its card", onnx_path)
    recipe = {"recipe": "float16-weights" if half_weights else "float32"}
    return save_ir(ov.convert_model(onnx_path), card, out_stem, recipe, half_weights)


def quantize_matmuls(
    source_card: str | Path, out_stem: str | Path, feeds: Sequence[dict[str, np.ndarray]],
) -> Path:  # fmt: skip
    """NNCF INT8 of the MatMuls of the IR of ``source_card`` (convolutions left out),
    calibrated on ``feeds`` (input name → array); the weights left in floating point are
    stored as float16. Returns the new card."""
    import nncf
    import openvino as ov

    card = read_card(source_card)
    xml = Path(card["_path"]).parent / card["weights_file"]
    model = ov.Core().read_model(xml)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(list(feeds)),
        model_type=nncf.ModelType.TRANSFORMER,
        ignored_scope=nncf.IgnoredScope(types=["Convolution", "GroupConvolution"],
                                        validate=False),  # a model may have none
        subset_size=len(feeds),
    )
    recipe = {"recipe": "int8-matmul", "calibration_inputs": len(feeds), "nncf": nncf.__version__}
    return save_ir(quantized, card, out_stem, recipe, half_weights=True)


def quantize_all(
    source_card: str | Path, out_stem: str | Path, feeds: Sequence[dict[str, np.ndarray]],
) -> Path:  # fmt: skip
    """NNCF INT8 of every layer it can quantize (convolutions included) of the IR of
    ``source_card``, calibrated on ``feeds``; returns the new card."""
    import nncf
    import openvino as ov

    card = read_card(source_card)
    xml = Path(card["_path"]).parent / card["weights_file"]
    quantized = nncf.quantize(ov.Core().read_model(xml), nncf.Dataset(list(feeds)),
                              subset_size=len(feeds))  # fmt: skip
    recipe = {"recipe": "int8", "calibration_inputs": len(feeds), "nncf": nncf.__version__}
    return save_ir(quantized, card, out_stem, recipe, half_weights=True)


def int8_weights(source_card: str | Path, out_stem: str | Path) -> Path:
    """NNCF's weight compression of the IR of ``source_card``: weights as asymmetric INT8 per
    output channel, activations in floating point (the source card's inference precision is
    kept); returns the new card."""
    import nncf
    import openvino as ov

    card = read_card(source_card)
    xml = Path(card["_path"]).parent / card["weights_file"]
    compressed = nncf.compress_weights(ov.Core().read_model(xml),
                                       mode=nncf.CompressWeightsMode.INT8_ASYM)  # fmt: skip
    recipe = {"recipe": "int8-weights", "nncf": nncf.__version__,
              **{k: card[k] for k in ("inference_precision",) if k in card}}  # fmt: skip
    return save_ir(compressed, card, out_stem, recipe, half_weights=True)


def in_float32(source_card: str | Path, out_stem: str | Path) -> Path:
    """A copy of the IR of ``source_card`` whose card asks to compute it in float32 even where
    the CPU has bfloat16; returns the new card."""
    import openvino as ov

    card = read_card(source_card)
    xml = Path(card["_path"]).parent / card["weights_file"]
    recipe = {"recipe": card.get("recipe", "float32"), "inference_precision": "f32"}
    return save_ir(ov.Core().read_model(xml), card, out_stem, recipe, half_weights=True)


def save_ir(model: Any, source: dict, out_stem: str | Path, recipe: dict,
            half_weights: bool = False) -> Path:  # fmt: skip
    """Write ``model`` (an ``openvino.Model``) and its card; ``source`` is the card of what it
    was made from (ONNX or OpenVINO)."""
    import openvino as ov

    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    xml, weights = out_stem.with_suffix(".xml"), out_stem.with_suffix(".bin")
    temp = out_stem.with_name(out_stem.name + ".tmp.xml")
    ov.save_model(model, temp, compress_to_fp16=half_weights)
    temp.replace(xml)
    temp.with_suffix(".bin").replace(weights)
    origin = source.get("source", {})
    card = {
        "kind": KIND,
        "model": source["model"],
        "card_version": CARD_VERSION,
        "automedseg_version": automedseg.__version__,
        "weights_file": xml.name,
        "bin_file": weights.name,
        "sha256": file_sha256(xml),
        "bin_sha256": file_sha256(weights),
        "inputs": source["inputs"],
        "outputs": source["outputs"],
        "source": {**origin, "from": source.get("kind"), "from_sha256": source["sha256"]},
        **recipe,
        **{k: source[k] for k in CARRIED if k in source},
    }
    return io.write_json(out_stem.with_suffix(".json"), card)
