"""``automedseg quantize``: a task's models → float32 ONNX → the INT8 and OpenVINO sets the
measurements favour.

Reads top to bottom: planes (calibration + held out) → export float32 ONNX (parity-checked)
→ the PyTorch pipeline's outputs on the held-out planes as the reference → for the image
encoder, then the mask decoder, then the prompter: each candidate ONNX Runtime recipe
measured against the reference (``deploy.fidelity``), the fastest within the Dice budget kept
→ OUT/int8 → the float32 exports converted to OpenVINO (bfloat16 where the CPU has it, a
backbone prompter in float32), the encoder and decoder also with NNCF INT8 MatMuls (a backbone
prompter with INT8 throughout), the fastest within budget kept → OUT/openvino, and the report
OUT/quantization.json.

Output layout (``runtime.model_set`` reads it)::

    OUT/onnx/{image_encoder,mask_decoder,prompter}.onnx + .json   float32
    OUT/int8/{image_encoder,mask_decoder,prompter}.onnx + .json   the chosen INT8 set
    OUT/openvino/{image_encoder,…}.xml + .bin + .json             the chosen OpenVINO set
    OUT/candidates/<model>-<recipe>.(onnx|xml) + .json             every recipe tried
    OUT/quantization.json                                          the report
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automedseg import __version__, io
from automedseg.checkpoints import read_card
from automedseg.data.datasets import LabelChoice
from automedseg.deploy import export
from automedseg.deploy.calibration import Planes, calibration_planes
from automedseg.deploy.fidelity import Fidelity, Runtime, measure, reference_outputs
from automedseg.deploy.quantize import Recipe, quantize_model
from automedseg.errors import AutomedsegError, WeightsError
from automedseg.pipeline import segment_plane
from automedseg.prompt.backbone_space import views
from automedseg.runtime.onnx import (
    BACKBONE,
    DECODER,
    ENCODER,
    OnnxLiteMedSAMPredictor,
    load_onnx_model,
    load_onnx_predictor,
    load_onnx_prompter,
    prompter_of,
)
from automedseg.runtime.openvino import KIND as OPENVINO_KIND
from automedseg.runtime.openvino import inference_precision, load_openvino_model
from automedseg.runtime.transforms import preprocess
from automedseg.tasks import load_models, resolve_task

REPORT = "quantization.json"
FILES = {"encoder": "image_encoder", "decoder": "mask_decoder", "prompter": "prompter"}
FLOAT32 = Recipe("float32", static=False, op_types=())
"""Not a quantization: the candidate that keeps a model in float32."""
MATMULS = Recipe("openvino-int8-matmul", True, ("MatMul",))
AS_CONVERTED = Recipe("openvino-float16-weights", False, ())
"""An OpenVINO model as converted: float16 weights, computed in bfloat16 where the CPU can."""
IN_FLOAT32 = Recipe("openvino-f32", False, ())
"""The model as converted, computed in float32 even where the CPU has bfloat16."""
STUDENT = Recipe("openvino-distilled-student", False, ())
"""A distilled stand-in for the encoder (``train.encoder``), converted as above."""
RECIPES: dict[str, tuple[Recipe, ...]] = {
    # Measured on Kvasir-SEG (runs/exp/quant.log, embedding cosine to float32): dynamic INT8
    # MatMul/Gemm 0.998 and the fastest; static QDQ MatMul/Gemm 0.994 and slower; adding Conv
    # ruins it (static 0.68, dynamic 0.62) - kept as a candidate so each run shows it again.
    "encoder": (
        Recipe("dynamic-matmul", static=False, op_types=("MatMul", "Gemm")),
        Recipe("static-matmul", static=True, op_types=("MatMul", "Gemm")),
        Recipe("static-matmul-conv", static=True, op_types=("MatMul", "Gemm", "Conv")),
    ),
    "decoder": (FLOAT32, Recipe("dynamic-matmul", static=False, op_types=("MatMul", "Gemm"))),
    "prompter": (FLOAT32, Recipe("static-conv", static=True, op_types=("Conv",))),
}


@dataclass
class Candidate:
    model: str
    recipe: Recipe
    card: Path
    fidelity: Fidelity | None = None
    mb: float = 0.0


def quantize_task(
    out: str | Path,
    task: str | None = None,
    prompter_card: str | Path | None = None,
    calib: str | Path | None = None,
    budget: float = 0.01,
    limit: int = 64,
    threads: int = 2,
    recipes: dict[str, tuple[Recipe, ...]] | None = None,
    segmenter_weights: str | Path | None = None,
    runtimes: tuple[str, ...] = ("int8", "openvino"),
    student: str | Path | None = None,
) -> dict[str, Any]:
    """Quantize the models of a shipped ``task`` or a trained head ``prompter_card``; returns
    the report (also written to OUT/quantization.json). ``budget``: the largest Dice drop
    against the float32 PyTorch pipeline a chosen recipe may cost (same-box and automatic).
    ``recipes``: the candidates per model (default ``RECIPES``). ``segmenter_weights``: the
    card of a fine-tuning delta (``automedseg train segmenter``) loaded into LiteMedSAM before
    export, so the encoder and decoder include it and the reference pipeline uses it; its
    SHA-256 goes into the exported models' cards and the report (default: the task's own
    delta, if it ships one). ``runtimes``: the sets to make, ``int8`` (ONNX Runtime) and/or
    ``openvino``; the float32 ONNX export is made either way. ``student``: the card of a
    distilled encoder (``automedseg train encoder``), one more encoder candidate of the
    OpenVINO set."""
    unknown = set(runtimes) - {"int8", "openvino"}
    if unknown or not runtimes:
        raise AutomedsegError(f"quantize makes int8 and/or openvino sets, not {sorted(unknown)}")
    torch.set_num_threads(threads)
    task_ = resolve_task(task, prompter_card)
    if task_ is None:
        raise AutomedsegError("give exactly one of --task NAME or --prompter CARD.json")
    card_path = task_.prompter
    card = read_card(card_path)
    kind = card.get("kind")
    if kind not in ("head", "backbone"):
        raise WeightsError(
            f"only head and backbone prompters can be quantized, this is {kind!r}", card_path
        )
    recipes = dict(recipes or RECIPES)
    if kind == "backbone":  # a separate network on the image: INT8 convolutions are not tried
        recipes["prompter"] = (FLOAT32,)
    planes = _planes(calib, card, limit)  # before the models load: a poor folder fails fast
    if student is not None and "openvino" not in runtimes:
        raise AutomedsegError("--student is an encoder of the OpenVINO set: add openvino to "
                              "--runtimes")  # fmt: skip
    models = load_models(task_, runtime="torch", segmenter_weights=segmenter_weights)
    out = Path(out)
    _say(f"{len(planes.calibration)} calibration + {len(planes.held_out)} held-out planes "
         f"from {planes.source}")  # fmt: skip

    delta = None if models.delta is None else read_card(models.delta)
    delta_sha256 = None if delta is None else str(delta["sha256"])
    segmenter = "LiteMedSAM" if delta is None else f"LiteMedSAM + its {delta.get('method')} delta"
    prompter, predictor = models.prompter, models.segmenter
    model = predictor.model
    checks = []
    for plane in planes.calibration[:2]:
        predictor.set_image(plane)
        checks.append(predictor.embedding)
    _say("exporting float32 ONNX (checked against PyTorch)")
    images = [(torch.from_numpy(preprocess(p)[0]),) for p in planes.calibration[:2]]
    students = {}  # first: a student of another LiteMedSAM fails before the long part
    if student is not None:
        students["encoder"] = _student_ir(student, delta_sha256, out, images)
    export.export_image_encoder(
        model, out / "onnx" / FILES["encoder"], images, delta_sha256=delta_sha256
    )
    export.export_mask_decoder(model, out / "onnx" / FILES["decoder"], delta_sha256=delta_sha256)
    if kind == "head":
        export.export_head_prompter(
            prompter, out / "onnx" / FILES["prompter"], card["sha256"], [(e,) for e in checks],
            task=card.get("task"),
        )  # fmt: skip
    else:
        export.export_backbone_prompter(
            prompter, out / "onnx" / FILES["prompter"], card["sha256"], task=card.get("task")
        )

    _say("running the float32 PyTorch pipeline on the held-out planes (the reference)")
    reference = reference_outputs(Runtime(predictor, prompter), planes.held_out)
    float32 = {m: out / "onnx" / f"{f}.json" for m, f in FILES.items()}
    truth = planes.held_out_truth
    onnx_fidelity = measure(_runtime(float32, threads), planes.held_out, reference, truth)
    _say(f"float32 ONNX Runtime: {_line(onnx_fidelity)}")

    feeds = _calibration_feeds(float32, planes.calibration, threads)
    int8_part, tried = {}, []
    if "int8" in runtimes:
        int8_part, tried = _int8_set(out, float32, feeds, planes, reference, budget, threads,
                                     recipes, onnx_fidelity)  # fmt: skip
    report = {
        "task": card.get("task"),
        "prompter_weights_sha256": card["sha256"],
        "automedseg_version": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": threads,
        "budget": budget,
        "planes": {
            "calibration": len(planes.calibration),
            "held_out": len(planes.held_out),
            "source": planes.source,
        },  # fmt: skip
        "reference": f"float32 PyTorch pipeline ({segmenter} + the task's {kind} prompter)",
        "segmenter_delta": delta
        and {
            "card": Path(delta["_path"]).name,
            "sha256": delta_sha256,
            "method": delta.get("method"),
        },
        "onnx_float32": {**onnx_fidelity.as_dict(), "mb": _set_mb(float32)},
        "candidates": [
            {
                "model": c.model,
                "recipe": c.recipe.name,
                "op_types": list(c.recipe.op_types),
                "static": c.recipe.static,
                "mb": c.mb,
                **(c.fidelity.as_dict() if c.fidelity else {}),
            }
            for c in tried
        ],  # fmt: skip
        **({"int8": int8_part} if int8_part else {}),
    }
    if "openvino" in runtimes:
        report["openvino"], ov_tried = _openvino_set(out, float32, feeds, planes, reference,
                                                     budget, threads, students)  # fmt: skip
        report["candidates"] += ov_tried
    io.write_json(out / REPORT, report)
    _say(f"report {out / REPORT}")
    return report


def _int8_set(
    out: Path, float32: dict[str, Path], feeds: dict, planes: Planes, reference: list,
    budget: float, threads: int, recipes: dict, onnx_fidelity: Fidelity,
) -> tuple[dict[str, Any], list[Candidate]]:  # fmt: skip
    """OUT/int8/: each model's ONNX Runtime INT8 recipes measured in turn, the best within the
    budget kept. Returns the report's ``int8`` part and the candidates tried."""
    truth = planes.held_out_truth
    chosen = dict(float32)
    current = onnx_fidelity  # of the set ``chosen``: a candidate that changes nothing reuses it
    tried: list[Candidate] = []
    for model_name in ("encoder", "decoder", "prompter"):
        options = []
        for recipe in recipes[model_name]:
            if recipe is FLOAT32:
                candidate = Candidate(model_name, recipe, float32[model_name])
            else:
                stem = out / "candidates" / f"{FILES[model_name]}-{recipe.name}"
                quantize_model(float32[model_name], stem, recipe, feeds[model_name])
                candidate = Candidate(model_name, recipe, stem.with_suffix(".json"))
            trial = {**chosen, model_name: candidate.card}
            if trial == chosen:
                candidate.fidelity = current
            else:
                candidate.fidelity = measure(
                    _runtime(trial, threads), planes.held_out, reference, truth
                )
            candidate.mb = _onnx_mb(candidate.card)
            _say(f"{model_name} {recipe.name}: {_line(candidate.fidelity)}, {candidate.mb} MB")
            options.append(candidate)
            tried.append(candidate)
        best = _choose(options, budget)
        chosen[model_name], current = best.card, best.fidelity
        _say(f"{model_name}: keeping {best.recipe.name}")

    final_dir = out / "int8"
    for model_name, card_file in chosen.items():
        _copy_model(card_file, final_dir / FILES[model_name])
    final_cards = {m: final_dir / f"{f}.json" for m, f in FILES.items()}
    _runtime(final_cards, threads)  # the copies load and pass their checks
    final = current  # the measurement of exactly these models
    return {
        "recipes": {m: _recipe_name(chosen[m]) for m in FILES},
        **final.as_dict(),
        "mb": _set_mb(final_cards),
        "within_budget": final.drop() <= budget,
    }, tried


