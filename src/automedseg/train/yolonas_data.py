"""Training data for the YOLO-NAS prompter: samples, augmentation and batches.

* **Samples**: the planes of a data set (``data.planes.iter_planes``) with one box per
  connected component of each label of the masks (``prompt.oracle``), or the boxes of a box
  file (``train.box_annotations``) for a 2D ``images/`` folder. Cases are split with
  ``data.planes.split_cases``. Images are kept in memory as uint8, shrunk so the longest side
  is at most the input size.
* **Boxes** of a ``Sample`` are *continuous* XYXY: the inclusive pixel box ``x0 … x1`` (the
  project's convention, ``evaluate.metrics``) is the continuous box ``[x0, x1 + 1)``, which
  scales and flips exactly; ``as_continuous`` and ``as_inclusive`` convert.
* **Augmentation** for medical images: flips, scale and translation jitter, brightness,
  contrast and gamma (the same on every channel: no hue shifts). Without it (and for
  validation) an image gets the prompter's own letterbox (``unchanged``).
* **Batches**: ``collate`` stacks the inputs and writes the loss's normalised targets.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from automedseg import io
from automedseg.data.datasets import LabelChoice, class_names, find_cases, image_files, stem
from automedseg.data.planes import iter_planes, split_cases
from automedseg.errors import InputError
from automedseg.intensity import to_unit_range
from automedseg.prompt.oracle import oracle_boxes
from automedseg.prompt.yolonas import letterbox, resize_image, resized_shape
from automedseg.train.box_annotations import class_order, read_box_annotations

if TYPE_CHECKING:
    from automedseg.data.datasets import DataSet


@dataclass(frozen=True)
class Augmentation:
    """Random changes applied to each training image (all on by default)."""

    flips: str = "hv"
    """'h' horizontal, 'v' vertical, 'hv' both, '' none (use '' or 'v' when labels mean a
    side, e.g. left vs right lung)."""
    scale: tuple[float, float] = (0.75, 1.25)
    """Range of the size relative to the letterboxed size."""
    translate: float = 0.1
    """Largest shift beyond the letterbox position, as a fraction of the input size."""
    brightness: float = 0.1
    contrast: float = 0.2
    gamma: tuple[float, float] = (0.7, 1.4)
    probability: float = 0.5
    """Chance of each intensity change (brightness, contrast, gamma) and of each flip."""
    min_visible: float = 0.4
    """A box cut by the image border is dropped when less than this share of it remains."""


@dataclass
class Sample:
    """One training/validation plane, kept small in memory."""

    case_id: str
    index: int | None
    image: np.ndarray
    """(h, w) or (h, w, 3) uint8, longest side at most the input size (shrunk, never grown)."""
    boxes: np.ndarray
    """(n, 4) float32 continuous XYXY in pixels of ``image`` (inclusive box x0…x1 → [x0, x1+1))."""
    labels: np.ndarray
    """(n,) int64 label values."""


# --- box conventions ------------------------------------------------------------------------


def as_continuous(pixel_boxes: np.ndarray) -> np.ndarray:
    """Inclusive pixel corners ``x0 … x1`` → (n, 4) float32 continuous boxes ``[x0, x1 + 1)``."""
    return np.asarray(pixel_boxes, dtype=np.float32).reshape(-1, 4) + np.float32([0, 0, 1, 1])


def as_inclusive(boxes: np.ndarray) -> np.ndarray:
    """Continuous boxes ``[a, b)`` → (n, 4) float64 inclusive corners ``a … b - 1``, the same
    box for ``evaluate.metrics.box_iou``; a box under one pixel wide or high counts as one."""
    xyxy = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) - np.array([0.0, 0.0, 1.0, 1.0])
    xyxy[:, 2:] = np.maximum(xyxy[:, 2:], xyxy[:, :2])
    return xyxy


# --- samples --------------------------------------------------------------------------------


def _values(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def shrink_image(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An image in [0, 1] as uint8 with its longest side at most ``size`` (shrunk, never
    grown), and the (x, y, x, y) factors from its pixels to the stored ones."""
    h, w = image.shape[:2]
    scale = np.ones(4, dtype=np.float32)
    if max(h, w) > size:
        new_h, new_w = resized_shape((h, w), size)
        image = resize_image(image, (new_h, new_w)).permute(1, 2, 0).numpy()
        image = image[..., 0] if image.shape[2] == 1 else image
        scale = np.float32([new_w / w, new_h / h, new_w / w, new_h / h])
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), scale


