"""Wires boxes → segmenter → label map for one image or one slice of a volume."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from automedseg.errors import PromptError
from automedseg.segment.intensity import to_unit_range
from automedseg.types import Boxes, Image, Result, Segmentation


class BoxSegmenter(Protocol):
    """Anything that encodes an image in [0, 1] once and turns boxes into masks."""

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, boxes_xyxy: np.ndarray) -> np.ndarray: ...


def check_boxes(boxes: Boxes, shape_hw: tuple[int, int]) -> Boxes:
    """Boxes validated against an (H, W) image; coordinates equal to W or H are clipped.

    Raises ``PromptError`` for a box with x1 < x0 or y1 < y0, or one reaching outside the image.
    """
    h, w = shape_hw
    for i, (x0, y0, x1, y1) in enumerate(boxes.xyxy.tolist(), start=1):
        where = f"box {i} ({x0:g} {y0:g} {x1:g} {y1:g})"
        if not np.isfinite([x0, y0, x1, y1]).all():
            raise PromptError(f"{where} has a non-finite coordinate")
        if x1 < x0 or y1 < y0:
            raise PromptError(f"{where} is inverted: need x0 <= x1 and y0 <= y1")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise PromptError(f"{where} reaches outside the image of {w}x{h} pixels (W x H)")
    xyxy = boxes.xyxy.copy()
    xyxy[:, [0, 2]] = np.minimum(xyxy[:, [0, 2]], w - 1)
    xyxy[:, [1, 3]] = np.minimum(xyxy[:, [1, 3]], h - 1)
    return Boxes(xyxy, boxes.labels, boxes.scores)


def segment_plane(plane: np.ndarray, boxes: Boxes, segmenter: BoxSegmenter) -> Segmentation:
    """Masks for boxes on one 2D plane already in [0, 1] ((H, W) or (H, W, C))."""
    boxes = check_boxes(boxes, plane.shape[:2])
    segmenter.set_image(plane)
    return Segmentation(segmenter.predict(boxes.xyxy), boxes)


def segment_image(
    image: Image, boxes: Boxes, segmenter: BoxSegmenter, slice_index: int | None = None
) -> Result:
    """Segment the boxes on a 2D image, or on one axial slice (axis 0) of a volume.

    For a volume, ``slice_index`` defaults to the middle slice and the other slices stay 0.
    """
    unit = to_unit_range(image)
    if image.spatial_dims == 2:
        seg = segment_plane(unit, boxes, segmenter)
        return Result(seg.label_map(), seg.boxes)
    depth = image.shape[0]
    z = depth // 2 if slice_index is None else slice_index
    if not 0 <= z < depth:
        raise PromptError(f"slice {z} is outside the volume's {depth} slices (0..{depth - 1})")
    seg = segment_plane(unit[z], boxes, segmenter)
    label_map = np.zeros(image.shape, dtype=seg.label_map().dtype)
    label_map[z] = seg.label_map()
    return Result(label_map, seg.boxes, slice_index=z)
