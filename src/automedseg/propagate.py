"""Automatic slice-to-slice (or frame-to-frame) propagation with a box-prompted segmenter.

The prompter proposes boxes on every plane along axis 0. The most confident box not yet
explained by an object seeds a new object; the object is segmented on its seed plane and
propagated both ways — the mask on plane k gives the box for plane k ± 1 — until it vanishes
(its mask becomes smaller than ``min_pixels`` or shrinks below ``min_keep`` of the previous
plane). Remaining boxes that no object covers seed further objects (re-seeding where the
prompter finds the object again), down to ``seed_threshold``.

An object is also stopped where the prompter contradicts it: on a plane where the prompter
found boxes but none of the object's label matching it, for more than ``patience`` planes
in a row; those unconfirmed planes are dropped. A plane where the prompter found nothing at all
is no evidence (a prompter that sees an object on a key slice only still has it followed).
This keeps a false box from seeding an object that is then carried through a whole video:
on the larynx sequences every false box (0.88 per frame) did so before.

Where objects overlap the one with the higher seed score wins. Each plane is encoded at most
once when the segmenter can hand back its encoded state (``encoded()`` / ``use()``, as
``LiteMedSAMPredictor`` does), up to ``max_states`` states (about 4 MB each for LiteMedSAM, so
memory stays bounded for a 300-slice CT); planes where the prompter found nothing are not kept
(an object that reaches one has it encoded again).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from automedseg.pipeline import BoxSegmenter
from automedseg.prompt.base import Prompter
from automedseg.types import Boxes, box_iou


@dataclass
class TrackedObject:
    label: int
    seed_plane: int
    seed_score: float
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    """Plane index → (H, W) bool mask."""

    def box_on(self, plane: int) -> np.ndarray | None:
        mask = self.masks.get(plane)
        return None if mask is None else mask_box(mask)


@dataclass
class Propagation:
    """Options; ``run`` does the work."""

    prompter: Prompter | None
    """Proposes boxes on every plane; None when ``seeds`` are given instead."""
    segmenter: BoxSegmenter
    seed_threshold: float | None = None
    """Lowest box score that may seed an object (default: the prompter's threshold)."""
    margin: float = 0.05
    """Box grown by this share of its size (at least 1 pixel) when carried to the next plane."""
    min_pixels: int = 4
    min_keep: float = 0.1
    covered_iou: float = 0.3
    """A box overlapping an object's box on its plane by this IoU is already explained."""
    times: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage ("prompter", "encoder", "decoder"), summed over runs."""
    seeds: dict[int, Boxes] | None = None
    """Boxes given on known planes (a user's), used instead of asking the prompter."""
    patience: int = 2
    """Planes in a row the prompter may contradict an object before it stops there."""
    max_states: int = 64
    """Encoded planes kept for reuse; the least recently used go first."""

    def run(self, planes: np.ndarray) -> tuple[np.ndarray, list[TrackedObject]]:
        """(label map (Z, H, W), objects) for planes in [0, 1] stacked along axis 0."""
        self._planes = planes
        self._encoded: int | None = None
        self._states: OrderedDict[int, object] = OrderedDict()
        self._found: dict[int, list[tuple[np.ndarray, int]]] = {}
        candidates = self._propose()
        threshold = self.seed_threshold
        if threshold is None:
            threshold = float(getattr(self.prompter, "score_threshold", 0.0) or 0.0)
        objects: list[TrackedObject] = []
        for z, box, label, score in candidates:
            if score < threshold or self._covered(objects, z, box, label):
                continue
            obj = TrackedObject(label, z, score)
            mask = self._segment(z, box)
            if mask.sum() < self.min_pixels:
                continue
            obj.masks[z] = mask
            for step in (-1, 1):
                self._follow(obj, z, step)
            objects.append(obj)
        return self._label_map(objects), objects

    def _propose(self) -> list[tuple[int, np.ndarray, int, float]]:
        """All prompter boxes as (plane, box, label, score), most confident first."""
        if self.seeds is not None:
            return [
                (z, xyxy, int(label), float(score))
                for z, boxes in self.seeds.items()
                for xyxy, label, score in zip(boxes.xyxy, boxes.labels, boxes.scores, strict=True)
            ]
        found = []
        uses_embedding = getattr(self.prompter, "uses_embedding", False)
        for z, plane in enumerate(self._planes):
            if uses_embedding:
                self._encode(z)
                start = time.perf_counter()
                boxes = self.prompter.find(plane, self.segmenter.embedding)
            else:
                start = time.perf_counter()
                boxes = self.prompter.find(plane)
            self._add("prompter", start)
            self._found[z] = list(zip(boxes.xyxy, boxes.labels.tolist(), strict=True))
            if not self._found[z]:
                self._states.pop(z, None)  # nothing here to seed: free its embedding
            found += [
                (z, xyxy, int(label), float(score))
                for xyxy, label, score in zip(boxes.xyxy, boxes.labels, boxes.scores, strict=True)
            ]
        return sorted(found, key=lambda c: -c[3])

    def _covered(self, objects, z, box, label) -> bool:
        for obj in objects:
            other = obj.box_on(z)
            if obj.label == label and other is not None:
                if box_iou(box[None], other[None])[0, 0] >= self.covered_iou:
                    return True
        return False

    def _follow(self, obj: TrackedObject, start: int, step: int) -> None:
        previous = obj.masks[start]
        z = start + step
        unconfirmed: list[int] = []
        while 0 <= z < len(self._planes) and z not in obj.masks:
            box = grow(mask_box(previous), self.margin, previous.shape)
            mask = self._segment(z, box)
            area = int(mask.sum())
            if area < self.min_pixels or area < self.min_keep * previous.sum():
                return
            obj.masks[z] = mask
            if self._contradicted(z, obj.label, mask):
                unconfirmed.append(z)
                if len(unconfirmed) > self.patience:
                    for plane in unconfirmed:
                        del obj.masks[plane]
                    return
            else:
                unconfirmed.clear()
            previous, z = mask, z + step

    def _contradicted(self, z: int, label: int, mask: np.ndarray) -> bool:
        """Whether the prompter found boxes on plane z but none of ``label`` that matches the
        mask's box (IoU at least ``covered_iou``; an object that spreads over a larger region
        than any box found there is contradicted too)."""
        found = self._found.get(z)
        if not found:
            return False
        box = mask_box(mask)
        return not any(
            other_label == label and box_iou(box[None], other[None])[0, 0] >= self.covered_iou
            for other, other_label in found
        )

    def _encode(self, z: int) -> None:
        if self._encoded == z:
            return
        if z in self._states:
            self.segmenter.use(self._states[z])
            self._states.move_to_end(z)
        else:
            start = time.perf_counter()
            self.segmenter.set_image(self._planes[z])
            self._add("encoder", start)
            if hasattr(self.segmenter, "encoded"):
                self._states[z] = self.segmenter.encoded()
                while len(self._states) > self.max_states:
                    self._states.popitem(last=False)
        self._encoded = z

    def _segment(self, z: int, box: np.ndarray) -> np.ndarray:
        self._encode(z)
        start = time.perf_counter()
        mask = self.segmenter.predict(np.asarray(box, np.float32)[None])[0]
        self._add("decoder", start)
        return mask

    def _add(self, stage: str, start: float) -> None:
        self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - start

    def _label_map(self, objects: list[TrackedObject]) -> np.ndarray:
        return paint(objects, [o.label for o in objects], self._planes.shape[:3])


def paint(objects: list[TrackedObject], values: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """A map of ``values[i]`` over object i's masks; the higher seed score wins overlaps."""
    out = np.zeros(shape, dtype=np.uint16)
    for i in sorted(range(len(objects)), key=lambda i: objects[i].seed_score):
        for z, mask in objects[i].masks.items():
            out[z][mask] = values[i]
    return out.astype(np.uint8) if out.max(initial=0) < 256 else out


def mask_box(mask: np.ndarray) -> np.ndarray:
    """XYXY inclusive box of a non-empty (H, W) mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def grow(box: np.ndarray, margin: float, shape_hw: tuple[int, int]) -> np.ndarray:
    """The box enlarged by ``margin`` of its size (at least 1 pixel) on each side, clipped."""
    x0, y0, x1, y1 = box
    dx = max(1.0, margin * (x1 - x0 + 1))
    dy = max(1.0, margin * (y1 - y0 + 1))
    h, w = shape_hw
    return np.array(
        [max(0, x0 - dx), max(0, y0 - dy), min(w - 1, x1 + dx), min(h - 1, y1 + dy)], np.float32
    )


def boxes_of(objects: list[TrackedObject]) -> tuple[Boxes, np.ndarray]:
    """Each object's seed box, label and score, and its seed plane (for reports)."""
    xyxy = [o.box_on(o.seed_plane) for o in objects]
    boxes = Boxes(
        np.asarray(xyxy, np.float32).reshape(-1, 4),
        np.asarray([o.label for o in objects], int),
        np.asarray([o.seed_score for o in objects], np.float32),
    )
    return boxes, np.asarray([o.seed_plane for o in objects], int)
