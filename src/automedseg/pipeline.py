"""Wires prompter → segmenter → label map for one image, or slice by slice for a volume."""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from automedseg.errors import PromptError
from automedseg.prompt.base import Prompter
from automedseg.segment.intensity import to_unit_range
from automedseg.types import Boxes, Image, Result, Segmentation


class BoxSegmenter(Protocol):
    """Anything that encodes an image in [0, 1] once and turns boxes into masks."""

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, boxes_xyxy: np.ndarray) -> np.ndarray: ...


class FixedBoxes:
    """A prompter that always answers the same boxes (a user's, or the ground truth's)."""

    uses_embedding = False

    def __init__(self, boxes: Boxes) -> None:
        self.boxes = boxes

    def find(self, image: np.ndarray, embedding: object | None = None) -> Boxes:
        return self.boxes


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


def segment_plane(
    plane: np.ndarray, prompter: Prompter, segmenter: BoxSegmenter, times: dict | None = None
) -> Segmentation:
    """Prompt and segment one 2D plane already in [0, 1] ((H, W) or (H, W, C)).

    A prompter that reads the segmenter's embedding runs after the encoder; any other runs
    first, and a plane where it finds nothing skips the encoder. Seconds spent per stage are
    added to ``times`` ("prompter", "encoder", "decoder") when given.
    """
    clock = time.perf_counter()
    stages = {"prompter": 0.0, "encoder": 0.0, "decoder": 0.0}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[stage] += now - clock
        clock = now

    if getattr(prompter, "uses_embedding", False):
        segmenter.set_image(plane)
        lap("encoder")
        boxes = prompter.find(plane, segmenter.embedding)
        lap("prompter")
    else:
        boxes = prompter.find(plane)
        lap("prompter")
        if len(boxes):
            segmenter.set_image(plane)
            lap("encoder")
    boxes = check_boxes(boxes, plane.shape[:2])
    if len(boxes):
        masks = segmenter.predict(boxes.xyxy)
        lap("decoder")
    else:
        masks = np.zeros((0, *plane.shape[:2]), dtype=bool)
    if times is not None:
        for stage, seconds in stages.items():
            times[stage] = times.get(stage, 0.0) + seconds
    return Segmentation(masks, boxes)


def segment_image(
    image: Image,
    prompter: Prompter,
    segmenter: BoxSegmenter,
    slice_index: int | None = None,
    propagate: bool = True,
) -> Result:
    """Segment a 2D image, or a volume along axis 0.

    With ``propagate``, objects are seeded by the prompter's best boxes (or by fixed boxes on
    slice ``slice_index``) and followed slice to slice (see ``propagate``). Without it, only
    slice ``slice_index`` is segmented when given, else every slice is prompted on its own."""
    unit = to_unit_range(image)
    if image.spatial_dims == 2:
        seg = segment_plane(unit, prompter, segmenter)
        return Result(seg.label_map(), seg.boxes, instance_map=seg.instance_map())
    depth = image.shape[0]
    if slice_index is not None and not 0 <= slice_index < depth:
        raise PromptError(
            f"slice {slice_index} is outside the volume's {depth} slices (0..{depth - 1})"
        )
    if propagate and (slice_index is None or isinstance(prompter, FixedBoxes)):
        from automedseg.propagate import Propagation, boxes_of, paint, settings_of

        if slice_index is None:
            propagation = Propagation(prompter, segmenter, **settings_of(prompter))
        else:  # a user's boxes on one slice seed objects that are followed through the volume
            boxes = check_boxes(prompter.boxes, unit.shape[1:3])
            propagation = Propagation(None, segmenter, seeds={slice_index: boxes})
        label_map, objects = propagation.run(unit)
        boxes, seed_slices = boxes_of(objects)
        instances = paint(objects, list(range(1, len(objects) + 1)), label_map.shape)
        return Result(label_map, boxes, box_slices=seed_slices, instance_map=instances)
    label_map = np.zeros(image.shape, dtype=np.uint16)
    found = []
    for z in range(depth) if slice_index is None else [slice_index]:
        seg = segment_plane(unit[z], prompter, segmenter)
        label_map[z] = seg.label_map()
        found.append((z, seg.boxes))
    boxes = Boxes.concat([b for _, b in found])
    slices = np.concatenate([np.full(len(b), z) for z, b in found]) if found else np.zeros(0)
    return Result(_smallest_dtype(label_map), boxes, slice_index=slice_index, box_slices=slices)


def _smallest_dtype(label_map: np.ndarray) -> np.ndarray:
    return label_map.astype(np.uint8) if label_map.max(initial=0) < 256 else label_map
