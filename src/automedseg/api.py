"""File-level entry points: read inputs, segment, write outputs. The CLI calls these."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automedseg import io
from automedseg.errors import AutomedsegError, AutomedsegWarning, InputError, PromptError
from automedseg.io.overlay import blend_labels, to_display_rgb
from automedseg.measure import measure_objects
from automedseg.types import Boxes, Image, Result

MODALITIES = ("CT", "MR", "XR", "US", "RGB", "OT")


@dataclass
class CaseOutcome:
    """What happened to one input: the files written, or the error that stopped it."""

    source: Path
    outputs: list[Path]
    error: AutomedsegError | None = None
    empty: bool = False
    """True when nothing was found: the mask written is empty."""


def output_stem(path: Path) -> str:
    """'scan.nii.gz' → 'scan'; a DICOM folder → its name."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.is_file() else name


def segment_files(
    inputs: Sequence[str | Path],
    out: str | Path,
    boxes: Sequence[tuple[float, float, float, float]] | None = None,
    task: str | None = None,
    prompter: str | Path | None = None,
    slice_index: int | None = None,
    modality: str | None = None,
    window: tuple[float, float] | None = None,
    weights: str | Path | None = None,
    propagate: bool = True,
    progress: bool = True,
    on_error: Callable[[AutomedsegError], None] | None = None,
    segmenter: str = "litemedsam",
    checkpoint: str | Path | None = None,
    image_size: int = 512,
    runtime: str | None = None,
    models: str | Path | None = None,
    segmenter_weights: str | Path | None = None,
) -> list[CaseOutcome]:
    """Segment each input and write mask, overlay and JSON into ``out``.

    Prompts come from ``boxes`` (XYXY inclusive pixels, on slice ``slice_index`` of a volume,
    default the middle one), or automatically from a shipped ``task``'s prompter or a trained
    ``prompter`` card (a volume's objects are propagated slice to slice, or with
    ``propagate=False`` every slice is prompted on its own). A bad input is reported
    (``on_error``) and skipped; nothing half-written is left for it.

    ``segmenter="medsam2"`` segments with SAM2.1-tiny (the ``sam2`` package) loaded from
    ``checkpoint`` (e.g. MedSAM2's) at ``image_size`` 512 or 1024: the prompts seed each object
    on one slice or frame and SAM2's memory propagates it (a 2D image is a one-frame video);
    LiteMedSAM (``weights``) then only serves a prompter that reads its embedding.

    ``runtime`` "onnx" or "int8" runs LiteMedSAM and a head prompter on ONNX Runtime, without
    torch, from the model set ``models`` (written by ``automedseg quantize``) or the one the
    ``task`` ships; by default the fastest runtime whose recorded fidelity is within budget
    (``deploy.model_set.choose_runtime``). ``segmenter_weights`` is the card of a fine-tuned
    LiteMedSAM part (``automedseg train segmenter``), used on the torch runtime.
    """
    if modality is not None and modality not in MODALITIES:
        raise AutomedsegError(f"unknown modality {modality!r}; choose one of {MODALITIES}")
    from automedseg.deploy.model_set import choose_runtime, load_model_set, task_model_set
    from automedseg.pipeline import FixedBoxes

    if boxes and (task or prompter):
        raise PromptError("give either --box or --task/--prompter, not both")
    if not boxes and not (task or prompter):
        raise PromptError(
            "no prompts: pass --task NAME (automatic; see `automedseg tasks`), "
            "--prompter CARD.json, or --box X0 Y0 X1 Y1 for each object"
        )
    model_set = Path(models) if models is not None else task_model_set(task)
    custom = segmenter != "litemedsam" or weights is not None or segmenter_weights is not None
    if custom:
        runtime = runtime or "torch"
    runtime = choose_runtime(runtime, model_set)
    if runtime != "torch":
        if custom:
            raise AutomedsegError(
                f"--runtime {runtime} runs the exported LiteMedSAM: it does not take "
                "--segmenter medsam2, --weights or --segmenter-weights (use --runtime torch)"
            )
        sha = None if boxes else _prompter_sha256(task, prompter)
        onnx_set = load_model_set(model_set, runtime, sha)
        finder = onnx_set.prompter if not boxes else FixedBoxes(Boxes.from_list(list(boxes)))
        return _segment_each(
            inputs, out, finder, onnx_set.predictor, None, slice_index, boxes, modality,
            window, propagate, progress, on_error, f"LiteMedSAM ({runtime}, ONNX Runtime)",
        )  # fmt: skip
    from automedseg.prompt import check_embedding, load_prompter, task_card, task_segmenter_weights
    from automedseg.segment.litemedsam import LiteMedSAMPredictor, load_litemedsam

    if boxes:
        finder = FixedBoxes(Boxes.from_list(list(boxes)))
    else:
        finder = load_prompter(task=task, card=prompter)
    sam2_model = None
    if segmenter == "medsam2":
        from automedseg.segment.medsam2 import build_sam2, import_sam2

        import_sam2()  # a missing package first: one line saying how to install it
        if checkpoint is None:
            raise AutomedsegError(
                "--segmenter medsam2 needs --checkpoint PATH (a MedSAM2 or SAM2.1-tiny "
                "checkpoint; none is shipped)"
            )
        if not propagate:
            raise AutomedsegError("--no-propagation applies to --segmenter litemedsam only")
        sam2_model = build_sam2(image_size, Path(checkpoint))
    elif segmenter != "litemedsam":
        raise AutomedsegError(f"unknown segmenter {segmenter!r}; choose litemedsam or medsam2")
    predictor, name = None, None
    if sam2_model is None or getattr(finder, "uses_embedding", False):
        delta = task_segmenter_weights(task, segmenter_weights)
        model = load_litemedsam(None if weights is None else Path(weights), delta=delta)
        predictor = LiteMedSAMPredictor(model)
        if not boxes:
            check_embedding(task_card(task) if task else Path(prompter), delta)
        name = None if delta is None or sam2_model is not None else f"LiteMedSAM + delta {delta}"
    return _segment_each(
        inputs, out, finder, predictor, sam2_model, slice_index, boxes, modality, window,
        propagate, progress, on_error, name,
    )  # fmt: skip


