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
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torchvision
from monai.metrics import (
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
)

__all__ = [
    "box_iou",
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


def _boxes(b: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1, 4))
    if bool((t[:, 2] < t[:, 0]).any() or (t[:, 3] < t[:, 1]).any()):
        raise ValueError("boxes must be XYXY with x1 >= x0 and y1 >= y0")
    return t


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(N, M)`` of XYXY boxes ``(N, 4)`` and ``(M, 4)`` with inclusive corners."""
    ta, tb = _boxes(a), _boxes(b)
    one = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    # Inclusive pixel corners -> half-open coordinates expected by torchvision.
    return torchvision.ops.box_iou(ta + one, tb + one).numpy()


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
    pb, gb = _boxes(pred_boxes), _boxes(gt_boxes)
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(pb):
        raise ValueError(f"{len(pb)} boxes but {len(scores)} scores")
    if len(pb) == 0 or len(gb) == 0:
        return 0, len(pb), len(gb)
    ious = box_iou(pb.numpy(), gb.numpy())
    free = np.ones(len(gb), dtype=bool)
    tp = 0
    for i in np.argsort(-scores, kind="stable"):
        cand = np.where(free, ious[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            free[j] = False
            tp += 1
    return tp, len(pb) - tp, len(gb) - tp


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
