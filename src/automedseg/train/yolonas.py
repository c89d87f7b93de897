"""Training YOLO-NAS as a box prompter on a CPU, top to bottom.

1. **Data**: the planes of a data set (``train.data``), one box per connected component of
   each label of the masks (``prompt.oracle``), or the boxes of a box file
   (``train.box_annotations``) for a 2D ``images/`` folder. Cases are split with
   ``split_cases``; the ids go to ``train_cases.txt`` / ``val_cases.txt`` in ``out``. Images
   are kept in memory as uint8, shrunk so the longest side is at most ``input_size``.
2. **Model**: ``prompt.yolonas.build_yolonas`` (random init: no pretrained weights can be
   fetched here), the PP-YOLOE loss of ``modern-yolonas`` (ATSS assignment for the first
   epochs, then task-aligned), AdamW without decay on norms/biases, linear warm-up then
   cosine to a tenth of the learning rate, gradient clipping at 10, BatchNorm momentum 0.1,
   and an exponential moving average (EMA) of the weights, which is what is validated and
   saved.
3. **Augmentation** for medical images: flips, scale and translation jitter, brightness,
   contrast and gamma (the same on every channel: no hue shifts).
4. **Each epoch**: validation on the held-out cases with the prompter's own preprocessing —
   mAP at IoU 0.5 (COCO's 101-point interpolation, averaged over classes) and precision /
   recall / F1 at the score threshold that maximises F1 (set midway to the next detection's
   score) — a line in ``train.log``, and
   ``last.pt`` (only tensors and plain types: it loads with ``torch.load(weights_only=True)``)
   from which ``resume=True`` goes on. The epoch with the best mAP50 is kept.
5. **The result**: fp16 safetensors + JSON card (``checkpoints.save_checkpoint``), with the
   F1-best score threshold as the prompter's ``score_threshold``.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from automedseg.errors import InputError
from automedseg.prompt.yolonas import (
    KIND,
    build_yolonas,
    letterbox,
    resize_image,
    resized_shape,
    select_boxes,
)

CHECKPOINT_FORMAT = "automedseg-yolonas-train-1"
WEIGHTS_NAME = "yolonas.safetensors"
BN_MOMENTUM = 0.1
"""BatchNorm momentum while training (the package uses 0.03, tuned for COCO's long runs): the
running statistics that validation and inference use settle within ~30 steps, which matters
on small medical data sets of a few steps per epoch."""
EVAL_SCORE_FLOOR = 0.01
"""Validation keeps detections scoring at least this, to trace the precision/recall curve."""


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


# --- data -----------------------------------------------------------------------------------


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
    return Sample(case_id, index, stored, _continuous(pixel_boxes) * scale, _values(labels))


def _continuous(pixel_boxes: np.ndarray) -> np.ndarray:
    """Inclusive pixel corners x0…x1 → the continuous box [x0, x1 + 1)."""
    return np.asarray(pixel_boxes, dtype=np.float32).reshape(-1, 4) + np.float32([0, 0, 1, 1])


def _values(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=np.int64).reshape(-1)


def samples_from_masks(
    data, case_ids: list[str], channel: int, size: int, empty_fraction: float, seed: int
) -> list[Sample]:
    """Samples of the given cases with one box per connected component of each label."""
    from automedseg.prompt.oracle import oracle_boxes
    from automedseg.train.data import iter_planes

    samples = []
    for plane in iter_planes(data, case_ids, channel, empty_fraction, seed):
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
    from automedseg import io
    from automedseg.evaluate.datasets import image_files, stem
    from automedseg.segment.intensity import to_unit_range
    from automedseg.train.box_annotations import class_order, read_box_annotations

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
        xyxy = _continuous(np.array([b[:4] for b in boxes], dtype=np.float32)) * scale
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
    say: Callable[[str], None] = print,
) -> tuple[list[Sample], list[Sample], dict[int, str], list[str], list[str]]:
    """(train samples, validation samples, labels {value: name}, train ids, validation ids).

    The labels are those of the training samples; boxes of a label found only in validation
    are dropped (the model cannot learn it). Raises ``InputError`` when the training samples
    hold no box; warns (``say`` and ``warnings.warn``) for a class absent from validation.
    """
    from automedseg.train.data import split_cases

    if boxes_file is not None:
        everything, names = samples_from_box_file(root, Path(boxes_file), size, say)
        if not everything:
            raise InputError("the box file annotates none of the images in images/", boxes_file)
        train_ids, val_ids = split_cases([s.case_id for s in everything], val_fraction, seed)
        chosen = set(val_ids)
        train = [s for s in everything if s.case_id not in chosen]
        val = [s for s in everything if s.case_id in chosen]
    else:
        from automedseg.evaluate.datasets import find_cases

        data = find_cases(root)
        usable = [c.case_id for c in data.cases if not c.problem]
        if not usable:
            raise InputError("no case with both an image and a mask", root)
        train_ids, val_ids = split_cases(usable, val_fraction, seed)
        train = samples_from_masks(data, train_ids, channel, size, empty_fraction, seed)
        val = samples_from_masks(data, val_ids, channel, size, empty_fraction, seed + 1)
        found = sorted({int(v) for s in train + val for v in s.labels})
        names = {v: data.label_names.get(v, f"class_{v}") for v in found}

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


# --- metrics (pure functions) ------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of continuous XYXY boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def detection_metrics(
    predictions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    truths: Sequence[tuple[np.ndarray, np.ndarray]],
    iou_threshold: float = 0.5,
    score_floor: float = 0.0,
) -> dict:
    """mAP at ``iou_threshold`` and the F1-best operating point over a set of images.

    ``predictions``: per image (boxes (D, 4), scores (D,), classes (D,)); ``truths``: per
    image (boxes (G, 4), classes (G,)). Per image and class, detections best-first take the
    unmatched ground truth they overlap most (IoU ≥ threshold) — COCO's greedy matching.
    AP per class uses COCO's 101-point interpolated precision; mAP averages the classes that
    have ground truth. Precision/recall/F1 pool all classes at the score threshold (keep
    scores ≥ it) that maximises F1; the threshold sits midway between the last detection
    kept and the next one (or ``score_floor``, the lowest score the predictions were cut at),
    for a margin on unseen images. Values are None when there is no ground truth.
    """
    found: dict[int, list[tuple[float, bool]]] = {}
    counts: dict[int, int] = {}
    for (boxes, scores, classes), (true_boxes, true_classes) in zip(
        predictions, truths, strict=True
    ):
        true_classes = np.asarray(true_classes).reshape(-1)
        classes, scores = np.asarray(classes).reshape(-1), np.asarray(scores).reshape(-1)
        for c in np.unique(true_classes):
            counts[int(c)] = counts.get(int(c), 0) + int((true_classes == c).sum())
        for c in np.unique(classes):
            mine = np.flatnonzero(classes == c)
            mine = mine[np.argsort(-scores[mine], kind="stable")]
            targets = np.flatnonzero(true_classes == c)
            ious = box_iou(np.asarray(boxes)[mine], np.asarray(true_boxes)[targets])
            taken = np.zeros(len(targets), dtype=bool)
            for row, index in enumerate(mine):
                hit = False
                if len(targets):
                    candidates = np.where(taken, -1.0, ious[row])
                    best = int(np.argmax(candidates))
                    if candidates[best] >= iou_threshold:
                        taken[best] = hit = True
                found.setdefault(int(c), []).append((float(scores[index]), hit))
    total = sum(counts.values())
    result = {
        "mAP50": None,
        "precision": None,
        "recall": None,
        "f1": None,
        "score_threshold": None,
        "ap50_per_class": {},
    }
    if total == 0:
        return result
    for c, n in sorted(counts.items()):
        result["ap50_per_class"][c] = _average_precision(found.get(c, []), n)
    result["mAP50"] = float(np.mean(list(result["ap50_per_class"].values())))
    pooled = [item for items in found.values() for item in items]
    if not pooled:
        result.update(precision=0.0, recall=0.0, f1=0.0)
        return result
    scores = np.array([s for s, _ in pooled])
    hits = np.array([h for _, h in pooled])
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / total
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    last_of_score = np.r_[scores[1:] != scores[:-1], True]  # cut only between scores
    f1 = np.where(last_of_score, f1, -1.0)
    best = int(np.argmax(f1))
    next_scores = np.r_[scores[1:], min(score_floor, scores[-1])]
    result.update(
        precision=float(precision[best]),
        recall=float(recall[best]),
        f1=float(max(f1[best], 0.0)),
        score_threshold=float((scores[best] + (next_scores[best])) / 2),
    )
    return result


def _average_precision(items: list[tuple[float, bool]], n_true: int) -> float:
    if not items or n_true == 0:
        return 0.0
    items = sorted(items, key=lambda item: -item[0])
    hits = np.array([h for _, h in items], dtype=np.float64)
    tp = np.cumsum(hits)
    recall = tp / n_true
    precision = tp / np.arange(1, len(tp) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    points = np.linspace(0.0, 1.0, 101)
    where = np.searchsorted(recall, points, side="left")
    return float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in where]))


# --- one epoch, one validation -------------------------------------------------------------


def batch_count(n: int, batch_size: int) -> int:
    """Batches per epoch: a last batch of one image is dropped (BatchNorm needs two)."""
    count = math.ceil(n / batch_size)
    return count - 1 if count > 1 and n % batch_size == 1 else max(count, 1)


def learning_rate(step: int, total: int, warmup: int, lr: float, final_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``lr * final_ratio``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def update_ema(ema: dict, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, for every floating tensor (others copied)."""
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                ema[key].mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:
                ema[key].copy_(value)


def train_one_epoch(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: list[Sample],
    values: np.ndarray,
    *,
    epoch: int,
    step: int,
    size: int,
    batch_size: int,
    rng: np.random.Generator,
    aug: Augmentation | None,
    lr_at: Callable[[int], float],
    ema: dict,
    ema_decay: Callable[[int], float],
    progress: bool,
) -> tuple[float, int, int]:
    """(mean loss, steps done so far, batches skipped for a non-finite loss)."""
    from tqdm import tqdm

    model.train()
    order = rng.permutation(len(samples))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = batches[: batch_count(len(samples), batch_size)]
    total, seen, skipped = 0.0, 0, 0
    for indices in tqdm(batches, desc=f"epoch {epoch + 1}", disable=not progress, leave=False):
        items = [
            augment(samples[i], size, rng, aug) if aug else unchanged(samples[i], size)
            for i in indices
        ]
        images, targets = collate(items, values, size)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss, _ = criterion(model(images), targets, input_size=(size, size), epoch=epoch)
        if not torch.isfinite(loss):
            skipped += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        optimizer.step()
        step += 1
        update_ema(ema, model, ema_decay(step))
        total += float(loss.detach()) * len(indices)
        seen += len(indices)
    return total / max(seen, 1), step, skipped


def validate(
    model: torch.nn.Module,
    samples: list[Sample],
    values: np.ndarray,
    size: int,
    batch_size: int,
    iou_threshold: float,
) -> dict:
    """``detection_metrics`` of the model on the samples, with the prompter's preprocessing
    and NMS (boxes compared in input pixels: IoU does not change with the scale)."""
    model.eval()
    predictions, truths = [], []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            items = [unchanged(s, size) for s in samples[start : start + batch_size]]
            boxes, scores = model(torch.stack([item[0] for item in items]))
            for i, (_, true_boxes, labels) in enumerate(items):
                xyxy, kept, classes = select_boxes(
                    boxes[i], scores[i], EVAL_SCORE_FLOOR, iou_threshold
                )
                predictions.append((xyxy.numpy(), kept.numpy(), classes.numpy()))
                truths.append((true_boxes, np.searchsorted(values, labels)))
    return detection_metrics(predictions, truths, 0.5, EVAL_SCORE_FLOOR)


# --- the whole run ------------------------------------------------------------------------


def train_yolonas(
    data_root: str | Path,
    out: str | Path,
    *,
    val_fraction: float = 0.2,
    epochs: int = 30,
    input_size: int = 320,
    batch_size: int = 8,
    resume: bool = False,
    boxes_file: str | Path | None = None,
    channel: int = 0,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    size: str = "s",
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    ema_decay: float = 0.999,
    iou_threshold: float = 0.5,
    empty_fraction: float = 0.1,
    augmentation: Augmentation | None = Augmentation(),
    threads: int | None = None,
) -> Path:
    """Train a YOLO-NAS prompter on ``data_root`` (any ``evaluate.datasets`` layout); write
    ``out/yolonas.safetensors`` + ``out/yolonas.json`` (the card, returned), ``last.pt``,
    ``train.log``, ``train_cases.txt`` and ``val_cases.txt``.

    Boxes come from the masks (one per connected component of each label) or, for a 2D
    ``images/`` folder, from ``boxes_file`` (COCO JSON, YOLO labels/ folder or Kvasir JSON).
    Volumes and sequences give every plane with foreground plus ``empty_fraction`` of the
    others. ``input_size`` must be a multiple of 32. Every line of the log also goes to
    ``log`` when given; ``progress`` shows a bar over each epoch's batches.

    Raises ``InputError`` when there is no foreground to learn from. A class found in the
    training cases but not in the validation cases is a **warning** (its detection is just
    not measured): on small or video data sets a rare class often lands on one side only.
    """
    from automedseg import io
    from automedseg.checkpoints import save_checkpoint

    started = time.monotonic()
    data_root, out = Path(data_root), Path(out)
    if input_size < 32 or input_size % 32:
        raise InputError(f"input_size must be a positive multiple of 32, got {input_size}")
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be at least 1, got {epochs}, {batch_size}")
    if threads:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    last_path = out / "last.pt"
    resuming = resume and last_path.is_file()
    log_file = (out / "train.log").open("a" if resuming else "w", encoding="utf-8")

    def say(message: str) -> None:
        log_file.write(message + "\n")
        log_file.flush()
        if log is not None:
            log(message)

    try:
        if resume and not resuming:
            say(f"no {last_path.name} in {out}: starting from scratch")
        say(f"data {data_root}" + (f", boxes {boxes_file}" if boxes_file else ""))
        train, val, labels, train_ids, val_ids = load_samples(
            data_root,
            boxes_file=boxes_file,
            val_fraction=val_fraction,
            seed=seed,
            channel=channel,
            size=input_size,
            empty_fraction=empty_fraction,
            say=say,
        )
        values = np.array(sorted(labels), dtype=np.int64)
        say(
            f"{len(train_ids)} training cases ({len(train)} planes, "
            f"{sum(len(s.boxes) for s in train)} boxes), {len(val_ids)} validation cases "
            f"({len(val)} planes, {sum(len(s.boxes) for s in val)} boxes); classes "
            + ", ".join(f"{v}={n}" for v, n in labels.items())
        )

        config = {
            "size": size,
            "input_size": input_size,
            "labels": [[int(v), n] for v, n in labels.items()],
            "train_ids": train_ids,
            "val_ids": val_ids,
        }
        saved = _read_last(last_path, config) if resuming else None
        io.write_text(out / "train_cases.txt", "\n".join(train_ids) + "\n")
        io.write_text(out / "val_cases.txt", "\n".join(val_ids) + "\n")

        # modern_yolonas.training imports albumentations, which asks the internet for updates.
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        from modern_yolonas.training.loss import PPYoloELoss
        from modern_yolonas.training.optimizer import create_optimizer

        torch.manual_seed(seed)
        model = build_yolonas(len(values), size)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = BN_MOMENTUM
        eval_model = copy.deepcopy(model)  # holds the EMA weights for validation
        criterion = PPYoloELoss(num_classes=len(values), static_assigner_epochs=min(4, epochs // 4))
        optimizer = create_optimizer(model, "adamw", lr=lr, weight_decay=weight_decay)
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        first_epoch, step, elapsed, history, best = 0, 0, 0.0, [], None
        if saved is not None:
            model.load_state_dict(saved["model"])
            ema = saved["ema"]
            optimizer.load_state_dict(saved["optimizer"])
            first_epoch, step = int(saved["epoch"]), int(saved["step"])
            elapsed, history, best = float(saved["elapsed"]), saved["history"], saved["best"]
            del saved
            say(f"resuming after epoch {first_epoch} (step {step})")

        steps_per_epoch = batch_count(len(train), batch_size)
        total_steps = epochs * steps_per_epoch
        warmup = max(1, min(3 * steps_per_epoch, total_steps // 10))

        def lr_at(s: int) -> float:
            return learning_rate(s, total_steps, warmup, lr, 0.1)

        def ema_at(s: int) -> float:  # short memory at first, so early weights fade fast
            return ema_decay * (1.0 - math.exp(-s / 200.0))

        say(
            f"YOLO-NAS-{size.upper()} {len(values)} class(es), input {input_size}, batch "
            f"{batch_size}, {steps_per_epoch} steps/epoch, AdamW lr {lr:g}, "
            f"{torch.get_num_threads()} torch thread(s)"
        )
        for epoch in range(first_epoch, epochs):
            epoch_start = time.monotonic()
            rng = np.random.default_rng([seed, epoch])
            loss, step, skipped = train_one_epoch(
                model,
                criterion,
                optimizer,
                train,
                values,
                epoch=epoch,
                step=step,
                size=input_size,
                batch_size=batch_size,
                rng=rng,
                aug=augmentation,
                lr_at=lr_at,
                ema=ema,
                ema_decay=ema_at,
                progress=progress,
            )
            eval_model.load_state_dict(ema)
            metrics = validate(eval_model, val, values, input_size, batch_size, iou_threshold)
            elapsed += time.monotonic() - epoch_start
            record = {
                "epoch": epoch + 1,
                "loss": loss,
                "elapsed_s": round(elapsed, 1),
                **{k: v for k, v in metrics.items() if k != "ap50_per_class"},
            }
            history.append(record)
            say(_epoch_line(record, epochs, skipped))
            score = -1.0 if metrics["mAP50"] is None else metrics["mAP50"]
            if best is None or score >= best["score"]:
                best = {
                    "epoch": epoch + 1,
                    "score": score,
                    "metrics": record,
                    "state": {k: _half(v) for k, v in ema.items()},
                }
            _write_last(
                last_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "config": config,
                    "epoch": epoch + 1,
                    "step": step,
                    "elapsed": elapsed,
                    "history": history,
                    "best": best,
                    "model": model.state_dict(),
                    "ema": ema,
                    "optimizer": optimizer.state_dict(),
                },
            )

        metrics = best["metrics"]
        threshold = metrics["score_threshold"]
        card = {
            "kind": KIND,
            "architecture": {"size": size, "num_classes": len(values), "input_size": input_size},
            "preprocessing": (
                "image in [0, 1] (segment.intensity); gray repeated to 3 channels; longest "
                "side resized to input_size (bilinear, antialiased), padded bottom/right with 0"
            ),
            "labels": {str(v): n for v, n in labels.items()},
            "score_threshold": 0.25 if threshold is None else threshold,
            "iou_threshold": iou_threshold,
            "training_data": {
                "root": str(data_root.resolve()),
                "boxes_file": None if boxes_file is None else str(Path(boxes_file).resolve()),
                "channel": channel,
                "n_train_cases": len(train_ids),
                "n_val_cases": len(val_ids),
                "n_train_planes": len(train),
                "n_val_planes": len(val),
                "train_ids_file": "train_cases.txt",
                "val_ids_file": "val_cases.txt",
            },
            "val_metrics": {
                "epoch": best["epoch"],
                "mAP50": metrics["mAP50"],
                "recall": metrics["recall"],
                "precision": metrics["precision"],
                "f1": metrics["f1"],
                "score_threshold": threshold,
                "iou_match": 0.5,
            },
            "epochs": len(history),
            "training_seconds": round(elapsed, 1),
            "torch_threads": torch.get_num_threads(),
            "training": {
                "optimizer": "AdamW",
                "lr": lr,
                "weight_decay": weight_decay,
                "schedule": f"linear warm-up {warmup} steps, cosine to 0.1 lr",
                "batch_size": batch_size,
                "ema_decay": ema_decay,
                "seed": seed,
                "val_fraction": val_fraction,
                "augmentation": None if augmentation is None else asdict(augmentation),
                "weights": "random init (no pretraining)",
            },
            "software": _versions(),
        }
        card_path = save_checkpoint(out / WEIGHTS_NAME, best["state"], card)
        megabytes = (out / WEIGHTS_NAME).stat().st_size / 1e6
        say(
            f"best epoch {best['epoch']}: wrote {card_path.name} + {WEIGHTS_NAME} "
            f"({megabytes:.1f} MB) in {time.monotonic() - started:.0f} s"
        )
        return card_path
    finally:
        log_file.close()


def _read_last(path: Path, config: dict) -> dict:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        message = f"cannot resume: not a readable training checkpoint ({first})"
        raise InputError(message, path) from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise InputError("cannot resume: not an automedseg YOLO-NAS training checkpoint", path)
    for key, value in config.items():
        if saved["config"].get(key) != value:
            raise InputError(
                f"cannot resume: this run's {key} differs from the checkpoint's "
                "(use another output folder, or resume=False to start again)",
                path,
            )
    return saved


def _write_last(path: Path, state: dict) -> None:
    temp = path.with_suffix(".pt.tmp")
    torch.save(state, temp)
    os.replace(temp, path)


def _half(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().clone()
    return tensor.half() if tensor.dtype.is_floating_point else tensor


def _epoch_line(record: dict, epochs: int, skipped: int) -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    line = (
        f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}  "
        f"val mAP50 {number(record['mAP50'])}  recall {number(record['recall'])}  "
        f"precision {number(record['precision'])}  F1 {number(record['f1'])} "
        f"@ score {number(record['score_threshold'])}  elapsed {record['elapsed_s']:.0f} s"
    )
    return line + (f"  ({skipped} batch(es) skipped: loss not finite)" if skipped else "")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "modern-yolonas"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "unknown"
    return versions