def _openvino_set(
    out: Path, float32: dict[str, Path], feeds: dict, planes: Planes, reference: list,
    budget: float, threads: int, students: dict[str, Path] | None = None,
) -> tuple[dict[str, Any], list[dict]]:  # fmt: skip
    """OUT/openvino/: the float32 exports converted to OpenVINO IR (weights that stay in
    floating point stored as float16: half the disk), run in bfloat16 where the CPU has it
    (a backbone prompter in float32: its boxes are thresholds of its maps).
    The encoder is also tried with INT8 weights, in float32 (with and without INT8 weights)
    and with NNCF INT8 MatMuls; then a backbone prompter with NNCF INT8 throughout; then the
    decoder with the same variants; each time the fastest within the budget (the smallest of
    those as fast) is kept, and the encoder and prompter are chosen again if the decoder
    changed. A distilled encoder in ``students`` (its float32 ONNX card) is one more encoder
    candidate. Returns the report's ``openvino`` part and the candidates tried."""
    from automedseg.deploy import openvino

    precision = inference_precision("auto")
    _say(f"OpenVINO: converting the float32 exports (inference precision {precision})")
    stems = {m: out / "candidates" / f"{FILES[m]}-openvino" for m in FILES}
    chosen = {m: openvino.convert(float32[m], stems[m], half_weights=True) for m in FILES}
    recipes: dict[Path, Recipe] = {}
    backbone = read_card(chosen["prompter"])["model"] == BACKBONE
    if backbone and precision == "bf16":
        # a map prompter's boxes are thresholds of its maps, and its thresholds were chosen on
        # float32 maps: in bfloat16 a component near the threshold grows or merges and its box
        # moves (a polyp's box in records/validation_polyp_lite0-openvino-student), which a
        # few held-out planes rarely show. It stays in float32; INT8 is tried against it.
        chosen["prompter"] = openvino.in_float32(
            chosen["prompter"], stems["prompter"].with_name(stems["prompter"].name + "-f32"))
        recipes[chosen["prompter"]] = IN_FLOAT32
    truth = planes.held_out_truth
    current = measure(_openvino_runtime(chosen, threads), planes.held_out, reference, truth)
    _say(f"openvino {precision}: {_line(current)}")
    tried: list[Candidate] = []

    def keep_best(model: str, others: list[tuple[Path, Recipe]]) -> None:
        """Measure the set with ``model`` swapped for each of ``others``; keep the best."""
        nonlocal current
        first = recipes.get(chosen[model], AS_CONVERTED)
        options = [Candidate(model, first, chosen[model], current, _model_mb(chosen[model]))]
        recipes.update(others)
        for card, recipe in others:
            if card == chosen[model]:
                continue
            trial = {**chosen, model: card}
            fidelity = measure(_openvino_runtime(trial, threads), planes.held_out, reference,
                               truth)  # fmt: skip
            _say(f"openvino {model} {recipe.name}: {_line(fidelity)}")
            options.append(Candidate(model, recipe, card, fidelity, _model_mb(card)))
        best = _choose(options, budget)
        chosen[model], current = best.card, best.fidelity
        _say(f"openvino {model}: keeping {best.recipe.name}")
        tried.extend(options)

    stem = out / "candidates"
    converted = dict(chosen)
    encoders = _float_variants(chosen["encoder"], stem / "image_encoder-openvino", precision)
    encoders.append((openvino.quantize_matmuls(
        chosen["encoder"], stem / "image_encoder-openvino-int8-matmul", feeds["encoder"][:16],
    ), MATMULS))  # fmt: skip
    if students and "encoder" in students:
        encoders.append((students["encoder"], STUDENT))
    keep_best("encoder", encoders)
    prompters = []
    if backbone:  # a CNN on the image: INT8 throughout
        prompters = [(openvino.quantize_all(
            chosen["prompter"], stem / "prompter-openvino-int8",
            _backbone_feeds(chosen["prompter"], planes.calibration[:16]),
        ), Recipe("openvino-int8", True, ("Conv", "MatMul")))]  # fmt: skip
        keep_best("prompter", prompters)
    decoders = _float_variants(chosen["decoder"], stem / "mask_decoder-openvino", precision)
    decoders.append((openvino.quantize_matmuls(
        chosen["decoder"], stem / "mask_decoder-openvino-int8-matmul",
        _decoder_feeds(float32, planes.calibration[:16], threads),
    ), MATMULS))  # fmt: skip
    keep_best("decoder", decoders)
    if chosen["decoder"] != converted["decoder"]:
        # the decoder's rounding changes what the others' costs: choose them again
        keep_best("encoder", [(converted["encoder"], AS_CONVERTED), *encoders])
        if prompters:
            keep_best("prompter", [(converted["prompter"], recipes.get(converted["prompter"],
                                                                       AS_CONVERTED)),
                                   *prompters])  # fmt: skip
    final_dir = out / "openvino"
    for model_name, card_file in chosen.items():
        _copy_ir(card_file, final_dir / FILES[model_name])
    final_cards = {m: final_dir / f"{f}.json" for m, f in FILES.items()}
    _openvino_runtime(final_cards, threads)  # the copies load and pass their checks
    part = {
        "precision": precision,
        "recipes": {m: read_card(c).get("recipe", "float32") for m, c in final_cards.items()},
        **current.as_dict(),
        "mb": round(sum(_model_mb(c) for c in final_cards.values()), 2),
        "within_budget": current.drop() <= budget,
    }
    rows = [{"model": c.model, "recipe": c.recipe.name, "op_types": list(c.recipe.op_types),
             "static": c.recipe.static, "mb": c.mb, **c.fidelity.as_dict()}
            for c in tried]  # fmt: skip
    _say(f"openvino set: {_line(current)}; {part['mb']} MB; within budget: "
         f"{part['within_budget']}")  # fmt: skip
    return part, rows


