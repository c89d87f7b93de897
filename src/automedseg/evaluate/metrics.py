"""Segmentation and detection metrics as pure functions on numpy arrays.

Masks are 2D ``(H, W)`` or 3D ``(Z, Y, X)`` arrays; any non-zero value is foreground.
``spacing`` is the voxel size in millimetres **in the same axis order as the array**:
``(row, col)`` for 2D and ``(z, y, x)`` for 3D (numpy/MONAI order, *not* SimpleITK's
``(x, y, z)``). Distances are returned in millimetres.

Empty masks, for every metric (``pred`` empty / ``gt`` empty):

- ``dice``, ``iou``: both empty -> the ``empty`` argument (default 1.0); exactly one -> 0.0.
- ``hd95``: both empty -> 0.0; exactly one -> ``nan`` (undefined: callers report NaN and
  count such cases separately, never average them in).
- ``nsd``: both empty -> 1.0; exactly one -> 0.0.

Surface metrics (``hd95``, ``nsd``) follow MONAI: a mask's boundary is its set of foreground
voxels removed by a binary erosion (voxels on the image border count as boundary), distances
are between boundary-voxel *centres*, scaled per axis by ``spacing``. ``hd95`` is the larger
of the two directed 95th percentiles (``torch.quantile``, linear interpolation). ``nsd``
counts boundary voxels (no sub-voxel areas) whose distance is ``<= tolerance_mm``.

Detection boxes are ``XYXY`` with **inclusive** pixel corners: ``[x0, y0, x1, y1]`` covers
``x1 - x0 + 1`` columns. See :func:`detection_scores` for the 0/0 conventions.

Ranked detections over a data set (a detector validated at every score):
:func:`detection_hits` marks the true positives of one image (the greedy matching of
:func:`match_detections`), :func:`average_precision` is COCO's 101-point AP of one class,
:func:`best_f1_operating_point` the score threshold that maximises F1, and
:func:`detection_metrics` puts them together over per-image predictions and ground truths.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import (
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
)

from automedseg.types import box_iou

__all__ = [
    "average_precision",
    "best_f1_operating_point",
    "box_iou",
    "detection_hits",
    "detection_metrics",
    "detection_scores",
    "dice",
    "hd95",
    "iou",
    "label_metrics",
    "match_detections",
    "nsd",
]


def _masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred) != 0, np.asarray(gt) != 0
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    if p.ndim not in (2, 3):
        raise ValueError(f"masks must be 2D or 3D, got shape {p.shape}")
    return p, g


def _spacing(spacing: Sequence[float], ndim: int) -> list[float]:
    s = [float(v) for v in spacing]
    if len(s) != ndim or not all(v > 0 and math.isfinite(v) for v in s):
        raise ValueError(f"spacing must be {ndim} positive numbers (array axis order), got {s}")
    return s


def _bc(mask: np.ndarray) -> torch.Tensor:
    """Binary mask -> MONAI's one-hot batch-first ``[B=1, C=1, *spatial]`` float tensor."""
    return torch.from_numpy(mask[None, None].astype(np.float32))


def _surface(fn, *args, **kwargs) -> float:
    """Call a MONAI surface metric on one image and one class, returning a float."""
    with warnings.catch_warnings():
        # MONAI 1.6 passes its own deprecated get_mask_edges argument internally.
        warnings.filterwarnings("ignore", ".*always_return_as_numpy", FutureWarning)
        return float(fn(*args, **kwargs))


def dice(pred: np.ndarray, gt: np.ndarray, empty: float = 1.0) -> float:
    """Dice ``2|P∩G| / (|P|+|G|)``; ``empty`` when both are empty, 0.0 when only one is."""
    p, g = _masks(pred, gt)
    if not p.any() and not g.any():
        return float(empty)
    return float(compute_dice(_bc(p), _bc(g), include_background=True, ignore_empty=False))