def make_sample(
    case_id: str,
    index: int | None,
    image: np.ndarray,
    pixel_boxes: np.ndarray,
    labels: np.ndarray,
    size: int,
) -> Sample:
    """A ``Sample`` from an image in [0, 1] and its inclusive pixel boxes."""
    stored, scale = shrink_image(image, size)
    return Sample(case_id, index, stored, as_continuous(pixel_boxes) * scale, _values(labels))


def samples_from_masks(
    data: DataSet,
    case_ids: list[str],
    channel: int,
    size: int,
    empty_fraction: float,
    seed: int,
    label_choice: LabelChoice | None = None,
) -> list[Sample]:
    """Samples of the given cases with one box per connected component of each label chosen
    by ``label_choice`` (default: every label)."""
    samples = []
    for plane in iter_planes(data, case_ids, channel, empty_fraction, seed, label_choice):
        boxes = oracle_boxes(plane.labels)
        samples.append(
            make_sample(plane.case_id, plane.index, plane.image, boxes.xyxy, boxes.labels, size)
        )
    return samples


def samples_from_box_file(
    root: Path, boxes_file: Path, size: int, log: Callable[[str], None]
) -> tuple[list[Sample], dict[int, str]]:
    """Samples of the images in ``root/images`` that the box file annotates, and the labels
    (value i + 1 = the i-th class name in natural order)."""
    folder = root / "images"
    if not folder.is_dir():
        raise InputError("a box file needs a 2D data set with an images/ folder", root)
    images, sizes = {}, {}
    for path in image_files(folder):
        image = io.read_image(path)
        if image.spatial_dims != 2:
            raise InputError("a box file is for 2D images; this is a volume", path)
        images[stem(path)] = shrink_image(to_unit_range(image), size)
        sizes[stem(path)] = image.shape
    annotations = read_box_annotations(boxes_file, sizes)
    unannotated = sorted(set(images) - set(annotations))
    if unannotated:
        log(f"{len(unannotated)} image(s) not in the box file are left out, e.g. {unannotated[0]}")
    names = class_order(annotations)
    values = {name: i + 1 for i, name in enumerate(names)}
    samples = []
    for case_id in sorted(set(images) & set(annotations)):
        stored, scale = images[case_id]
        boxes = annotations[case_id]
        xyxy = as_continuous(np.array([b[:4] for b in boxes], dtype=np.float32)) * scale
        labels = _values(np.array([values[b[4]] for b in boxes]))
        samples.append(Sample(case_id, None, stored, xyxy, labels))
    return samples, {value: name for name, value in values.items()}


def load_samples(
    root: Path,
    *,
    boxes_file: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    channel: int = 0,
    size: int = 320,
    empty_fraction: float = 0.1,
    label_choice: LabelChoice | None = None,
    say: Callable[[str], None] = print,
) -> tuple[list[Sample], list[Sample], dict[int, str], list[str], list[str]]:
    """(train samples, validation samples, labels {value: name}, train ids, validation ids).

    The labels are those of the training samples; boxes of a label found only in validation
    are dropped (the model cannot learn it). Raises ``InputError`` when the training samples
    hold no box; warns (``say`` and ``warnings.warn``) for a class absent from validation.
    ``label_choice`` keeps only some labels of the masks or makes them one class, 1 (e.g.
    BraTS labels 1-4 → whole tumour); a box file is not affected.
    """
    if boxes_file is not None:
        everything, names = samples_from_box_file(root, Path(boxes_file), size, say)
        if not everything:
            raise InputError("the box file annotates none of the images in images/", boxes_file)
        train_ids, val_ids = split_cases([s.case_id for s in everything], val_fraction, seed)
        chosen = set(val_ids)
        train = [s for s in everything if s.case_id not in chosen]
        val = [s for s in everything if s.case_id in chosen]
    else:
        data = find_cases(root)
        usable = [c.case_id for c in data.cases if not c.problem]
        if not usable:
            raise InputError("no case with both an image and a mask", root)
        train_ids, val_ids = split_cases(usable, val_fraction, seed)
        options = (channel, size, empty_fraction)
        train = samples_from_masks(data, train_ids, *options, seed, label_choice)
        val = samples_from_masks(data, val_ids, *options, seed + 1, label_choice)
        found = sorted({int(v) for s in train + val for v in s.labels})
        known = class_names(data.label_names, label_choice or LabelChoice())
        names = {v: known.get(v, f"class_{v}") for v in found}

    train_values = {int(v) for s in train for v in s.labels}
    val_values = {int(v) for s in val for v in s.labels}
    if not train_values:
        where = "any mask or box" if not val_values else f"the {len(train_ids)} training cases"
        raise InputError(f"no foreground in {where}: nothing to train a detector on", root)
    for value in sorted(train_values - val_values):
        message = (
            f"class {names[value]!r} (label {value}) is in the training cases but not in the "
            "validation cases: its detection is not measured"
        )
        say("warning: " + message)
        warnings.warn(message, stacklevel=3)
    unseen = sorted(val_values - train_values)
    if unseen:
        say(f"warning: label(s) {unseen} only in the validation cases are ignored")
        for sample in val:
            keep = np.isin(sample.labels, sorted(train_values))
            sample.boxes, sample.labels = sample.boxes[keep], sample.labels[keep]
    labels = {v: names[v] for v in sorted(train_values)}
    return train, val, labels, train_ids, val_ids


