"""How closely a candidate runtime (e.g. INT8) follows the float32 reference, and how fast.

Both runtimes segment the same planes (2D images in [0, 1]). Per plane, three numbers:

- *same-box Dice*: the candidate's masks for the reference's boxes against the reference's
  masks, label by label: the segmenter's fidelity alone (what oracle prompts would see);
- *automatic Dice*: the candidate's whole automatic pipeline (its own boxes) against the
  reference's label map: what a user of automatic prompts sees;
- the cosine similarity of the two image embeddings.

A plane where both find nothing scores 1; one finding something the other does not scores 0.
No ground truth is needed, so any unlabelled calibration images serve. Where the planes have
masks, the *truth drops* are also measured: the reference's Dice against the masks minus the
candidate's, for its automatic pipeline and for the reference's boxes. They are the budget's
measure then (the Dice drop a user sees, as the acceptance of a runtime is stated), because
agreement with float32 counts every difference as a loss although differences go both ways
against the truth: on Kvasir-SEG one plane in 16 whose box moved cost the INT8 encoder 0.015
of automatic Dice against float32; on the larynx frames the bfloat16 encoder's same-box masks
agreed with float32's at 0.965 only, yet its Dice against the masks did not drop, and on the
validation videos it scored 0.702 / 0.856 (automatic / oracle) against 0.698 / 0.855 of the
float32 OpenVINO set and 0.682 / 0.854 of PyTorch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from automedseg.pipeline import segment_plane
from automedseg.prompt.base import Prompter
from automedseg.types import Segmentation


@dataclass(frozen=True)
class Runtime:
    """A segmenter (``pipeline.BoxSegmenter`` with an ``embedding``) and its prompter."""

    segmenter: Any
    prompter: Prompter


@dataclass(frozen=True)
class Fidelity:
    same_box_dice: float
    """Mean over planes of the same-box Dice (see the module docstring)."""
    auto_dice: float
    """Mean over planes of the automatic label maps' Dice."""
    min_auto_dice: float
    embedding_cosine: float
    """Smallest embedding cosine similarity over the planes."""
    encoder_ms: float
    """Median encoder milliseconds per plane of the candidate."""
    total_ms: float
    """Median milliseconds per plane of the candidate's whole automatic pipeline."""
    planes: int
    truth_drop: float | None = None
    """Reference minus candidate mean automatic Dice against the masks (None without)."""
    same_box_truth_drop: float | None = None
    """Reference minus candidate mean Dice against the masks for the reference's boxes."""

    def drop(self) -> float:
        """The larger Dice loss, same-box and automatic: against the masks where the planes
        have them, else against the reference."""
        if self.truth_drop is not None and self.same_box_truth_drop is not None:
            return max(self.same_box_truth_drop, self.truth_drop)
        return max(1.0 - self.same_box_dice, 1.0 - self.auto_dice)

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}


def label_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the labels present in either map; 1 when both are empty."""
    labels = np.setdiff1d(np.union1d(np.unique(a), np.unique(b)), [0])
    if len(labels) == 0:
        return 1.0
    scores = []
    for value in labels:
        x, y = a == value, b == value
        scores.append(2.0 * float((x & y).sum()) / float(x.sum() + y.sum()))
    return float(np.mean(scores))


def reference_outputs(reference: Runtime, planes: Sequence[np.ndarray]) -> list[tuple]:
    """Per plane: (the reference's Segmentation, its embedding) to compare candidates with."""
    outputs = []
    for plane in planes:
        seg = segment_plane(plane, reference.prompter, reference.segmenter)
        _ensure_encoded(reference, plane, seg)
        outputs.append((seg, _embedding(reference.segmenter)))
    return outputs


def measure(
    candidate: Runtime,
    planes: Sequence[np.ndarray],
    reference: list[tuple],
    truth: Sequence[np.ndarray] | None = None,
) -> Fidelity:
    """The candidate against ``reference_outputs`` of the same planes (and their label maps
    ``truth``, when known)."""
    same, auto, cosines, encoder_ms, total_ms = [], [], [], [], []
    truth_drops, same_truth_drops = [], []
    for i, (plane, (ref_seg, ref_embedding)) in enumerate(zip(planes, reference, strict=True)):
        times: dict[str, float] = {}
        clock = time.perf_counter()
        seg = segment_plane(plane, candidate.prompter, candidate.segmenter, times)
        total_ms.append((time.perf_counter() - clock) * 1000)
        if "encoder" in times and times["encoder"] > 0:
            encoder_ms.append(times["encoder"] * 1000)
        auto.append(label_dice(seg.label_map(), ref_seg.label_map()))
        if truth is not None:
            truth_drops.append(
                label_dice(ref_seg.label_map(), truth[i]) - label_dice(seg.label_map(), truth[i])
            )
        _ensure_encoded(candidate, plane, seg)
        cosines.append(_cosine(_embedding(candidate.segmenter), ref_embedding))
        again = ref_seg.label_map()
        if len(ref_seg.boxes):
            masks = candidate.segmenter.predict(ref_seg.boxes.xyxy)
            again = Segmentation(masks, ref_seg.boxes).label_map()
        same.append(label_dice(again, ref_seg.label_map()))
        if truth is not None:
            same_truth_drops.append(
                label_dice(ref_seg.label_map(), truth[i]) - label_dice(again, truth[i])
            )
    return Fidelity(
        same_box_dice=float(np.mean(same)),
        auto_dice=float(np.mean(auto)),
        min_auto_dice=float(np.min(auto)),
        embedding_cosine=float(np.min(cosines)),
        encoder_ms=float(np.median(encoder_ms)) if encoder_ms else 0.0,
        total_ms=float(np.median(total_ms)),
        planes=len(planes),
        truth_drop=float(np.mean(truth_drops)) if truth is not None else None,
        same_box_truth_drop=float(np.mean(same_truth_drops)) if truth is not None else None,
    )


def _ensure_encoded(runtime: Runtime, plane: np.ndarray, seg: Segmentation) -> None:
    """Encode ``plane`` if ``segment_plane`` skipped the encoder (a prompter that does not read
    the embedding found nothing), so that the embeddings can be compared."""
    if len(seg.boxes) == 0 and not getattr(runtime.prompter, "uses_embedding", False):
        runtime.segmenter.set_image(plane)


def _embedding(segmenter: Any) -> np.ndarray:
    embedding = segmenter.embedding
    return np.asarray(embedding.numpy() if hasattr(embedding, "numpy") else embedding, np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 if norms == 0.0 else float(np.dot(a.ravel(), b.ravel()) / norms)
