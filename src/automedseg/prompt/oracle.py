"""Fixed prompts: a user's boxes, or oracle boxes taken from a ground-truth label map.

One box per connected component of each label (8-connected in 2D), so oracle results are
reproducible and comparable. Boxes are XYXY inclusive pixels, score 1, sorted by label, then
by position.
"""

from __future__ import annotations

import numpy as np

from automedseg.prompt.components import regions_of
from automedseg.types import Boxes


def oracle_boxes(label_map: np.ndarray, min_pixels: int = 1) -> Boxes:
    """Boxes around each connected component of each non-zero label of an (H, W) label map.

    Components smaller than ``min_pixels`` are skipped (annotation specks).
    """
    if label_map.ndim != 2:
        raise ValueError(f"oracle_boxes needs an (H, W) label map, got shape {label_map.shape}")
    xyxy, labels = [], []
    for label in np.unique(label_map):
        if label == 0:
            continue
        for (rows, cols), _ in regions_of(label_map == label, min_pixels):
            xyxy.append((cols.start, rows.start, cols.stop - 1, rows.stop - 1))
            labels.append(int(label))
    return Boxes(np.asarray(xyxy, dtype=np.float32).reshape(-1, 4), np.asarray(labels), 1.0)


class FixedBoxes:
    """A prompter that always answers the same boxes (a user's, or the ground truth's)."""

    uses_embedding = False
    score_threshold = 0.0

    def __init__(self, boxes: Boxes, labels: dict[int, str] | None = None) -> None:
        self.boxes = boxes
        self.labels = labels if labels is not None else {int(v): f"label {v}" for v in boxes.labels}

    def find(self, image: np.ndarray, embedding: object | None = None) -> Boxes:
        return self.boxes
