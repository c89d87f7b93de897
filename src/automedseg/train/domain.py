"""Fitting a task's input-domain model (``pipeline.qc.DomainModel``) and its threshold.

The features are LiteMedSAM's pooled image embeddings (on the task's own runtime) of planes of
the task's *training* cases (the split its prompter was trained on, rebuilt from the card):
every 2D image, or evenly spaced planes of each volume or video. The threshold is the larger
of the 99th percentile of the training planes' distances and the 95th percentile of the
*validation* cases' distances (each an observed value, never between two: with 2 validation
cases, the larger), so that at most about 5 % of in-domain cases are flagged; how
many are, on the validation cases and on images of other data sets, is measured by
``benchmarks/domain_check.py``.

Written beside the task's ``task.json``: ``domain.npz`` (the arrays, plain numpy, no pickles)
and the ``domain`` entry (file, SHA-256, threshold, what was fitted on).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from automedseg import io
from automedseg.checkpoints import file_sha256, read_card
from automedseg.data.datasets import DataSet, find_cases, load_case
from automedseg.data.planes import split_usable
from automedseg.errors import InputError
from automedseg.pipeline.qc import VOLUME_PLANES, DomainModel, plane_features, unit_planes
from automedseg.segment.base import BoxSegmenter
from automedseg.tasks import ABOUT, Task, load_models, read_json

DOMAIN_FILE = "domain.npz"
TRAIN_QUANTILE, VALIDATION_QUANTILE = 99.0, 95.0


def _spread(ids: list[str], limit: int) -> list[str]:
    """At most ``limit`` of ``ids``, evenly spread."""
    if len(ids) <= limit:
        return ids
    return [ids[int(i)] for i in np.linspace(0, len(ids) - 1, limit)]


def case_planes(dataset: DataSet, ids: list[str], channel: int, segmenter: BoxSegmenter,
                planes: int, progress: bool) -> list[list[np.ndarray]]:  # fmt: skip
    """For each case, the features of its planes (one for 2D, ``planes`` for volumes)."""
    chosen = set(ids)
    cases = [c for c in dataset.cases if c.case_id in chosen and not c.problem]
    out = []
    for case in tqdm(cases, desc="features", unit="case", disable=not progress, file=sys.stderr):
        image, _ = load_case(case, channel, dataset.layout)
        out.append(plane_features(unit_planes(image, planes), segmenter))
    return out


def fit_domain(
    task: Task,
    data: str | Path,
    *,
    limit: int = 150,
    planes: int = 8,
    runtime: str | None = None,
    threads: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit ``task``'s domain model on ``data`` (the data set its prompter was trained on),
    write ``domain.npz`` and the ``domain`` entry into its folder; returns the entry."""
    if task.prompter is None or task.folder is None:
        raise InputError("a domain model belongs to a task folder with a prompter card")
    training = read_card(task.prompter)["training"]
    dataset = find_cases(data)
    usable = [c.case_id for c in dataset.cases if not c.problem]
    train_ids, val_ids = split_usable(usable, training["val_fraction"], training["seed"],
                                      training.get("case_limit"))  # fmt: skip
    if not train_ids or not val_ids:
        raise InputError("no training or no validation cases in this data set", data)
    models = load_models(task, runtime=runtime, threads=threads)
    channel = int(training.get("channel", 0))
    per_volume = planes if dataset.layout != "2d" else 1
    fit = case_planes(dataset, _spread(train_ids, limit), channel, models.segmenter,
                      per_volume, progress)  # fmt: skip
    held = case_planes(dataset, _spread(val_ids, limit), channel, models.segmenter,
                       VOLUME_PLANES, progress)  # fmt: skip
    model = DomainModel.fit(np.stack([f for case in fit for f in case]))
    train_distances = [model.distance(f) for case in fit for f in case]
    val_distances = [float(np.median([model.distance(f) for f in case])) for case in held]
    threshold = max(np.percentile(train_distances, TRAIN_QUANTILE, method="higher"),
                    np.percentile(val_distances, VALIDATION_QUANTILE, method="higher"))  # fmt: skip
    path = io.write_arrays(task.folder / DOMAIN_FILE, model.arrays())
    entry = {
        "file": DOMAIN_FILE,
        "sha256": file_sha256(path),
        "threshold": math.ceil(float(threshold) * 1e4) / 1e4,  # rounded up: never below
        "feature": "LiteMedSAM image embedding, channel means; volumes: median distance of "
        f"{VOLUME_PLANES} evenly spaced planes",
        "components": int(len(model.spreads)),
        "fitted_on": {"data": Path(data).name, "cases": len(fit),
                      "planes": len(train_distances), "runtime": models.runtime},  # fmt: skip
        "calibration": {
            "rule": f"max(p{TRAIN_QUANTILE:g} of training planes, p{VALIDATION_QUANTILE:g} of "
            "validation cases)",
            "validation_cases": len(held),
            "validation_flagged": round(float(np.mean(np.asarray(val_distances) > threshold)), 4),
        },
    }
    about = read_json(task.folder / ABOUT)
    io.write_json(task.folder / ABOUT, {**about, "domain": entry})
    return entry
