"""Training data: a reproducible train/validation split and the 2D planes of a data set.

A plane is a 2D image (or one slice along axis 0 of a volume, or one frame of a sequence)
already in [0, 1], with its ground-truth label plane. Volumes give every slice that holds
foreground plus, when asked, a share of empty slices (so a prompter learns to find nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from automedseg.errors import InputError
from automedseg.evaluate.datasets import DataSet, LabelChoice, load_case
from automedseg.segment.intensity import to_unit_range


@dataclass
class Plane:
    case_id: str
    index: int | None
    """Slice/frame index along axis 0, or None for a 2D image."""
    image: np.ndarray
    """(H, W) or (H, W, 3) float32 in [0, 1]."""
    labels: np.ndarray
    """(H, W) integer label plane."""


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
