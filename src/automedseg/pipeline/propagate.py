"""Automatic slice-to-slice (or frame-to-frame) propagation with a box-prompted segmenter.

The prompter proposes boxes on every plane along axis 0. The most confident box not yet
explained by an object seeds a new object; the object is segmented on its seed plane and
propagated both ways — the mask on plane k gives the box for plane k ± 1 — until it vanishes
(its mask becomes smaller than ``min_pixels`` or shrinks below ``min_keep`` of the previous
plane). Remaining boxes that no object covers seed further objects (re-seeding where the
prompter finds the object again), down to ``seed_threshold``.

On every plane the prompter has a say. Where it found a box of the object's label matching
the carried box (IoU ≥ ``covered_iou``), that box prompts the segmenter instead (``snap``):
the carried box, grown by ``margin`` on every plane, otherwise drifts and the mask grows with
it. Where it found boxes but none matching, it contradicts the object; after more than
``patience`` contradictions since the prompter last confirmed the object, the object stops and
the planes since that confirmation are dropped. A plane where the prompter found nothing at all
is no evidence (a prompter that sees an object on a key slice only still has it followed), but
a mask that grows to more than ``max_growth`` times its area on the last confirmed plane ends
the object there. On the held-out larynx sequences snapping was what made propagation
nearly as good as prompting every frame on its own (README, "Accuracy and speed").

With ``follow`` off, each plane is segmented from the prompter's own boxes there, as a 2D
image would be. Whether snapping or following helps depends on the task; a prompter's card
may carry the settings chosen on its tuning cases (``train.propagation``), which
``settings_of`` hands to ``Propagation``.

Where objects overlap the one with the higher seed score wins. Each plane is encoded at most
once when the segmenter can hand back its encoded state (``encoded()`` / ``use()``, as
``LiteMedSAMPredictor`` does), up to ``max_states`` states (about 4 MB each for LiteMedSAM, so
memory stays bounded for a 300-slice CT); planes where the prompter found nothing are not kept
(an object that reaches one has it encoded again).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from automedseg.intensity import UnitPlanes
from automedseg.prompt.base import Prompter
from automedseg.segment.base import BoxSegmenter
from automedseg.types import Boxes, box_iou

ENCODE_CHUNK = 8
"""Planes encoded together for a prompter that reads the embedding (2 OpenVINO streams stay
busy; 8 LiteMedSAM embeddings are 32 MB)."""


@dataclass(frozen=True)
class Crop:
    """A non-empty mask kept as the contents of its bounding box: a full 512×512 plane would
    take 256 KB per object and plane, a CT's worth of them gigabytes."""

    y0: int
    x0: int
    inside: np.ndarray
    """(h, w) bool: the mask within its box."""

    @classmethod
    def of(cls, mask: np.ndarray) -> Crop:
        x0, y0, x1, y1 = (int(v) for v in mask_box(mask))
        return cls(y0, x0, mask[y0 : y1 + 1, x0 : x1 + 1].copy())

    @property
    def area(self) -> int:
        return int(self.inside.sum())

    def box(self) -> np.ndarray:
        h, w = self.inside.shape
        return np.array([self.x0, self.y0, self.x0 + w - 1, self.y0 + h - 1], np.float32)

    def paint(self, plane: np.ndarray, value: int) -> None:
        h, w = self.inside.shape
        plane[self.y0 : self.y0 + h, self.x0 : self.x0 + w][self.inside] = value


