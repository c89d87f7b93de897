"""What every automatic prompter offers: an image in, boxes with labels and scores out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from automedseg.errors import WeightsError
from automedseg.types import Boxes


class Prompter(Protocol):
    """Finds the objects of its classes on one 2D plane.

    ``image`` is the plane already in [0, 1] ((H, W) or (H, W, 3), see ``automedseg.intensity``);
    ``embedding`` is LiteMedSAM's image embedding of the same plane when the caller has it
    (prompters that reuse the segmenter's encoder need it, others ignore it). The boxes are
    XYXY inclusive pixels of ``image``, with the class label and a score in [0, 1]; only boxes
    scoring at least ``score_threshold`` are returned.
    """

    labels: dict[int, str]
    """Label value → class name of what it finds."""
    score_threshold: float

    def find(self, image: np.ndarray, embedding: object | None = None) -> Boxes: ...


PROPAGATION_SETTINGS = {"snap": bool, "snap_iou": float, "follow": bool}
"""``propagate.Propagation`` options a prompter's card may set (``train.propagation`` chooses
them on validation volumes or videos)."""


def card_propagation(card: dict[str, Any], card_path: str | Path) -> dict:
    """The propagation settings in a prompter's card (``{}`` when it has none), checked."""
    entry = card.get("propagation") or {}
    settings = entry.get("settings", {}) if isinstance(entry, dict) else entry
    problem = None if isinstance(settings, dict) else f"not a mapping: {settings!r}"
    for name, value in settings.items() if problem is None else ():
        kind = PROPAGATION_SETTINGS.get(name)
        if kind is None:
            problem = f"unknown setting {name!r} (known: {sorted(PROPAGATION_SETTINGS)})"
        elif kind is bool and not isinstance(value, bool):
            problem = f"{name} must be true or false, not {value!r}"
        elif kind is float and not (isinstance(value, int | float) and 0.0 < value <= 1.0):
            problem = f"{name} must be in (0, 1], not {value!r}"
    if problem:
        raise WeightsError(f"card's propagation settings: {problem}", card_path)
    return dict(settings)


REFINEMENT_SETTINGS = {"reprompt": bool, "min_agreement": float}
"""``pipeline.refine`` options a map prompter's card may set (chosen when it is trained)."""


def card_refinement(card: dict[str, Any], card_path: str | Path) -> dict:
    """The card's refinement settings (``{}`` when none), checked."""
    settings = card.get("refinement") or {}
    settings = settings.get("settings", {}) if "settings" in settings else settings
    for name, value in settings.items():
        kind = REFINEMENT_SETTINGS.get(name)
        good = kind is bool and isinstance(value, bool) or (
            kind is float and isinstance(value, int | float) and 0.0 <= value < 1.0
        )
        if not good:
            raise WeightsError(f"card's refinement setting {name}={value!r} is not valid "
                               f"(known: reprompt true/false, min_agreement in [0, 1))",
                               card_path)  # fmt: skip
    return dict(settings)
