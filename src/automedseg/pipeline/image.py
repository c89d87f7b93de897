"""Prompter → segmenter → label map for one 2D image, or along axis 0 of a volume or video."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from automedseg.errors import PromptError
from automedseg.intensity import UnitPlanes, to_unit_range
from automedseg.pipeline.propagate import Propagation, boxes_of, paint, settings_of
from automedseg.pipeline.refine import refine
from automedseg.prompt.base import Prompter
from automedseg.prompt.oracle import FixedBoxes
from automedseg.segment.base import BoxSegmenter
from automedseg.types import Boxes, Image, Result, Segmentation, check_boxes


def segment_plane(
    plane: np.ndarray, prompter: Prompter, segmenter: BoxSegmenter, times: dict | None = None
) -> Segmentation:
    """Prompt and segment one 2D plane already in [0, 1] ((H, W) or (H, W, C)).

    A prompter that reads the segmenter's embedding runs after the encoder; any other runs
    first, and a plane where it finds nothing skips the encoder. A prompter that also gives
    its class maps (``find_with_maps``) has the masks refined with them as its
    ``refinement`` says (``pipeline.refine``). Seconds spent per stage are
    added to ``times`` ("prompter", "encoder", "decoder") when given.
    """
    clock = time.perf_counter()
    stages = {"prompter": 0.0, "encoder": 0.0, "decoder": 0.0}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[stage] += now - clock
        clock = now

    maps = None
    if getattr(prompter, "uses_embedding", False):
        segmenter.set_image(plane)
        lap("encoder")
        boxes = prompter.find(plane, segmenter.embedding)
        lap("prompter")
    else:
        if hasattr(prompter, "find_with_maps"):
            boxes, maps = prompter.find_with_maps(plane)
        else:
            boxes = prompter.find(plane)
        lap("prompter")
        if len(boxes):
            segmenter.set_image(plane)
            lap("encoder")
    boxes = check_boxes(boxes, plane.shape[:2])
    if len(boxes):
        seg = Segmentation(segmenter.predict(boxes.xyxy), boxes)
        if maps is not None and getattr(prompter, "refinement", None):
            seg = refine(seg, maps, segmenter, prompter.refinement, prompter.pixel_threshold)
        lap("decoder")
    else:
        seg = Segmentation(np.zeros((0, *plane.shape[:2]), dtype=bool), boxes)
    if times is not None:
        for stage, seconds in stages.items():
            times[stage] = times.get(stage, 0.0) + seconds
    return seg


def segment_image(
    image: Image,
    prompter: Prompter,
    segmenter: BoxSegmenter,
    slice_index: int | None = None,
    propagate: bool = True,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> Result:
    """Segment a 2D image, or a volume along axis 0.

    With ``propagate``, objects are seeded by the prompter's best boxes (or by fixed boxes on
    slice ``slice_index``) and followed slice to slice (see ``propagate``). Without it, only
    slice ``slice_index`` is segmented when given, else every slice is prompted on its own.
    ``on_progress(stage, planes done, planes)`` follows a volume's planes."""
    if image.spatial_dims == 2:
        seg = segment_plane(to_unit_range(image), prompter, segmenter)
        return Result(seg.label_map(), seg.boxes, instance_map=seg.instance_map())
    unit = UnitPlanes(image)  # each plane scaled when read: no float32 copy of the volume
    depth = image.shape[0]
    if slice_index is not None and not 0 <= slice_index < depth:
        raise PromptError(
            f"slice {slice_index} is outside the volume's {depth} slices (0..{depth - 1})"
        )
    if propagate and (slice_index is None or isinstance(prompter, FixedBoxes)):
        if slice_index is None:
            propagation = Propagation(prompter, segmenter, **settings_of(prompter),
                                      on_progress=on_progress)  # fmt: skip
        else:  # a user's boxes on one slice seed objects that are followed through the volume
            boxes = check_boxes(prompter.boxes, unit.shape[1:3])
            propagation = Propagation(None, segmenter, seeds={slice_index: boxes},
                                      on_progress=on_progress)  # fmt: skip
        label_map, objects = propagation.run(unit)
        boxes, seed_slices = boxes_of(objects)
        instances = paint(objects, list(range(1, len(objects) + 1)), label_map.shape)
        return Result(label_map, boxes, box_slices=seed_slices, instance_map=instances)
    label_map = np.zeros(image.shape, dtype=np.uint16)
    found = []
    for z in range(depth) if slice_index is None else [slice_index]:
        seg = segment_plane(unit[z], prompter, segmenter)
        label_map[z] = seg.label_map()
        if on_progress is not None:
            on_progress("segmenting", len(found) + 1, depth)
        found.append((z, seg.boxes))
    boxes = Boxes.concat([b for _, b in found])
    slices = np.concatenate([np.full(len(b), z) for z, b in found]) if found else np.zeros(0)
    return Result(_smallest_dtype(label_map), boxes, slice_index=slice_index, box_slices=slices)


def _smallest_dtype(label_map: np.ndarray) -> np.ndarray:
    return label_map.astype(np.uint8) if label_map.max(initial=0) < 256 else label_map