@dataclass
class TrackedObject:
    label: int
    seed_plane: int
    seed_score: float
    masks: dict[int, Crop] = field(default_factory=dict)
    """Plane index → the object's mask there."""

    def box_on(self, plane: int) -> np.ndarray | None:
        mask = self.masks.get(plane)
        return None if mask is None else mask.box()


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
    """Planes the prompter may contradict an object, since it last confirmed it, before the
    object stops there."""
    max_states: int = 64
    """Encoded planes kept for reuse; the least recently used go first."""
    snap: bool = True
    """Prompt with the prompter's matching box on a plane, where it found one, instead of the
    box carried from the previous plane (stops drift)."""
    snap_iou: float = 0.3
    """How well the prompter's box must match the carried box (IoU) to be snapped to."""
    max_growth: float | None = 2.0
    """A plane without a matching prompter box whose mask is more than this times the area on
    the object's last matched plane (or seed) ends the object there: a mask leaking into its
    surroundings, a box that grows by ``margin`` on every plane. None: no limit."""
    follow: bool = True
    """Follow each object to the neighbouring planes; False segments every plane on its own
    from the prompter's boxes there (a prompter good on every frame may need no following)."""
    on_progress: Callable[[str, int, int], None] | None = None
    """Called as (stage, planes done, planes in all) after each plane the prompter reads
    ("prompting") and each plane encoded for the segmenter ("segmenting"); the planes encoded
    for a prompter that reads the embedding count as prompting."""

    def run(self, planes: np.ndarray | UnitPlanes) -> tuple[np.ndarray, list[TrackedObject]]:
        """(label map (Z, H, W), objects) for planes in [0, 1] along axis 0: an array, or
        ``UnitPlanes`` scaling each plane when it is read."""
        self._planes = planes
        self._encodings = 0
        self._encoding_for_prompter = False
        self._encoded: int | None = None
        self._states: OrderedDict[int, object] = OrderedDict()
        self._found: dict[int, list[tuple[np.ndarray, int]]] = {}
        candidates = self._propose()
        self._encode_found()
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
            obj.masks[z] = Crop.of(mask)
            for step in (-1, 1) if self.follow else ():
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
        for z, boxes in self._prompted():
            self._found[z] = list(zip(boxes.xyxy, boxes.labels.tolist(), strict=True))
            self._report("prompting", z + 1)
            if not self._found[z]:
                self._states.pop(z, None)  # nothing here to seed: free its embedding
            found += [
                (z, xyxy, int(label), float(score))
                for xyxy, label, score in zip(boxes.xyxy, boxes.labels, boxes.scores, strict=True)
            ]
        return sorted(found, key=lambda c: -c[3])

    def _prompted(self) -> Iterator[tuple[int, Boxes]]:
        """(plane, the prompter's boxes there) for every plane in order. A prompter that reads
        the segmenter's embedding has the planes encoded first, ``ENCODE_CHUNK`` at a time when
        the segmenter can (``encode_many``: OpenVINO runs several planes at once)."""
        if not getattr(self.prompter, "uses_embedding", False):
            for z, plane in enumerate(self._planes):
                start = time.perf_counter()
                boxes = self.prompter.find(plane)
                self._add("prompter", start)
                yield z, boxes
            return
        chunk = min(ENCODE_CHUNK, self.max_states) if hasattr(self.segmenter, "encode_many") else 1
        count = len(self._planes)
        self._encoding_for_prompter = True  # one progress stage: "prompting"
        try:
            for first in range(0, count, chunk):
                planes = {z: self._planes[z] for z in range(first, min(first + chunk, count))}
                if chunk > 1:
                    self._encode_together(planes)
                for z, plane in planes.items():
                    self._encode(z)
                    start = time.perf_counter()
                    boxes = self.prompter.find(plane, self.segmenter.embedding)
                    self._add("prompter", start)
                    yield z, boxes
        finally:
            self._encoding_for_prompter = False

    def _encode_found(self) -> None:
        """Encode the planes where the prompter found boxes (the ones objects start from and
        mostly run through) together, if not encoded yet. At most ``max_states`` planes; the
        rest as reached."""
        wanted = [z for z in sorted(self._found) if self._found[z] and z not in self._states]
        wanted = wanted[: max(0, self.max_states - len(self._states))]
        if len(wanted) >= 2 and hasattr(self.segmenter, "encode_many"):  # else read as reached
            self._encode_together({z: self._planes[z] for z in wanted})

    def _encode_together(self, planes: dict[int, np.ndarray]) -> None:
        """Encode ``planes`` (plane index → plane) in one ``encode_many`` call of the segmenter
        and keep their states."""
        start = time.perf_counter()
        states = self.segmenter.encode_many(list(planes.values()))
        self._add("encoder", start)
        for z, state in zip(planes, states, strict=True):
            self._states[z] = state
        while len(self._states) > self.max_states:
            self._states.popitem(last=False)
        self._encodings += len(planes)
        self._report("segmenting", self._encodings)

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
        pending: list[int] = []  # planes since the prompter last confirmed the object
        contradictions = 0
        anchor = previous.area
        while 0 <= z < len(self._planes) and z not in obj.masks:
            box = grow(previous.box(), self.margin, self._planes.shape[1:3])
            detected = self._match(z, obj.label, box, self.snap_iou) if self.snap else None
            mask = self._segment(z, box if detected is None else detected)
            area = int(mask.sum())
            if area < self.min_pixels or area < self.min_keep * previous.area:
                return
            if detected is not None:
                anchor = area
            elif self.max_growth is not None and area > self.max_growth * anchor:
                return
            obj.masks[z] = Crop.of(mask)
            evidence = self._evidence(z, obj.label, obj.masks[z].box())
            if evidence == "confirmed":
                pending.clear()
                contradictions = 0
            else:
                pending.append(z)
                contradictions += evidence == "contradicted"
                if contradictions > self.patience:
                    for plane in pending:
                        del obj.masks[plane]
                    return
            previous, z = obj.masks[z], z + step

    def _match(self, z: int, label: int, box: np.ndarray, least: float) -> np.ndarray | None:
        """The prompter's box of ``label`` on plane z that best overlaps ``box`` (IoU at least
        ``least``), if any."""
        best, best_iou = None, least
        for other, other_label in self._found.get(z, []):
            if other_label == label:
                iou = float(box_iou(box[None], other[None])[0, 0])
                if iou >= best_iou:
                    best, best_iou = other, iou
        return best

    def _evidence(self, z: int, label: int, box: np.ndarray) -> str:
        """What the prompter says about an object with mask ``box`` on plane z: "confirmed"
        (a box of ``label`` matching it, IoU at least ``covered_iou``), "contradicted" (boxes,
        but none that matches: an object spreading over a larger region than any box found
        there is contradicted too) or "silent" (nothing found on the plane)."""
        found = self._found.get(z)
        if not found:
            return "silent"
        matched = any(
            other_label == label and box_iou(box[None], other[None])[0, 0] >= self.covered_iou
            for other, other_label in found
        )
        return "confirmed" if matched else "contradicted"

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
            self._encodings += 1
            self._report("segmenting", self._encodings)
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

    def _report(self, stage: str, done: int) -> None:
        if stage == "segmenting" and self._encoding_for_prompter:
            return  # part of prompting: two alternating stages would make two jumpy bars
        if self.on_progress is not None:
            self.on_progress(stage, done, len(self._planes))

    def _add(self, stage: str, start: float) -> None:
        self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - start

    def _label_map(self, objects: list[TrackedObject]) -> np.ndarray:
        return paint(objects, [o.label for o in objects], self._planes.shape[:3])


def paint(objects: list[TrackedObject], values: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """A map of ``values[i]`` over object i's masks; the higher seed score wins overlaps."""
    out = np.zeros(shape, dtype=np.uint8 if max(values, default=0) < 256 else np.uint16)
    for i in sorted(range(len(objects)), key=lambda i: objects[i].seed_score):
        for z, mask in objects[i].masks.items():
            mask.paint(out[z], values[i])
    return out


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


def settings_of(prompter: object) -> dict:
    """The propagation settings a prompter brings from its card (none: the defaults)."""
    return dict(getattr(prompter, "propagation", None) or {})
