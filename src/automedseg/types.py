"""The small data types every layer shares.

Contracts, written once:

* **Arrays** are stored with the slowest axis first: a 2D image is ``(H, W)`` or
  ``(H, W, C)``; a volume is ``(Z, Y, X)`` or ``(Z, Y, X, C)``. ``Image.spatial_dims``
  says which, so a 3-slice volume is never mistaken for an RGB picture.
* **Geometry** follows NIfTI: ``affine`` maps a voxel index ``(x, y, z, 1)`` — that is
  ``(i, j, k)``, the array index reversed — to RAS+ world coordinates in millimetres.
  Spacing is reported in array order ``(z, y, x)`` (2D: ``(y, x)``).
* **Boxes** are XYXY in pixels of the original image (of one slice for volumes):
  ``(x0, y0)`` is the top-left pixel of the object, ``(x1, y1)`` its bottom-right pixel,
  both inclusive, as in MedSAM's training boxes.
* **Masks** are boolean arrays with the image's spatial shape; a **label map** is an
  integer array with 0 = background.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from automedseg.errors import PromptError


@dataclass(frozen=True)
class Geometry:
    """Voxel-to-world mapping (NIfTI convention, RAS+, mm)."""

    affine: np.ndarray = field(default_factory=lambda: np.eye(4))

    def __post_init__(self) -> None:
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {affine.shape}")
        object.__setattr__(self, "affine", affine)

    @classmethod
    def from_spacing(cls, spacing_zyx: tuple[float, ...]) -> Geometry:
        """Axis-aligned geometry with the given spacing in array order (z, y, x) or (y, x)."""
        spacing_xyz = tuple(reversed([float(s) for s in spacing_zyx]))
        diagonal = list(spacing_xyz) + [1.0] * (3 - len(spacing_xyz)) + [1.0]
        return cls(np.diag(diagonal))

    def spacing(self, spatial_dims: int = 3) -> tuple[float, ...]:
        """Voxel size in mm, in array order: (z, y, x) for volumes, (y, x) for 2D."""
        xyz = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(s) for s in reversed(xyz[:spatial_dims]))


@dataclass
class Image:
    """A 2D image or a 3D volume as an array, with where it came from."""

    array: np.ndarray
    spatial_dims: int
    geometry: Geometry = field(default_factory=Geometry)
    modality: str = "OT"
    """DICOM-style modality: "CT", "MR", "XR" (radiograph), "US", "RGB" (photo/endoscopy), "OT"."""
    window: tuple[float, float] | None = None
    """(center, width) to display/normalise intensities, e.g. from DICOM WindowCenter/Width."""
    source: Path | None = None
    frame_names: list[str] | None = None
    """For a video or a folder of frames (axis 0 = time): each frame's name, e.g. '0007' or
    'frame_000123'; None for a 2D image or a volume."""
    source_files: list[Path] | None = None
    """For DICOM input, the files read: a series' files in the order of axis 0 (slice z is
    ``source_files[z]``), or the one file of a 2D or multi-frame image; else None."""
    spacing_known: bool = True
    """False when the file gives no pixel size (a PNG/JPEG, a video, DICOM without
    PixelSpacing): ``geometry`` then assumes 1 mm and sizes are reported in pixels."""

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.array.ndim not in (self.spatial_dims, self.spatial_dims + 1):
            raise ValueError(
                f"a {self.spatial_dims}D image needs a {self.spatial_dims}- or "
                f"{self.spatial_dims + 1}-dimensional array, got shape {self.array.shape}"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape: (H, W) or (Z, Y, X)."""
        return tuple(self.array.shape[: self.spatial_dims])

    @property
    def channels(self) -> int:
        return 1 if self.array.ndim == self.spatial_dims else int(self.array.shape[-1])


@dataclass(frozen=True)
class Boxes:
    """N boxes, XYXY inclusive pixels, each with a class label and a score."""

    xyxy: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(xyxy)
        labels = np.broadcast_to(np.asarray(self.labels, dtype=np.int64), (n,)).copy()
        scores = np.broadcast_to(np.asarray(self.scores, dtype=np.float32), (n,)).copy()
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "scores", scores)

    @classmethod
    def from_list(cls, boxes: list[tuple[float, float, float, float]]) -> Boxes:
        """Boxes given by a user: each its own object, labelled 1..N in order, score 1."""
        xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        return cls(xyxy, np.arange(1, len(xyxy) + 1), 1.0)

    @classmethod
    def concat(cls, parts: list[Boxes]) -> Boxes:
        """All boxes of ``parts`` in order (none for an empty list)."""
        if not parts:
            return cls(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))
        return cls(
            np.concatenate([b.xyxy for b in parts]),
            np.concatenate([b.labels for b in parts]),
            np.concatenate([b.scores for b in parts]),
        )

    def __len__(self) -> int:
        return len(self.xyxy)


@dataclass
class Segmentation:
    """What a segmenter returns for one 2D image (or one slice): a mask per box."""

    masks: np.ndarray
    """(N, H, W) bool, one per box, in the order of ``boxes``."""
    boxes: Boxes

    def label_map(self) -> np.ndarray:
        """(H, W) uint8/uint16 label map; where masks overlap, the higher score wins."""
        return self._paint(self.boxes.labels)

    def instance_map(self) -> np.ndarray:
        """(H, W) map of object numbers 1..N (box order); the higher score wins overlaps."""
        return self._paint(np.arange(1, len(self.boxes) + 1))

    def _paint(self, values: np.ndarray) -> np.ndarray:
        n, *shape = self.masks.shape
        dtype = np.uint8 if values.max(initial=0) < 256 else np.uint16
        out = np.zeros(shape, dtype=dtype)
        # Paint from lowest to highest score so the best object is on top.
        for i in np.argsort(self.boxes.scores, kind="stable"):
            out[self.masks[i]] = values[i]
        return out


@dataclass
class Result:
    """The answer for one input: a label map over the whole image or volume, and its boxes."""

    label_map: np.ndarray
    """Integer array with the image's spatial shape; 0 = background."""
    boxes: Boxes
    slice_index: int | None = None
    """For a volume segmented on one slice only: that slice (array axis 0)."""
    box_slices: np.ndarray | None = None
    """For a volume: the slice (axis 0) each box was found on."""
    instance_map: np.ndarray | None = None
    """Object numbers 1..N (box order) with the label map's shape, when objects are known."""
    segmenter: str = "LiteMedSAM"
    """The model that made the masks (recorded in the JSON output)."""
    qc: dict | None = None
    """Quality control (``pipeline.qc``): ``in_domain``, ``domain_distance``, ``flags``."""
    stability: list[float | None] | None = None
    """Per object (box order): how little its mask changes under a small box jitter."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(N, M)`` of XYXY boxes ``(N, 4)`` and ``(M, 4)`` with inclusive pixel
    corners (a box from x0 to x1 covers x1 - x0 + 1 pixels). Raises ``ValueError`` for an
    inverted box."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    for boxes in (a, b):
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise ValueError("boxes must be XYXY with x1 >= x0 and y1 >= y0")
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = width.clip(min=0) * height.clip(min=0)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


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