def iou(pred: np.ndarray, gt: np.ndarray, empty: float = 1.0) -> float:
    """Jaccard ``|P∩G| / |P∪G|``; ``empty`` when both are empty, 0.0 when only one is."""
    p, g = _masks(pred, gt)
    if not p.any() and not g.any():
        return float(empty)
    return float(compute_iou(_bc(p), _bc(g), include_background=True, ignore_empty=False))


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm.

    0.0 when both masks are empty; ``nan`` (undefined) when exactly one is empty.
    """
    p, g = _masks(pred, gt)
    s = _spacing(spacing, p.ndim)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return float("nan")
    return _surface(
        compute_hausdorff_distance,
        _bc(p),
        _bc(g),
        include_background=True,
        percentile=95,
        spacing=s,
    )


def nsd(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> float:
    """Normalised surface Dice: fraction of both boundaries within ``tolerance_mm`` (inclusive).

    1.0 when both masks are empty; 0.0 when exactly one is empty.
    """
    p, g = _masks(pred, gt)
    s = _spacing(spacing, p.ndim)
    if not p.any() and not g.any():
        return 1.0
    if not p.any() or not g.any():
        return 0.0
    return _surface(
        compute_surface_dice,
        _bc(p),
        _bc(g),
        [float(tolerance_mm)],
        include_background=True,
        spacing=s,
    )


def label_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float],
    tolerance_mm: float,
) -> dict[int, dict[str, float]]:
    """Per-label ``dice, iou, hd95, nsd, gt_voxels, pred_voxels`` from two integer label maps."""
    pl, gl = np.asarray(pred_labels), np.asarray(gt_labels)
    out: dict[int, dict[str, float]] = {}
    for lab in labels:
        p, g = pl == lab, gl == lab
        out[int(lab)] = {
            "dice": dice(p, g),
            "iou": iou(p, g),
            "hd95": hd95(p, g, spacing),
            "nsd": nsd(p, g, spacing, tolerance_mm),
            "gt_voxels": int(g.sum()),
            "pred_voxels": int(p.sum()),
        }
    return out


def plane_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean 2D Dice over the planes (axis 0) where the prediction or the ground truth is
    non-empty — the per-frame Dice of a video, the per-slice Dice of a volume. NaN when both
    are empty everywhere."""
    p = np.asarray(pred, bool).reshape(len(pred), -1)
    g = np.asarray(gt, bool).reshape(len(gt), -1)
    sizes = p.sum(axis=1) + g.sum(axis=1)
    present = sizes > 0
    if not present.any():
        return float("nan")
    overlap = (p & g).sum(axis=1)
    return float(np.mean(2.0 * overlap[present] / sizes[present]))


