"""Choosing a task's propagation settings on validation volumes or videos.

Whether a plane is prompted with the prompter's own matching box ("snapping") helps or hurts
depends on the task: it stops drift where the prompter's boxes are good (larynx videos) and
shrinks the object where they cover only part of it (a weak brain-tumour head). A prompter good
on every plane may do best without following at all ("per plane": each plane segmented from
its own boxes, as a 2D image). So each
candidate setting is run on the validation cases and the one with the best mean Dice per label
is written into the prompter's card (``propagation``); ``propagate.settings_of`` reads it back.
Each plane is encoded once per case and reused by every candidate.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from automedseg import io
from automedseg.checkpoints import read_card
from automedseg.data.datasets import LabelChoice, find_cases, load_case
from automedseg.errors import InputError
from automedseg.evaluate.metrics import dice
from automedseg.intensity import to_unit_range
from automedseg.pipeline.propagate import Propagation
from automedseg.prompt.base import Prompter
from automedseg.segment.base import BoxSegmenter
from automedseg.tasks import Models, load_models, task_of_card

CANDIDATES: tuple[dict, ...] = (
    {"snap": True, "snap_iou": 0.3},
    {"snap": True, "snap_iou": 0.5},
    {"snap": True, "snap_iou": 0.7},
    {"snap": False},
    {"follow": False},
)
"""Settings tried, the default first (it wins ties)."""


@dataclass
class ReusedEncodings:
    """A segmenter that encodes each distinct plane once and reuses it afterwards."""

    inner: BoxSegmenter
    stored: dict[str, object] = field(default_factory=dict)

    def set_image(self, image: np.ndarray) -> None:
        key = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
        if key in self.stored:
            self.inner.use(self.stored[key])
        else:
            self.inner.set_image(image)
            self.stored[key] = self.inner.encoded()

    def predict(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        return self.inner.predict(boxes_xyxy)

    def encoded(self) -> object:
        return self.inner.encoded()

    def use(self, encoded: object) -> None:
        self.inner.use(encoded)

    @property
    def embedding(self) -> object:
        return self.inner.embedding


def label_dice(predicted: np.ndarray, truth: np.ndarray, labels: Iterable[int]) -> list[float]:
    """Dice of each label present in ``truth`` (labels absent from it are not scored)."""
    return [dice(predicted == v, wanted) for v in labels if (wanted := truth == v).any()]


def key_of(settings: dict) -> str:
    if not settings.get("follow", True):
        return "per plane"
    return "snap off" if not settings.get("snap", True) else f"snap_iou {settings['snap_iou']}"


def choose_propagation(
    prompter: Prompter,
    segmenter: BoxSegmenter,
    cases: Iterator[tuple[np.ndarray, np.ndarray]],
    candidates: tuple[dict, ...] = CANDIDATES,
) -> dict:
    """Run every candidate on each (volume or frame stack in [0, 1], truth label map) case;
    returns the card's ``propagation`` entry: the chosen ``settings``, each candidate's mean
    Dice per label (``val_dice``) and the number of cases."""
    scores: dict[str, list[float]] = {key_of(c): [] for c in candidates}
    n_cases = 0
    for unit, truth in cases:
        reused = ReusedEncodings(segmenter)  # this case's planes only: bounded memory
        for settings in candidates:
            labels, _ = Propagation(prompter, reused, **settings).run(unit)
            scores[key_of(settings)] += label_dice(labels, truth, prompter.labels)
        n_cases += 1
    if not n_cases:
        raise ValueError("no validation cases to choose the propagation settings on")
    means = {k: round(float(np.mean(v)), 4) if v else 0.0 for k, v in scores.items()}
    best = max(candidates, key=lambda c: means[key_of(c)])  # first of equals: the default
    return {"settings": dict(best), "val_dice": means, "cases": n_cases}


def tune_card(
    card_path: str | Path,
    data: str | Path,
    split: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
    segmenter_weights: str | Path | None = None,
    runtime: str | None = None,
    models: Models | None = None,
) -> dict:
    """Choose the propagation settings of a prompter (its card) on the volumes or videos of
    ``data`` (only the cases listed in ``split`` when given; the first ``limit``), with the
    card's own label choice and channel, and write them into the card; returns the entry.

    The prompter runs with the segmenter it will be used with (``tasks.load_models``: the
    task's delta, or ``segmenter_weights``; the default runtime, or ``runtime``), or with
    ``models`` when given."""
    card = read_card(card_path)
    if models is None:
        models = load_models(
            task_of_card(card_path), runtime=runtime, segmenter_weights=segmenter_weights
        )
    dataset = find_cases(data, split)
    if dataset.layout == "2d":
        raise InputError("propagation settings are chosen on volumes or videos, not 2D", data)
    training = card.get("training", {})
    choice = LabelChoice.of_record(training)
    cases = [c for c in dataset.cases if c.problem is None][:limit]
    if not cases:
        raise InputError("no usable cases to choose the propagation settings on", data)
    bar = tqdm(cases, desc="propagation", unit="case", disable=not progress, file=sys.stderr)

    def loaded() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for case in bar:
            image, truth = load_case(case, training.get("channel", 0), dataset.layout, choice)
            yield to_unit_range(image), truth

    entry = choose_propagation(models.prompter, models.segmenter, loaded())
    entry["chosen_on"] = {
        "data": Path(data).name,
        "split": None if split is None else Path(split).name,
        "segmenter": models.segmenter_name if models.delta is None else _delta_name(models.delta),
        "runtime": models.runtime,
    }
    path = Path(card.pop("_path"))
    io.write_json(path, {**card, "propagation": entry})
    return entry


def _delta_name(delta: Path) -> str:
    delta_card = read_card(delta)
    return f"LiteMedSAM + {delta_card.get('method')} delta {str(delta_card['sha256'])[:12]}"
