"""Training data: a reproducible train/validation split and the 2D planes of a data set.

A plane is a 2D image (or one slice along axis 0 of a volume, or one frame of a sequence)
already in [0, 1], with its ground-truth label plane. Volumes give every slice that holds
foreground plus, when asked, a share of empty slices (so a prompter learns to find nothing).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from automedseg.data.datasets import DataSet, LabelChoice, load_case
from automedseg.errors import InputError
from automedseg.intensity import to_unit_range


@dataclass
class Plane:
    case_id: str
    index: int | None
    """Slice/frame index along axis 0, or None for a 2D image."""
    image: np.ndarray
    """(H, W) or (H, W, 3) float32 in [0, 1]."""
    labels: np.ndarray
    """(H, W) integer label plane."""
    copy: int = 0
    """0 for the plane as read; N ≥ 1 for its N-th augmented copy (``augmented``)."""


def augmented(plane: Plane, copy: int) -> Plane:
    """The ``copy``-th (1, 2, …) augmented copy of a plane, transformed in image space: rotated
    by a multiple of 90°, mirrored left-right (probability 1/2), cropped to 70–100 % of each
    side, then gamma 0.7–1.4 and a gain of 0.9–1.1 per colour channel. Seeded by the case, the
    plane and ``copy``, so the same copy comes out on every run."""
    where = "" if plane.index is None else f"{plane.index}|"
    rng = np.random.default_rng(zlib.crc32(f"{plane.case_id}|{where}{copy}".encode()))
    image, labels = plane.image, plane.labels
    turns = int(rng.integers(4))
    image, labels = np.rot90(image, turns, (0, 1)), np.rot90(labels, turns, (0, 1))
    if rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    h, w = labels.shape
    keep = rng.uniform(0.7, 1.0)
    ch, cw = int(h * keep), int(w * keep)
    y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    image, labels = image[y : y + ch, x : x + cw], labels[y : y + ch, x : x + cw]
    gamma, gain = rng.uniform(0.7, 1.4), rng.uniform(0.9, 1.1, 3)
    gain = gain if image.ndim == 3 and image.shape[-1] == 3 else gain[0]
    image = np.clip(image**gamma * gain, 0, 1).astype(np.float32)
    return Plane(plane.case_id, plane.index, np.ascontiguousarray(image),
                 np.ascontiguousarray(labels), copy)  # fmt: skip


def split_cases(
    case_ids: list[str], val_fraction: float, seed: int = 0
) -> tuple[list[str], list[str]]:
    """(train, validation) case ids: a seeded shuffle of the sorted ids, at least one each."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"the validation fraction must be between 0 and 1, not {val_fraction}")
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise InputError(f"a train/validation split needs at least 2 cases, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = min(len(ids) - 1, max(1, round(len(ids) * val_fraction)))
    val = sorted(ids[i] for i in order[:n_val])
    return sorted(set(ids) - set(val)), val


def split_usable(
    case_ids: list[str], val_fraction: float, seed: int = 0, limit: int | None = None
) -> tuple[list[str], list[str]]:
    """``split_cases`` of the first ``limit`` of the sorted ids: how ``train`` splits a data
    set's usable cases (and how a card's ``training`` record rebuilds that split)."""
    return split_cases(sorted(case_ids)[:limit], val_fraction, seed)


def iter_planes(
    data: DataSet,
    case_ids: list[str] | None = None,
    channel: int = 0,
    empty_fraction: float = 0.0,
    seed: int = 0,
    label_choice: LabelChoice | None = None,
) -> Iterator[Plane]:
    """Planes of the given cases (all usable cases when None), skipping unreadable ones.

    For volumes and sequences, planes without foreground are kept with probability
    ``empty_fraction``; 2D images are always kept.
    """
    rng = np.random.default_rng(seed)
    wanted = None if case_ids is None else set(case_ids)
    for case in data.cases:
        if case.problem or (wanted is not None and case.case_id not in wanted):
            continue
        image, truth = load_case(case, channel, data.layout, label_choice)
        unit = to_unit_range(image)
        if image.spatial_dims == 2:
            yield Plane(case.case_id, None, unit, truth)
            continue
        for z in range(image.shape[0]):
            if truth[z].any() or rng.random() < empty_fraction:
                yield Plane(case.case_id, z, unit[z], truth[z])