def _student_ir(card_path: str | Path, delta_sha256: str | None, out: Path,
                images: list) -> Path:  # fmt: skip
    """The distilled encoder of ``card_path`` as OpenVINO IR (OUT/candidates/
    image_encoder-student), refused when it learnt from another LiteMedSAM than the task runs
    (its delta). A trained student's card (``automedseg train encoder``) is exported to
    float32 ONNX (OUT/onnx/image_encoder-student) and converted; the IR card of one a model set
    already holds (its ``image_encoder.json``) is copied as it is, its files checked."""
    from automedseg.deploy import openvino

    stem = out / "candidates" / "image_encoder-student"
    card = read_card(card_path)
    if card.get("kind") == OPENVINO_KIND:
        source = card.get("source") if isinstance(card.get("source"), dict) else {}
        if card.get("model") != ENCODER or "distilled" not in str(source.get("model")):
            raise WeightsError("not a distilled image encoder (the card of a model set's "
                               "image_encoder.json made from a student)", card_path)  # fmt: skip
        _check_teacher(source.get("teacher"), delta_sha256, card_path)
        load_openvino_model(card_path, ENCODER)  # its files match the card
        _copy_ir(Path(card["_path"]), stem)
        return stem.with_suffix(".json")
    from automedseg.train.encoder import load_student

    student, card = load_student(card_path)
    _check_teacher(card.get("teacher"), delta_sha256, card_path)
    _say("exporting the distilled encoder to float32 ONNX")
    exported = export.export_student_encoder(
        student, out / "onnx" / "image_encoder-student", card, images
    )
    return openvino.convert(exported.card_path, stem, half_weights=True)


