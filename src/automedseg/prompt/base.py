"""What every automatic prompter offers: an image in, boxes with labels and scores out."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from automedseg.types import Boxes


class Prompter(Protocol):
    """Finds the objects of its classes on one 2D plane.

    ``image`` is the plane already in [0, 1] ((H, W) or (H, W, 3), see ``segment.intensity``);
    ``embedding`` is LiteMedSAM's image embedding of the same plane when the caller has it
    (prompters that reuse the segmenter's encoder need it, others ignore it). The boxes are
    XYXY inclusive pixels of ``image``, with the class label and a score in [0, 1]; only boxes
    scoring at least ``score_threshold`` are returned.
    """

    labels: dict[int, str]
    """Label value → class name of what it finds."""
    score_threshold: float

    def find(self, image: np.ndarray, embedding: object | None = None) -> Boxes: ...
