"""File-level entry points: read inputs, segment, write outputs. The CLI calls these."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from automedseg import io
from automedseg.errors import AutomedsegError, AutomedsegWarning, InputError, PromptError
from automedseg.io.overlay import blend_labels, to_display_rgb
from automedseg.io.rtstruct import write_rtstruct
from automedseg.measure import measure_objects
from automedseg.pipeline import segment_image
from automedseg.pipeline.qc import assess
from automedseg.prompt.oracle import FixedBoxes
from automedseg.tasks import Models, load_models
from automedseg.types import Boxes, Geometry, Image, Result

MODALITIES = ("CT", "MR", "XR", "US", "RGB", "OT")
FORMATS = ("nifti", "png", "dicom-seg", "rtstruct", "coco")
"""Output formats: ``nifti`` a volume's label map; ``png`` a 2D label map (a video's per
frame) and the overlay picture (MP4 for a video); ``dicom-seg`` and ``rtstruct`` for DICOM
input; ``coco`` the 2D predictions of a cohort in one file (``batch``). The JSON summary is
always written."""
DEFAULT_FORMATS = ("nifti", "png", "dicom-seg")


@dataclass
class CaseOutcome:
    """What happened to one input: the files written, or the error that stopped it."""

    source: Path
    outputs: list[Path]
    error: AutomedsegError | None = None
    empty: bool = False
    """True when nothing was found: the mask written is empty."""
    flags: list[str] = field(default_factory=list)
    """Quality-control flags of the result (``pipeline.qc``)."""


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
    model_set: str | Path | None = None,
    segmenter_weights: str | Path | None = None,
    models: Models | None = None,
    threads: int = 2,
    spacing: tuple[float, ...] | None = None,
) -> list[CaseOutcome]:
    """Segment each input and write mask, overlay and JSON into ``out``.

    Prompts come from ``boxes`` (XYXY inclusive pixels, on slice ``slice_index`` of a volume,
    default the middle one), or automatically from a shipped ``task``'s prompter or a trained
    ``prompter`` card (a volume's objects are propagated slice to slice, or with
    ``propagate=False`` every slice is prompted on its own). A bad input is reported
    (``on_error``) and skipped; nothing half-written is left for it.

    The models are assembled by ``tasks.load_models`` from ``task``/``prompter``, ``runtime``
    (default: the task's fastest within its fidelity budget), ``model_set``, ``weights``,
    ``segmenter_weights``, ``segmenter`` ("medsam2": SAM2.1-tiny from ``checkpoint`` at
    ``image_size``, its memory propagating the prompts), or passed in ready as ``models``.
    ``spacing`` (mm, array order: (y, x) for 2D, (z, y, x) for volumes) gives the pixel size of
    inputs whose files do not (sizes are then reported in mm).
    """
    if modality is not None and modality not in MODALITIES:
        raise AutomedsegError(f"unknown modality {modality!r}; choose one of {MODALITIES}")
    if boxes and (task or prompter):
        raise PromptError("give either --box or --task/--prompter, not both")
    if not boxes and not (task or prompter or (models and models.prompter)):
        raise PromptError(
            "no prompts: pass --task NAME (automatic; see `automedseg tasks`), "
            "--prompter CARD.json, or --box X0 Y0 X1 Y1 for each object"
        )
    if not propagate and segmenter != "litemedsam":
        raise AutomedsegError("--no-propagation applies to --segmenter litemedsam only")
    if models is None:
        models = load_models(
            task, card=prompter, runtime=runtime, prompter=not boxes, weights=weights,
            segmenter_weights=segmenter_weights, model_set=model_set, segmenter=segmenter,
            checkpoint=checkpoint, image_size=image_size, threads=threads,
        )  # fmt: skip
    finder = FixedBoxes(Boxes.from_list(list(boxes))) if boxes else models.prompter
    names = None if boxes else models.labels
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
            if spacing is not None:
                use_spacing(image, spacing)
            z = slice_index
            if z is None and boxes and image.spatial_dims == 3:
                z = image.shape[0] // 2  # a user's boxes are drawn on one slice
            try:
                result = _segment_one(image, finder, models, z, propagate, progress)
                check_quality(image, result, models, domain=not boxes)
            except AutomedsegError as error:
                if error.path is None:  # name the file the problem belongs to
                    raise type(error)(str(error), path) from None
                raise
            write_result(image, result, out, output_stem(path), outcome.outputs, names,
                         label_codes=None if boxes else models.label_codes,
                         description=models.description)  # fmt: skip
            outcome.empty = not result.label_map.any()
            outcome.flags = list((result.qc or {}).get("flags", []))
            if "out_of_domain" in outcome.flags:
                warnings.warn(
                    f"{path}: unlike the images the {models.task.name} task was trained on "
                    f"(domain distance {result.qc['domain_distance']}); its masks may mean "
                    "nothing here", AutomedsegWarning, stacklevel=2)  # fmt: skip
        except AutomedsegError as error:
            _remove(outcome.outputs, out)
            outcome.error = error
            if on_error is not None:
                on_error(error)
        outcomes.append(outcome)
    return outcomes


def check_quality(image: Image, result: Result, models: Models, domain: bool = True) -> None:
    """Set ``result.qc`` and ``result.stability`` (``pipeline.qc``); ``domain``: compare the
    input with the task's training images (not for a user's own boxes)."""
    if models.segmenter is None:  # SAM2 alone: no LiteMedSAM to measure with
        result.qc = assess(image, result, None, None).record()
        return
    encoded = image.spatial_dims == 2 and len(result.boxes) > 0  # segment_plane's last image
    found = assess(image, result, models.segmenter, models.domain if domain else None, encoded)
    result.qc, result.stability = found.record(), found.stability


def segment_loaded(
    image: Image, models: Models, on_progress: Callable[[str, int, int], None] | None = None
) -> Result:
    """An image already read, segmented with the automatic prompter of ``models`` (objects of
    a volume or video propagated); what ``batch`` and ``serve`` run for each case.
    ``on_progress(stage, planes done, planes)`` follows a volume's planes."""
    if models.prompter is None:
        raise PromptError("these models have no prompter: load a task or a prompter card")
    result = _segment_one(image, models.prompter, models, None, True, False, on_progress)
    check_quality(image, result, models)
    return result