def _prompter_sha256(task: str | None, prompter: str | Path | None) -> str:
    from automedseg.checkpoints import read_card
    from automedseg.prompt import task_card

    return str(read_card(task_card(task) if task else Path(prompter or "")).get("sha256"))


def _segment_each(
    inputs: Sequence[str | Path],
    out: str | Path,
    finder,
    predictor,
    sam2_model,
    slice_index: int | None,
    boxes,
    modality: str | None,
    window: tuple[float, float] | None,
    propagate: bool,
    progress: bool,
    on_error: Callable[[AutomedsegError], None] | None,
    segmenter_name: str | None = None,
) -> list[CaseOutcome]:
    from automedseg.pipeline import segment_image

    out = Path(out)
    outcomes = []
    for path in _progress([Path(p) for p in inputs], enabled=progress):
        outcome = CaseOutcome(path, [])
        try:
            image = io.read_image(path)
            if modality is not None:
                image.modality = modality
            if window is not None:
                image.window = window
            z = slice_index
            if z is None and boxes and image.spatial_dims == 3:
                z = image.shape[0] // 2  # a user's boxes are drawn on one slice
            try:
                if sam2_model is not None:
                    from automedseg.segment.medsam2 import segment_image_sam2

                    result = segment_image_sam2(
                        image, finder, sam2_model, z, predictor, progress=progress
                    )
                else:
                    result = segment_image(image, finder, predictor, z, propagate)
                    if segmenter_name is not None:
                        result.segmenter = segmenter_name
            except AutomedsegError as error:
                if error.path is None:  # name the file the problem belongs to
                    raise type(error)(str(error), path) from None
                raise
            names = getattr(finder, "labels", None)
            write_result(image, result, out, output_stem(path), outcome.outputs, names)
            outcome.empty = not result.label_map.any()
        except AutomedsegError as error:
            for written in outcome.outputs:
                written.unlink(missing_ok=True)
            for folder in {w.parent for w in outcome.outputs} - {out}:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            outcome.outputs.clear()
            outcome.error = error
            if on_error is not None:
                on_error(error)
        outcomes.append(outcome)
    return outcomes


