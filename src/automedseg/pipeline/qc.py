"""When not to trust a result: is the input like the task's training images, how stable each
object's mask is, and per-case flags a reviewer can sort by.

* **Domain.** A plane's feature is LiteMedSAM's image embedding averaged over its 64×64
  positions (256 numbers). A task's ``DomainModel`` holds its training planes' mean feature
  and their main directions of spread (PCA); the distance of a plane is its Mahalanobis
  distance in those directions plus the part outside them, scaled so that a training plane
  scores about 1; a volume's or video's is the median over ``VOLUME_PLANES`` evenly spaced
  planes. Above the model's ``threshold`` (calibrated when it is fitted, ``train.domain``)
  the input is ``out_of_domain``.
* **Stability.** A 2D object is segmented again from its box grown and shrunk by ``JITTER``
  on each side; its stability is the mean IoU of those masks with its own. Below
  ``STABLE`` the object is ``low_confidence``.
* **Flags** per case: ``out_of_domain``, ``low_confidence``, ``nothing_found``,
  ``touches_border`` (an object reaching the image's edge: it may continue beyond it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from automedseg.intensity import UnitPlanes, to_unit_range
from automedseg.segment.base import BoxSegmenter
from automedseg.types import Image, Result

JITTER = 0.05
STABLE = 0.85
VOLUME_PLANES = 3


def pooled(embedding: Any) -> np.ndarray:
    """(C,) channel means of an image embedding ((1, C, H, W), numpy or torch)."""
    if hasattr(embedding, "detach"):
        embedding = embedding.detach().float().cpu().numpy()
    array = np.asarray(embedding, np.float64)
    return array.reshape(array.shape[-3], -1).mean(axis=1)


def unit_planes(image: Image, count: int = VOLUME_PLANES) -> list[np.ndarray]:
    """A 2D image in [0, 1], or ``count`` evenly spaced planes of a volume or video, scaled as
    the whole would be (``intensity.UnitPlanes``) without copying the whole."""
    if image.spatial_dims == 2:
        return [to_unit_range(image)]
    planes = UnitPlanes(image)
    return [planes[z] for z in _spaced(image.shape[0], count)]


def plane_features(planes: list[np.ndarray], segmenter: BoxSegmenter) -> list[np.ndarray]:
    """The pooled embedding of each of ``planes`` (in [0, 1])."""
    features = []
    for plane in planes:
        segmenter.set_image(plane)
        features.append(pooled(segmenter.embedding))
    return features


def _spaced(depth: int, count: int) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, depth - 1, count + 2)[1:-1]}) or [0]


@dataclass(frozen=True)
class DomainModel:
    """The spread of a task's training features (see the module's docstring)."""

    mean: np.ndarray
    """(C,) mean feature."""
    directions: np.ndarray
    """(K, C) main directions of spread (unit vectors)."""
    spreads: np.ndarray
    """(K,) standard deviation along each direction."""
    residual: float
    """Root mean square, per feature, of the part of a training feature outside them."""
    threshold: float = float("inf")

    def distance(self, feature: np.ndarray) -> float:
        """About 1 for a typical training image; grows with how far ``feature`` is from them."""
        centred = np.asarray(feature, np.float64) - self.mean
        along = self.directions @ centred
        outside = centred - self.directions.T @ along
        terms = [float(np.mean(outside**2)) / max(self.residual**2, 1e-12)]
        if len(self.spreads):
            terms.append(float(np.mean((along / self.spreads) ** 2)))
        return float(np.sqrt(np.mean(terms)))

    @classmethod
    def fit(cls, features: np.ndarray, components: int = 8) -> DomainModel:
        """The model of training ``features`` (N, C); the threshold is set by calibration."""
        features = np.asarray(features, np.float64)
        mean = features.mean(axis=0)
        centred = features - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        k = int(min(components, len(features) - 1, vt.shape[0]))
        directions = vt[:k]
        spreads = np.maximum(singular[:k] / np.sqrt(max(len(features) - 1, 1)), 1e-9)
        outside = centred - (centred @ directions.T) @ directions
        residual = float(np.sqrt(np.mean(outside**2)))
        return cls(mean, directions, spreads, max(residual, 1e-9))

    def arrays(self) -> dict[str, np.ndarray]:
        """What is stored (``domain.npz``); ``threshold`` goes into the task's card."""
        return {"mean": self.mean, "directions": self.directions, "spreads": self.spreads,
                "residual": np.asarray(self.residual)}  # fmt: skip


@dataclass
class Assessment:
    """What the JSON's ``qc`` says about one result."""

    in_domain: bool | None
    """None when the task has no domain model."""
    domain_distance: float | None
    stability: list[float | None] = field(default_factory=list)
    """Per object (box order); None where not measured (volumes)."""
    flags: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {"in_domain": self.in_domain,
                "domain_distance": None if self.domain_distance is None
                else round(self.domain_distance, 3),
                "flags": list(self.flags)}  # fmt: skip


def stability(plane: np.ndarray, mask: np.ndarray, box: np.ndarray,
              segmenter: BoxSegmenter) -> float:  # fmt: skip
    """Mean IoU of ``mask`` with the masks of ``box`` grown and shrunk by ``JITTER``; the
    segmenter must hold ``plane``'s encoding (it is not encoded again)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = JITTER * (x1 - x0 + 1), JITTER * (y1 - y0 + 1)
    h, w = mask.shape
    boxes = np.array([[x0 - dx, y0 - dy, x1 + dx, y1 + dy], [x0 + dx, y0 + dy, x1 - dx, y1 - dy]])
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    masks = segmenter.predict(boxes.astype(np.float32))
    ious = [(m & mask).sum() / max((m | mask).sum(), 1) for m in masks]
    return float(np.mean(ious))


def assess(
    image: Image,
    result: Result,
    segmenter: BoxSegmenter | None,
    domain: DomainModel | None,
    encoded: bool = False,
) -> Assessment:
    """The quality-control record of ``result`` for ``image``. The segmenter is LiteMedSAM
    (any runtime); ``encoded``: it holds the 2D image's encoding already (it was just
    segmented), so it is not encoded again."""
    flags = []
    distance = None
    dims = image.spatial_dims
    planes = unit_planes(image) if segmenter is not None else []
    if segmenter is not None and dims == 2 and not encoded:
        segmenter.set_image(planes[0])
    if domain is not None and segmenter is not None:
        if dims == 2:
            features = [pooled(segmenter.embedding)]
        else:
            features = plane_features(planes, segmenter)
        distance = float(np.median([domain.distance(f) for f in features]))
        if distance > domain.threshold:
            flags.append("out_of_domain")
    scores: list[float | None] = [None] * len(result.boxes)
    instances = result.instance_map
    if dims == 2 and segmenter is not None and instances is not None and len(result.boxes):
        scores = [stability(planes[0], instances == n, box, segmenter)
                  for n, box in enumerate(result.boxes.xyxy, start=1)]  # fmt: skip
        if any(s < STABLE for s in scores):
            flags.append("low_confidence")
    if not result.label_map.any():
        flags.append("nothing_found")
    elif _touches_border(result.label_map, dims):
        flags.append("touches_border")
    in_domain = None if distance is None else "out_of_domain" not in flags
    return Assessment(in_domain, distance, scores, flags)


def _touches_border(label_map: np.ndarray, dims: int) -> bool:
    planes = label_map[np.newaxis] if dims == 2 else label_map
    return bool(planes[:, 0].any() or planes[:, -1].any() or planes[:, :, 0].any()
                or planes[:, :, -1].any())  # fmt: skip