def _check_teacher(teacher: Any, delta_sha256: str | None, card_path: str | Path) -> None:
    learnt_from = teacher.get("delta_sha256") if isinstance(teacher, dict) else None
    if learnt_from != delta_sha256:
        raise WeightsError(f"the distilled encoder learnt from LiteMedSAM with delta "
                           f"{learnt_from}; the task runs with {delta_sha256}",
                           card_path)  # fmt: skip


def _float_variants(card: Path, stem: Path, precision: str) -> list[tuple[Path, Recipe]]:
    """The model with INT8 weights and, where the CPU computes in bfloat16, the model computed
    in float32 with and without INT8 weights (thin structures can fall outside the budget in
    bfloat16)."""
    from automedseg.deploy import openvino

    variants = [(openvino.int8_weights(card, stem.with_name(stem.name + "-int8-weights")),
                 Recipe("openvino-int8-weights", False, ("MatMul", "Conv")))]  # fmt: skip
    if precision == "bf16":
        f32 = openvino.in_float32(card, stem.with_name(stem.name + "-f32"))
        variants += [(f32, IN_FLOAT32),
                     (openvino.int8_weights(f32, stem.with_name(stem.name + "-f32-int8-weights")),
                      Recipe("openvino-f32-int8-weights", False, ("MatMul", "Conv")))]  # fmt: skip
    return variants