# --- augmentation and batches --------------------------------------------------------------


def augment(
    sample: Sample, size: int, rng: np.random.Generator, aug: Augmentation
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(3, size, size) input, continuous boxes (n, 4) in input pixels, their label values."""
    image = sample.image.astype(np.float32) / 255.0
    boxes, labels = sample.boxes.copy(), sample.labels.copy()
    h, w = image.shape[:2]
    if "h" in aug.flips and rng.random() < aug.probability:
        image = image[:, ::-1]
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    if "v" in aug.flips and rng.random() < aug.probability:
        image = image[::-1]
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    if rng.random() < aug.probability:
        mean = image.mean()
        image = (image - mean) * rng.uniform(1 - aug.contrast, 1 + aug.contrast) + mean
    if rng.random() < aug.probability:
        image = image + rng.uniform(-aug.brightness, aug.brightness)
    image = np.clip(image, 0.0, 1.0)
    if rng.random() < aug.probability:
        image = image ** rng.uniform(*aug.gamma)

    scale = size / max(h, w) * rng.uniform(*aug.scale)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    content = resize_image(image, (new_h, new_w)).clamp_(0.0, 1.0)
    shift = round(aug.translate * size)
    ox = int(rng.integers(min(0, size - new_w) - shift, max(0, size - new_w) + shift + 1))
    oy = int(rng.integers(min(0, size - new_h) - shift, max(0, size - new_h) + shift + 1))
    canvas = torch.zeros(3, size, size)
    x0, y0, x1, y1 = max(0, ox), max(0, oy), min(size, ox + new_w), min(size, oy + new_h)
    if x1 > x0 and y1 > y0:
        canvas[:, y0:y1, x0:x1] = content[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]

    boxes = boxes * np.float32([new_w / w, new_h / h, new_w / w, new_h / h])
    boxes += np.float32([ox, oy, ox, oy])
    clipped = np.clip(boxes, 0, size)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (visible >= aug.min_visible * area) & (clipped[:, 2] - clipped[:, 0] >= 1)
    keep &= clipped[:, 3] - clipped[:, 1] >= 1
    return canvas, clipped[keep], labels[keep]


def unchanged(sample: Sample, size: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The prompter's own preprocessing (letterbox), boxes scaled alike."""
    canvas, (sx, sy) = letterbox(sample.image.astype(np.float32) / 255.0, size)
    return canvas, sample.boxes * np.float32([sx, sy, sx, sy]), sample.labels


def collate(
    items: Sequence[tuple[torch.Tensor, np.ndarray, np.ndarray]], values: np.ndarray, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S) and the loss's targets (M, 6): [image, class, cx, cy, w, h] / S."""
    rows = []
    for b, (_, boxes, labels) in enumerate(items):
        if len(boxes) == 0:
            continue
        classes = np.searchsorted(values, labels)
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        rows.append(
            np.stack(
                [np.full(len(boxes), b), classes, cx / size, cy / size, bw / size, bh / size],
                axis=1,
            )
        )
    targets = np.concatenate(rows) if rows else np.zeros((0, 6))
    images = torch.stack([item[0] for item in items])
    return images, torch.from_numpy(targets.astype(np.float32))