def _boxes(b: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    if bool((t[:, 2] < t[:, 0]).any() or (t[:, 3] < t[:, 1]).any()):
        raise ValueError("boxes must be XYXY with x1 >= x0 and y1 >= y0")
    return t


def match_detections(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    gt_boxes: np.ndarray,
    iou_threshold: float = 0.5,
) -> tuple[int, int, int]:
    """Greedy matching -> ``(true positives, false positives, false negatives)``.

    Predictions are visited by descending score (ties keep input order); each takes the
    still-unmatched ground-truth box with the highest IoU if that IoU is ``>= iou_threshold``.
    Each ground-truth box is matched at most once, so duplicates are false positives.
    """
    hits = detection_hits(pred_boxes, pred_scores, gt_boxes, iou_threshold)
    tp = int(hits.sum())
    return tp, len(hits) - tp, len(_boxes(gt_boxes)) - tp


def detection_hits(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    gt_boxes: np.ndarray,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Which predictions are true positives: ``(N,)`` bool in input order.

    The greedy matching of :func:`match_detections` (by descending score, ties in input
    order; each takes the still-unmatched ground-truth box of highest IoU if that IoU is
    ``>= iou_threshold``). Boxes are XYXY with inclusive corners.
    """
    pb, gb = _boxes(pred_boxes), _boxes(gt_boxes)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(pb):
        raise ValueError(f"{len(pb)} boxes but {len(scores)} scores")
    hits = np.zeros(len(pb), dtype=bool)
    if len(pb) == 0 or len(gb) == 0:
        return hits
    ious = box_iou(pb.numpy(), gb.numpy())
    free = np.ones(len(gb), dtype=bool)
    for i in np.argsort(-scores, kind="stable"):
        cand = np.where(free, ious[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            free[j] = False
            hits[i] = True
    return hits


def detection_scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from match counts.

    0/0 conventions: an empty denominator scores 1.0 only when nothing at all went wrong.
    No predictions and no ground truth (0, 0, 0) -> precision = recall = f1 = 1.0.
    No predictions but ground truth -> precision 0.0 (and recall 0.0, f1 0.0);
    predictions but no ground truth -> recall 0.0 (and precision 0.0, f1 0.0).
    """
    perfect = fp == 0 and fn == 0
    precision = tp / (tp + fp) if tp + fp else float(perfect)
    recall = tp / (tp + fn) if tp + fn else float(perfect)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def _ranked(scores: np.ndarray, is_true_positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and hits sorted by descending score (ties keep input order)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    hits = np.asarray(is_true_positive, dtype=bool).reshape(-1)
    if len(s) != len(hits):
        raise ValueError(f"{len(s)} scores but {len(hits)} true-positive flags")
    order = np.argsort(-s, kind="stable")
    return s[order], hits[order]


def average_precision(scores: np.ndarray, is_true_positive: np.ndarray, n_true: int) -> float:
    """COCO's 101-point interpolated average precision of one class's ranked detections.

    ``scores`` and ``is_true_positive`` (e.g. from :func:`detection_hits`) are the class's
    detections over a whole data set; ``n_true`` is its number of ground-truth boxes. With
    the detections ranked by descending score (ties in input order), precision is made
    non-increasing (at each rank, the best precision at that rank or any later one) and read
    at the first rank reaching each recall 0, 0.01, …, 1 (0 where no rank does); AP is the
    mean of the 101 readings. 0.0 when there is no detection or no ground truth.
    """
    _, hits = _ranked(scores, is_true_positive)
    if len(hits) == 0 or n_true <= 0:
        return 0.0
    tp = np.cumsum(hits)
    recall = tp / n_true
    envelope = np.maximum.accumulate((tp / np.arange(1, len(tp) + 1))[::-1])[::-1]
    rank = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")
    readings = np.where(rank < len(envelope), envelope[np.minimum(rank, len(envelope) - 1)], 0.0)
    return float(readings.mean())


def best_f1_operating_point(
    scores: np.ndarray, is_true_positive: np.ndarray, n_true: int, score_floor: float = 0.0
) -> dict[str, float | None]:
    """``precision``, ``recall``, ``f1`` and ``score_threshold`` where F1 is highest.

    Detections scoring at least the threshold are kept; cuts fall only between different
    scores (the first best cut wins a tie in F1). The threshold sits midway between the
    lowest score kept and the next lower one — or ``score_floor``, the score the detections
    were cut at, below the last — for a margin on unseen data. No ground truth
    (``n_true == 0``): all None; ground truth but no detection: 0.0 each, threshold None.
    """
    ranked, hits = _ranked(scores, is_true_positive)
    if n_true <= 0:
        return {"precision": None, "recall": None, "f1": None, "score_threshold": None}
    if len(ranked) == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "score_threshold": None}
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / n_true
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    last_of_score = np.r_[ranked[1:] != ranked[:-1], True]
    best = int(np.argmax(np.where(last_of_score, f1, -1.0)))
    below = np.r_[ranked[1:], min(score_floor, ranked[-1])][best]
    return {
        "precision": float(precision[best]),
        "recall": float(recall[best]),
        "f1": float(f1[best]),
        "score_threshold": float((ranked[best] + below) / 2),
    }


def detection_metrics(
    predictions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    truths: Sequence[tuple[np.ndarray, np.ndarray]],
    iou_threshold: float = 0.5,
    score_floor: float = 0.0,
) -> dict:
    """mAP and the F1-best operating point of a detector over a set of images.

    ``predictions``: per image ``(boxes (D, 4), scores (D,), classes (D,))``; ``truths``: per
    image ``(boxes (G, 4), classes (G,))``; boxes XYXY with inclusive corners. Per image and
    class, :func:`detection_hits` matches at ``iou_threshold``. Returns ``ap50_per_class``
    ({class: :func:`average_precision`} for each class with ground truth), ``mAP50`` (their
    mean; named for the default IoU 0.5) and :func:`best_f1_operating_point` of all classes
    pooled (``precision``, ``recall``, ``f1``, ``score_threshold``, with ``score_floor``).
    Values are None (and ``ap50_per_class`` empty) when there is no ground truth.
    """
    counts: dict[int, int] = {}
    det_scores, det_hits, det_classes = [np.zeros(0)], [np.zeros(0, bool)], [np.zeros(0, int)]
    for (boxes, scores, classes), (true_boxes, true_classes) in zip(
        predictions, truths, strict=True
    ):
        boxes, true_boxes = np.asarray(boxes), np.asarray(true_boxes)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        classes = np.asarray(classes).reshape(-1).astype(int)
        true_classes = np.asarray(true_classes).reshape(-1).astype(int)
        for c in np.unique(true_classes):
            counts[int(c)] = counts.get(int(c), 0) + int((true_classes == c).sum())
        for c in np.unique(classes):
            mine, targets = classes == c, true_classes == c
            hits = detection_hits(boxes[mine], scores[mine], true_boxes[targets], iou_threshold)
            det_scores.append(scores[mine])
            det_hits.append(hits)
            det_classes.append(classes[mine])
    scores, hits, classes = (np.concatenate(x) for x in (det_scores, det_hits, det_classes))
    per_class = {
        c: average_precision(scores[classes == c], hits[classes == c], n)
        for c, n in sorted(counts.items())
    }
    return {
        "mAP50": float(np.mean(list(per_class.values()))) if per_class else None,
        **best_f1_operating_point(scores, hits, sum(counts.values()), score_floor),
        "ap50_per_class": per_class,
    }