@dataclass
class _Recorded:
    """A model that keeps the inputs of every ``run`` (the decoder's calibration inputs)."""

    model: Any
    feeds: list[dict[str, np.ndarray]]

    def run(self, **feed: np.ndarray) -> list[np.ndarray]:
        self.feeds.append({k: np.array(v) for k, v in feed.items()})
        return self.model.run(**feed)


def _decoder_feeds(float32: dict[str, Path], planes: list[np.ndarray],
                   threads: int) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """The mask decoder's inputs (embedding, boxes) when the float32 exports segment
    ``planes`` with their own prompter's boxes; a plane where it finds nothing is prompted
    with the box of its central half."""
    runtime = _runtime(float32, threads)
    recorded = _Recorded(runtime.segmenter.decoder, [])
    segmenter = OnnxLiteMedSAMPredictor(runtime.segmenter.encoder, recorded)
    for plane in planes:
        if not len(segment_plane(plane, runtime.prompter, segmenter).boxes):
            h, w = plane.shape[:2]
            segmenter.set_image(plane)
            segmenter.predict(np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], np.float32))
    return recorded.feeds


def _backbone_feeds(card_file: Path, planes: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The exported backbone prompter's inputs (each member's views) for each plane."""
    card = read_card(card_file)
    names = [i["name"] for i in card["inputs"]]
    sizes = [int(m["size"]) for m in card.get("members") or [{"size": card["size"]}]]
    flip = bool(card.get("flip", False))
    return [{name: views(plane, size, flip)[0] for name, size in zip(names, sizes, strict=True)}
            for plane in planes]  # fmt: skip


def _openvino_runtime(cards: dict[str, Path], threads: int) -> Runtime:
    encoder = load_openvino_model(cards["encoder"], ENCODER, threads)
    decoder = load_openvino_model(cards["decoder"], DECODER, threads)
    prompter = load_openvino_model(cards["prompter"], read_card(cards["prompter"])["model"],
                                   threads)  # fmt: skip
    return Runtime(OnnxLiteMedSAMPredictor(encoder, decoder), prompter_of(prompter))


def _copy_ir(card_file: Path, stem: Path) -> None:
    card = read_card(card_file)
    stem.parent.mkdir(parents=True, exist_ok=True)
    for key, suffix in (("weights_file", ".xml"), ("bin_file", ".bin")):
        io.write_bytes(stem.with_suffix(suffix), (card_file.parent / card[key]).read_bytes())
        card[key] = stem.with_suffix(suffix).name
    card.pop("_path", None)
    io.write_json(stem.with_suffix(".json"), card)


def _model_mb(card_file: Path) -> float:
    card = read_card(card_file)
    files = [card["weights_file"], *([card["bin_file"]] if "bin_file" in card else [])]
    return round(sum((card_file.parent / f).stat().st_size for f in files) / 1e6, 2)


def _planes(calib: str | Path | None, card: dict, limit: int) -> Planes:
    training = card.get("training")
    if isinstance(training, str):  # early cards stored the dict's repr
        training = None
    if calib is None:
        data = (training or {}).get("data")
        if not data or not Path(data).is_dir():
            raise AutomedsegError(
                "no --calib folder given and the prompter's training data "
                f"({data or 'not recorded'}) is not here: pass --calib DIR with at least 12 "
                "images like those you will segment"
            )
        calib = data
    split = None
    # The training data set itself (cards record its path, shipped cards only its name):
    # calibrate on its training split, never on the validation cases.
    if training and Path(calib).resolve().name == Path(training.get("data", "")).name:
        cases = training.get("case_limit")
        split = (float(training["val_fraction"]), int(training["seed"]), cases)
    training = training or {}
    choice = LabelChoice.of_record(training)
    return calibration_planes(calib, limit, split, int(training.get("channel", 0)), choice)


def _runtime(cards: dict[str, Path], threads: int) -> Runtime:
    predictor = load_onnx_predictor(cards["encoder"], cards["decoder"], threads)
    return Runtime(predictor, load_onnx_prompter(cards["prompter"], threads))


def _calibration_feeds(
    float32: dict[str, Path], planes: list[np.ndarray], threads: int
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Inputs of each model on the calibration planes (the decoder's recipes are dynamic)."""
    encoder = load_onnx_model(float32["encoder"], ENCODER, threads)
    images = [preprocess(p)[0] for p in planes]
    embeddings = [encoder.run(image=x)[0] for x in images]
    return {
        "encoder": [{"image": x} for x in images],
        "decoder": [],
        "prompter": [{"embedding": e} for e in embeddings],
    }