def write_result(
    image: Image,
    result: Result,
    out: Path,
    stem: str,
    written: list[Path],
    label_names: dict[int, str] | None = None,
) -> None:
    """Write the label map (PNG, NIfTI, or one PNG per frame of a video), an overlay (PNG, or
    MP4 for a video) and a JSON summary; record each file written. For DICOM input with
    something found, also a DICOM-SEG ``<stem>_seg.dcm`` (segments named by ``label_names``;
    skipped with a warning when the source cannot carry one, e.g. no Frame of Reference)."""
    stem = re.sub(r"[^\w.-]", "_", stem)
    if image.frame_names is not None:
        written += io.write_frame_masks(out / f"{stem}_masks", result.label_map, image.frame_names)
        frames = [
            blend_labels(to_display_rgb(frame, image.window), labels)
            for frame, labels in zip(image.array, result.label_map, strict=True)
        ]
        written.append(io.write_overlay_video(out / f"{stem}_overlay.mp4", np.stack(frames)))
        written.append(out / f"{stem}.json")
        io.write_json(written[-1], describe(image, result))
        return
    if image.spatial_dims == 2:
        written.append(out / f"{stem}_mask.png")
        io.write_label_png(written[-1], result.label_map)
    else:
        written.append(out / f"{stem}_seg.nii.gz")
        io.write_nifti(written[-1], result.label_map, image.geometry)
    if image.source_files and result.label_map.any():  # an empty DICOM-SEG is not allowed
        seg = out / f"{stem}_seg.dcm"
        try:
            io.write_dicom_seg(seg, result.label_map, image.source_files, label_names)
            written.append(seg)
        except InputError as error:  # e.g. no Frame of Reference: keep the other outputs
            warnings.warn(f"{error}; no DICOM-SEG written", AutomedsegWarning, stacklevel=2)
    written.append(out / f"{stem}_overlay.png")
    io.write_overlay_png(written[-1], image, result.label_map, z=result.slice_index)
    written.append(out / f"{stem}.json")
    io.write_json(written[-1], describe(image, result))


def describe(image: Image, result: Result) -> dict:
    """The JSON summary: input, geometry, the boxes found, and the size of each label."""
    dims = image.spatial_dims
    spacing = image.geometry.spacing(dims)
    voxel_mm3 = float(np.prod(spacing))
    boxes = result.boxes
    slices = result.box_slices if result.box_slices is not None else [None] * len(boxes)
    sizes = {}
    if result.instance_map is not None:
        sizes = measure_objects(result.instance_map, spacing)
    objects = [
        {
            "box_xyxy": [round(float(v), 2) for v in xyxy],
            "label": int(label),
            "score": round(float(score), 4),
            "slice_index": None if z is None else int(z),
            **sizes.get(number, {}),
        }
        for number, (xyxy, label, score, z) in enumerate(
            zip(boxes.xyxy, boxes.labels, boxes.scores, slices, strict=True), start=1
        )
    ]
    labels = {}
    for value in np.unique(result.label_map):
        if value == 0:
            continue
        count = int((result.label_map == value).sum())
        size = {"voxels": count}
        if dims == 2:
            size["area_mm2"] = round(count * voxel_mm3, 3)
        else:
            size["volume_ml"] = round(count * voxel_mm3 / 1000.0, 4)
        labels[str(int(value))] = size
    return {
        "source": None if image.source is None else str(image.source),
        "modality": image.modality,
        "shape": list(image.shape),
        "spacing_mm": [round(s, 6) for s in spacing],
        "spacing_order": "zyx" if dims == 3 else "yx",
        "box_convention": "XYXY, inclusive pixel indices of the original image (or slice)",
        "segmenter": result.segmenter,
        "objects": objects,
        "labels": labels,
    }


def _progress(items: list[Path], enabled: bool):
    if not enabled or len(items) < 2:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="segment", unit="image", file=sys.stderr)
