"""Real planes for calibrating and checking a quantized model.

From a data set in a layout ``evaluate`` reads (its training cases when it is the data the
task's prompter was trained on, so the validation split stays unseen), or from a plain folder
of images or volumes. Volumes contribute a few planes each. The planes are shuffled with a
fixed seed and split into a calibration part and a held-out part that only measures fidelity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automedseg import io
from automedseg.data.datasets import (
    Case,
    DataSet,
    LabelChoice,
    find_cases,
    image_files,
    load_case,
)
from automedseg.data.planes import split_usable
from automedseg.errors import AutomedsegError, InputError
from automedseg.intensity import to_unit_range
from automedseg.types import Image

MIN_PLANES = 12
"""Fewer planes than this cannot both calibrate and measure the result."""
PLANES_PER_VOLUME = 3
HELD_OUT_FRACTION = 1 / 3

Plane = tuple[np.ndarray, np.ndarray | None]
"""A plane in [0, 1] and its label map (None without masks)."""


@dataclass(frozen=True)
class Planes:
    calibration: list[np.ndarray]
    held_out: list[np.ndarray]
    source: str
    held_out_truth: list[np.ndarray] | None = None
    """The held-out planes' label maps, when they come from a data set with masks."""


def calibration_planes(
    folder: str | Path,
    limit: int = 48,
    train_split: tuple[float, int, int | None] | None = None,
    channel: int = 0,
    label_choice: LabelChoice | None = None,
    seed: int = 0,
) -> Planes:
    """Up to ``limit`` planes in [0, 1] from ``folder``, split calibration / held out.

    ``train_split`` = (val_fraction, seed, case limit) of the prompter's training: when given
    and ``folder`` is a data set, only that split's training cases are used; ``label_choice``
    applies to its masks as in the prompter's training. Raises
    ``InputError`` when fewer than ``MIN_PLANES`` planes can be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("calibration folder does not exist", folder)
    try:
        dataset = find_cases(folder)
    except InputError:
        dataset = None
    if dataset is not None:
        cases = _training_cases(dataset, train_split)
        items = [(c, dataset.layout) for c in cases]
        source = f"{Path(folder).resolve().name} ({dataset.layout} data set, {len(cases)} cases" + (
            ", training split)" if train_split else ")"
        )
    else:
        files = set(image_files(folder))
        items = [(p, None) for p in sorted(folder.iterdir()) if p.is_dir() or p in files]
        source = f"{Path(folder).resolve().name} ({len(items)} files)"
    order = np.random.default_rng(seed).permutation(len(items))
    # a data set of few volumes gives more planes of each (3 BraTS volumes: 8 each)
    per_volume = max(PLANES_PER_VOLUME, -(-2 * MIN_PLANES // max(len(items), 1)))
    planes: list[Plane] = []
    problems: list[str] = []
    for index in order:
        if len(planes) >= limit:
            break
        item, layout = items[index]
        try:
            if layout is None:
                planes += _planes_of(io.read_image(item), None, per_volume)
            else:
                planes += _planes_of(*load_case(item, channel, layout, label_choice), per_volume)
        except AutomedsegError as error:
            name = item.name if layout is None else item.case_id
            problems.append(f"{name}: {error}")
    planes = planes[:limit]
    if len(planes) < MIN_PLANES:
        detail = f"; first problem: {problems[0]}" if problems else ""
        raise InputError(
            f"calibration needs at least {MIN_PLANES} readable images or slices, found "
            f"{len(planes)} ({len(problems)} unreadable){detail}",
            folder,
        )
    n_held = max(4, round(len(planes) * HELD_OUT_FRACTION))
    truth = [t for _, t in planes[:n_held]] if dataset is not None else None
    return Planes([p for p, _ in planes[n_held:]], [p for p, _ in planes[:n_held]], source, truth)


def _training_cases(
    dataset: DataSet, train_split: tuple[float, int, int | None] | None
) -> list[Case]:
    """Usable cases; only the training ones of ``train_split`` (as ``train.head`` splits)."""
    cases = [c for c in dataset.cases if not c.problem]
    if train_split is not None and len(cases) >= 2:
        fraction, seed, limit = train_split
        train, _ = split_usable([c.case_id for c in cases], fraction, seed, limit)
        keep = set(train)
        cases = [c for c in cases if c.case_id in keep]
    return cases


def _planes_of(
    image: Image, truth: np.ndarray | None, per_volume: int
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    unit = to_unit_range(image)
    if image.spatial_dims == 2:
        return [(unit, truth)]
    depth = unit.shape[0]
    picks = np.linspace(depth * 0.25, depth * 0.75, per_volume).round().astype(int)
    return [
        (unit[z], None if truth is None else truth[z])
        for z in sorted(set(picks.clip(0, depth - 1)))
    ]
