"""Refining the segmenter's masks with a map prompter's class probabilities.

Two steps, each chosen on tuning data when the prompter is trained (its card's
``refinement``), and both applied per object, so that a box's result never depends on the
other boxes of the plane:

* ``reprompt``: prompt the segmenter again with the tight box of its own mask (a box from
  the map that is too large or too small is corrected by the mask it produced);
* ``min_agreement``: drop an object whose mask disagrees with the map (Dice between the mask
  and the map's class pixels inside the box and mask, below the setting): a box around a fold
  or a specular highlight rarely gives a mask the map agrees with.
"""

from __future__ import annotations

import numpy as np

from automedseg.prompt.components import ClassMaps
from automedseg.segment.base import BoxSegmenter
from automedseg.types import Boxes, Segmentation


def tight_boxes(masks: np.ndarray, boxes: Boxes) -> Boxes:
    """Each mask's tight XYXY box (the prompt box where a mask is empty)."""
    xyxy = boxes.xyxy.copy()
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows):
            xyxy[i] = (cols[0], rows[0], cols[-1], rows[-1])
    return Boxes(xyxy, boxes.labels, boxes.scores)


def reprompted(
    masks: np.ndarray, boxes: Boxes, segmenter: BoxSegmenter
) -> tuple[np.ndarray, Boxes]:
    """(masks, boxes) after prompting the segmenter (already set to the plane) with the tight
    box of each mask."""
    if not len(boxes):
        return masks, boxes
    tight = tight_boxes(masks, boxes)
    return segmenter.predict(tight.xyxy), tight


def agreements(
    masks: np.ndarray, boxes: Boxes, probabilities: np.ndarray, label_values: tuple[int, ...],
    pixel_threshold: float = 0.5,
) -> np.ndarray:  # fmt: skip
    """Per object, the Dice between its mask and its class's map pixels (probability above
    ``pixel_threshold``) inside the region covering its box and its mask; 1.0 when both are
    empty there. ``probabilities`` is (K, H, W) at the masks' resolution."""
    out = np.ones(len(boxes), np.float32)
    height, width = masks.shape[1:] if len(masks) else (0, 0)
    for i, (mask, box, label) in enumerate(zip(masks, boxes.xyxy, boxes.labels, strict=True)):
        x0, y0, x1, y1 = (int(v) for v in box)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows):
            x0, y0 = min(x0, cols[0]), min(y0, rows[0])
            x1, y1 = max(x1, cols[-1]), max(y1, rows[-1])
        region = (slice(max(y0, 0), min(y1 + 1, height)), slice(max(x0, 0), min(x1 + 1, width)))
        mine = mask[region]
        theirs = probabilities[label_values.index(int(label))][region] > pixel_threshold
        total = int(mine.sum()) + int(theirs.sum())
        out[i] = 1.0 if total == 0 else 2.0 * int((mine & theirs).sum()) / total
    return out


def refine(
    seg: Segmentation, maps: ClassMaps, segmenter: BoxSegmenter, settings: dict,
    pixel_threshold: float = 0.5,
) -> Segmentation:  # fmt: skip
    """``seg`` (the segmenter's masks for the prompter's boxes) refined as ``settings`` say
    (``{"reprompt": bool, "min_agreement": float}``, see the module's docstring)."""
    masks, boxes = seg.masks, seg.boxes
    if not len(boxes) or not settings:
        return seg
    if settings.get("reprompt", False):
        masks, boxes = reprompted(masks, boxes, segmenter)
    threshold = float(settings.get("min_agreement", 0.0))
    if threshold > 0.0:
        probabilities = maps.at(masks.shape[1:])
        keep = agreements(masks, boxes, probabilities, maps.label_values, pixel_threshold)
        keep = keep >= threshold
        masks, boxes = masks[keep], Boxes(boxes.xyxy[keep], boxes.labels[keep],
                                          boxes.scores[keep])  # fmt: skip
    return Segmentation(masks, boxes)