def _choose(options: list[Candidate], budget: float) -> Candidate:
    """Within the budget: the smallest on disk among those at most 10 % slower than the
    fastest (the speed measured on a few planes is noisy; size is exact). If none is within
    the budget: the most faithful."""
    fine = [c for c in options if c.fidelity is not None and c.fidelity.drop() <= budget]
    if not fine:
        return min(options, key=lambda c: c.fidelity.drop() if c.fidelity else 1.0)
    fastest = min(c.fidelity.total_ms for c in fine if c.fidelity)
    quick = [c for c in fine if c.fidelity and c.fidelity.total_ms <= 1.1 * fastest]
    return min(quick, key=lambda c: c.mb)


def _copy_model(card_file: Path, stem: Path) -> None:
    card = read_card(card_file)
    stem.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = stem.with_suffix(".onnx")
    io.write_bytes(onnx_path, (card_file.parent / card["weights_file"]).read_bytes())
    card.pop("_path", None)
    card["weights_file"] = onnx_path.name
    io.write_json(stem.with_suffix(".json"), card)


def _recipe_name(card_file: Path) -> str:
    return read_card(card_file).get("quantization", {}).get("recipe", {}).get("name", "float32")


def _onnx_mb(card_file: Path) -> float:
    card = read_card(card_file)
    return round((card_file.parent / card["weights_file"]).stat().st_size / 1e6, 2)


def _set_mb(cards: dict[str, Path]) -> float:
    return round(sum(_onnx_mb(c) for c in cards.values()), 2)


def _line(f: Fidelity) -> str:
    return (
        f"same-box Dice {f.same_box_dice:.4f}, automatic Dice {f.auto_dice:.4f}, "
        f"embedding cosine >= {f.embedding_cosine:.4f}, encoder {f.encoder_ms:.0f} ms, "
        f"pipeline {f.total_ms:.0f} ms"
        + ("" if f.truth_drop is None else f", Dice drop against the masks {f.truth_drop:+.4f} "
           f"(automatic) / {f.same_box_truth_drop:+.4f} (same boxes)")
    )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