def use_spacing(image: Image, spacing: tuple[float, ...]) -> None:
    """Give ``image`` the pixel size ``spacing`` (mm, array order), axis-aligned."""
    if len(spacing) != image.spatial_dims or min(spacing) <= 0:
        dims = image.spatial_dims
        raise InputError(f"--spacing needs {dims} positive sizes in mm for this {dims}D input, "
                         f"not {tuple(spacing)}", image.source)  # fmt: skip
    image.geometry = Geometry.from_spacing(tuple(float(s) for s in spacing))
    image.spacing_known = True


def _segment_one(
    image: Image, finder, models: Models, z: int | None, propagate: bool, progress: bool,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Result:  # fmt: skip
    """One image through the models; a volume's planes reported to ``on_progress``, or shown
    as progress bars with ``progress``."""
    if models.tracker is not None:
        from automedseg.pipeline.sam2 import segment_image_sam2  # torch

        return segment_image_sam2(
            image, finder, models.tracker, z, models.segmenter, progress=progress
        )
    with PlaneProgress(enabled=progress and image.spatial_dims == 3) as bar:
        report = on_progress or bar.update
        result = segment_image(image, finder, models.segmenter, z, propagate, report)
    result.segmenter = models.segmenter_name
    return result


class PlaneProgress:
    """A progress bar over a volume's planes, one per stage (prompting, segmenting)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar, self.stage = enabled, None, ""

    def __enter__(self) -> PlaneProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, desc=f"  {stage}", unit="plane", leave=False,
                            file=sys.stderr)  # fmt: skip
            self.stage = stage
        self.bar.n = min(done, total)
        self.bar.refresh()


def _remove(written: list[Path], out: Path) -> None:
    """Delete a failed case's files (and the folders made for them)."""
    for path in written:
        path.unlink(missing_ok=True)
    for folder in {w.parent for w in written} - {out}:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    written.clear()


def write_result(
    image: Image,
    result: Result,
    out: Path,
    stem: str,
    written: list[Path],
    label_names: dict[int, str] | None = None,
    formats: Collection[str] = DEFAULT_FORMATS,
    label_codes: dict[int, dict] | None = None,
    description: str = "automedseg segmentation",
) -> None:
    """Write the label map (PNG, NIfTI, or one PNG per frame of a video), an overlay (PNG, or
    MP4 for a video) and a JSON summary, as ``formats`` asks (see ``FORMATS``); record each
    file written. For DICOM input with something found, also a DICOM-SEG ``<stem>_seg.dcm``
    and/or an RTSTRUCT ``<stem>_rtstruct.dcm`` (named by ``label_names``; skipped with a
    warning when the source cannot carry one, e.g. no Frame of Reference), their segments
    coded by ``label_codes`` (``tasks.Models.label_codes``) and their series named
    ``description``."""
    stem = re.sub(r"[^\w.-]", "_", stem)
    if image.frame_names is not None:
        if "png" in formats:
            written += io.write_frame_masks(out / f"{stem}_masks", result.label_map,
                                            image.frame_names)  # fmt: skip
            frames = [
                blend_labels(to_display_rgb(frame, image.window), labels)
                for frame, labels in zip(image.array, result.label_map, strict=True)
            ]
            written.append(io.write_overlay_video(out / f"{stem}_overlay.mp4", np.stack(frames)))
        written.append(out / f"{stem}.json")
        io.write_json(written[-1], describe(image, result, label_names))
        return
    if image.spatial_dims == 2 and "png" in formats:
        written.append(out / f"{stem}_mask.png")
        io.write_label_png(written[-1], result.label_map)
    elif image.spatial_dims == 3 and "nifti" in formats:
        written.append(out / f"{stem}_seg.nii.gz")
        io.write_nifti(written[-1], result.label_map, image.geometry)
    if image.source_files and result.label_map.any():  # no empty DICOM-SEG or RTSTRUCT
        named = (label_names, label_codes, description)
        _write_dicom(image, result, out, stem, written, named, formats)
    if "png" in formats:
        written.append(out / f"{stem}_overlay.png")
        io.write_overlay_png(written[-1], image, result.label_map, z=result.slice_index)
    written.append(out / f"{stem}.json")
    io.write_json(written[-1], describe(image, result, label_names))


def _write_dicom(
    image: Image,
    result: Result,
    out: Path,
    stem: str,
    written: list[Path],
    named: tuple[dict[int, str] | None, dict[int, dict] | None, str],
    formats: Collection[str],
) -> None:
    """The DICOM-SEG and RTSTRUCT of a DICOM input, as ``formats`` asks; ``named``: the label
    names, the label codes and the series description."""
    label_names, label_codes, description = named
    writers = {"dicom-seg": ("seg", io.write_dicom_seg), "rtstruct": ("rtstruct", write_rtstruct)}
    for name, (suffix, writer) in writers.items():
        if name not in formats or (name == "rtstruct" and image.spatial_dims != 3):
            continue
        path = out / f"{stem}_{suffix}.dcm"
        try:
            writer(path, result.label_map, image.source_files, label_names, label_codes,
                   description)  # fmt: skip
            written.append(path)
        except InputError as error:  # e.g. no Frame of Reference: keep the other outputs
            what = "DICOM-SEG" if name == "dicom-seg" else "RTSTRUCT"
            warnings.warn(f"{error}; no {what} written", AutomedsegWarning, stacklevel=3)


def describe(image: Image, result: Result, label_names: dict[int, str] | None = None) -> dict:
    """The JSON summary: input, geometry, the boxes found, and the name and size of each
    label (``label_names``: value → name; unnamed labels are "label N")."""
    names = label_names or {}
    dims = image.spatial_dims
    spacing = image.geometry.spacing(dims)
    voxel_mm3 = float(np.prod(spacing))
    boxes = result.boxes
    slices = result.box_slices if result.box_slices is not None else [None] * len(boxes)
    sizes = {}
    if result.instance_map is not None:
        sizes = measure_objects(result.instance_map, spacing if image.spacing_known else None)
    steady = result.stability if result.stability is not None else [None] * len(boxes)
    objects = [
        {
            "box_xyxy": [round(float(v), 2) for v in xyxy],
            "label": int(label),
            "label_name": names.get(int(label), f"label {int(label)}"),
            "score": round(float(score), 4),
            "stability": None if stable is None else round(float(stable), 3),
            "slice_index": None if z is None else int(z),
            **sizes.get(number, {}),
        }
        for number, (xyxy, label, score, z, stable) in enumerate(
            zip(boxes.xyxy, boxes.labels, boxes.scores, slices, steady, strict=True), start=1
        )
    ]
    labels = {}
    for value in np.unique(result.label_map):
        if value == 0:
            continue
        count = int((result.label_map == value).sum())
        size = {"name": names.get(int(value), f"label {int(value)}"), "voxels": count}
        if dims == 2 and image.spacing_known:
            size["area_mm2"] = round(count * voxel_mm3, 3)
        elif image.spacing_known:
            size["volume_ml"] = round(count * voxel_mm3 / 1000.0, 4)
        labels[str(int(value))] = size
    return {
        "source": None if image.source is None else str(image.source),
        "modality": image.modality,
        "shape": list(image.shape),
        "spacing_mm": [round(s, 6) for s in spacing] if image.spacing_known else None,
        "size_unit": "mm" if image.spacing_known else "px (the file gives no pixel size)",
        "spacing_order": "zyx" if dims == 3 else "yx",
        "box_convention": "XYXY, inclusive pixel indices of the original image (or slice)",
        "segmenter": result.segmenter,
        "qc": result.qc or {"in_domain": None, "domain_distance": None, "flags": []},
        "objects": objects,
        "labels": labels,
    }


def _progress(items: list[Path], enabled: bool):
    if not enabled or len(items) < 2:
        return items
    return tqdm(items, desc="segment", unit="image", file=sys.stderr)
