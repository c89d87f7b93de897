"""MedSAM2 / SAM2.1 as a pipeline: a prompter seeds each object on a few frames, SAM2's memory
carries it through the whole video or volume (``segment.medsam2.track_boxes``).

Contracts as in ``segment.medsam2``: frames ``(T, H, W)`` or ``(T, H, W, 3)`` in [0, 1], axis 0
= a volume's slices or a video's frames; boxes XYXY inclusive pixels of a frame.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from automedseg.errors import AutomedsegError, PromptError
from automedseg.intensity import to_unit_range
from automedseg.prompt.base import Prompter
from automedseg.prompt.oracle import FixedBoxes
from automedseg.segment.base import BoxSegmenter
from automedseg.segment.medsam2 import NAME, track_boxes
from automedseg.types import Boxes, Image, Result, box_iou, check_boxes

if TYPE_CHECKING:
    import torch


def find_seeds(
    frames: np.ndarray,
    prompter: Prompter,
    embedder: BoxSegmenter | None = None,
    stride: int = 4,
    link_iou: float = 0.1,
    times: dict[str, float] | None = None,
) -> tuple[dict[int, Boxes], list[int]]:
    """Seed boxes for ``track_boxes`` from a prompter run on every ``stride``-th frame.

    A prompter with ``uses_embedding`` (the LiteMedSAM head) gets the ``embedder``'s embedding
    of each of those frames (a ``LiteMedSAMPredictor``, used for prompting only). Boxes of one
    label on consecutive prompted frames that overlap by ``link_iou`` are taken as one object,
    which is seeded on the frame where its box scores highest. Returns the seeds (frame →
    boxes, scores kept) and, per object in seed order, its frame.
    """
    uses_embedding = getattr(prompter, "uses_embedding", False)
    if uses_embedding and embedder is None:
        raise AutomedsegError("this prompter needs LiteMedSAM's embedding: pass an embedder")
    times = {} if times is None else times
    tracks: list[list[tuple[int, np.ndarray, int, float]]] = []
    open_tracks: list[int] = []  # indices of tracks that reached the previous prompted frame
    for z in range(0, len(frames), max(1, stride)):
        start = time.perf_counter()
        if uses_embedding:
            embedder.set_image(frames[z])
            times["prompt_encoder"] = times.get("prompt_encoder", 0.0) + _lap(start)
            start = time.perf_counter()
            boxes = prompter.find(frames[z], embedder.embedding)
        else:
            boxes = prompter.find(frames[z])
        times["prompter"] = times.get("prompter", 0.0) + _lap(start)
        boxes = check_boxes(boxes, frames.shape[1:3])
        extended: list[int] = []
        for i in np.argsort(-boxes.scores, kind="stable"):
            box, label, score = boxes.xyxy[i], int(boxes.labels[i]), float(boxes.scores[i])
            best, best_iou = None, link_iou
            for t in open_tracks:
                _, last_box, last_label, _ = tracks[t][-1]
                if t in extended or last_label != label:
                    continue
                iou = float(box_iou(box[None], last_box[None])[0, 0])
                if iou >= best_iou:
                    best, best_iou = t, iou
            if best is None:
                tracks.append([])
                best = len(tracks) - 1
            tracks[best].append((z, box, label, score))
            extended.append(best)
        open_tracks = extended
    seeds: dict[int, list[tuple[np.ndarray, int, float]]] = {}
    for track in tracks:
        z, box, label, score = max(track, key=lambda entry: entry[3])
        seeds.setdefault(z, []).append((box, label, score))
    out = {
        z: Boxes(
            np.array([b for b, _, _ in found], np.float32),
            np.array([lab for _, lab, _ in found]),
            np.array([s for _, _, s in found], np.float32),
        )
        for z, found in sorted(seeds.items())
    }
    return out, [z for z, boxes in out.items() for _ in range(len(boxes))]


def segment_image_sam2(
    image: Image,
    prompter: Prompter,
    model: torch.nn.Module,
    slice_index: int | None = None,
    embedder: BoxSegmenter | None = None,
    prompt_stride: int = 4,
    progress: bool = False,
    times: dict[str, float] | None = None,
) -> Result:
    """``pipeline.image.segment_image`` with SAM2's memory instead of slice-to-slice boxes.

    A volume or video is segmented along axis 0; a 2D image is a one-frame video. Fixed boxes
    (``prompt.oracle.FixedBoxes``) seed their objects on ``slice_index`` (default: the middle
    slice; frame 0 of a 2D image); any other prompter finds the seeds (see ``find_seeds``).
    Seconds per stage are added to ``times`` when given.
    """
    unit = to_unit_range(image)
    frames = unit[None] if image.spatial_dims == 2 else unit
    depth = len(frames)
    times = {} if times is None else times
    if isinstance(prompter, FixedBoxes):
        z = (depth // 2 if slice_index is None else slice_index) if image.spatial_dims == 3 else 0
        if not 0 <= z < depth:
            raise PromptError(f"slice {z} is outside the volume's {depth} slices (0..{depth - 1})")
        boxes = check_boxes(prompter.boxes, frames.shape[1:3])
        seeds, seed_frames = {z: boxes}, [z] * len(boxes)
    else:
        seeds, seed_frames = find_seeds(frames, prompter, embedder, prompt_stride, times=times)
    tracking = track_boxes(model, frames, seeds, progress)
    for stage, seconds in tracking.times.items():
        times[stage] = times.get(stage, 0.0) + seconds
    boxes = Boxes.concat([seeds[z] for z in sorted(seeds)])
    if image.spatial_dims == 2:
        return Result(
            tracking.label_map[0], boxes, instance_map=tracking.instance_map[0], segmenter=NAME
        )
    return Result(
        tracking.label_map,
        boxes,
        box_slices=np.asarray(seed_frames, int),
        instance_map=tracking.instance_map,
        segmenter=NAME,
    )


def _lap(start: float) -> float:
    return time.perf_counter() - start
