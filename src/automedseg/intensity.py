"""Intensities → the [0, 1] range a SAM-family encoder expects, per modality.

MedSAM's data preparation, written once:

* **CT** (Hounsfield units): clip to a window ``(center, width)`` — the file's own
  WindowCenter/WindowWidth when present, else soft tissue (40, 400) — then scale to [0, 1].
* **Everything else in grayscale** (MR, X-ray, ultrasound, 16-bit microscopy…): clip to the
  0.5–99.5 percentiles of the non-zero voxels of the whole image or volume (so all slices of
  a volume share one scale), then scale to [0, 1]. Volumes above ``PERCENTILE_SAMPLE`` voxels
  take the percentiles from an evenly strided sample of that many voxels (for 512×512×300 a
  full sort would need several float64 copies of the volume; a 4-million-voxel sample moves the
  0.5/99.5 percentiles by far less than one grey level).
* **RGB** 8-bit photos (endoscopy, dermoscopy): divide by 255.

A constant image carries no information and raises ``InputError``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from automedseg.errors import InputError
from automedseg.types import Image

CT_SOFT_TISSUE_WINDOW = (40.0, 400.0)
PERCENTILES = (0.5, 99.5)
PERCENTILE_SAMPLE = 4_000_000


def to_unit_range(image: Image) -> np.ndarray:
    """The image's array as float32 in [0, 1], same shape (channels kept)."""
    _check(image)
    return _scaled(image.array, *intensity_range(image))


class UnitPlanes:
    """A volume's planes along axis 0 in [0, 1], each scaled when it is read.

    Scales every plane as ``to_unit_range`` scales the whole (one intensity range for the
    volume) without a float32 copy of the volume: for a 512×512×300 int16 CT that copy would
    take 315 MB beside the volume's own 157 MB."""

    def __init__(self, image: Image) -> None:
        if image.spatial_dims != 3:
            raise ValueError("UnitPlanes needs a volume (spatial_dims 3)")
        _check(image)
        self._array = image.array
        self._lo, self._hi = intensity_range(image)
        self.shape: tuple[int, ...] = tuple(image.array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, z: int) -> np.ndarray:
        """Plane z as float32 in [0, 1]."""
        return _scaled(self._array[z], self._lo, self._hi)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[z] for z in range(len(self)))


def _check(image: Image) -> None:
    array = image.array
    if array.size == 0:
        raise InputError("the image is empty (0 pixels)", image.source)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError("the image contains NaN or infinite values", image.source)
    if array.min() == array.max():
        raise InputError(
            f"the image is constant (every pixel is {array.min():g}): nothing to segment",
            image.source,
        )


def _scaled(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = array.astype(np.float32)  # the only full-size copy: the rest is in place
    out -= np.float32(lo)
    out /= np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def intensity_range(image: Image) -> tuple[float, float]:
    """The (low, high) intensities mapped to 0 and 1 for this image's modality."""
    array = image.array
    if image.channels == 3 and array.dtype == np.uint8:
        return 0.0, 255.0
    if image.modality == "CT":
        center, width = image.window or CT_SOFT_TISSUE_WINDOW
        return center - width / 2.0, center + width / 2.0
    sample = array.reshape(-1)
    if sample.size > PERCENTILE_SAMPLE:
        sample = sample[:: -(-sample.size // PERCENTILE_SAMPLE)]
    nonzero = sample[sample != 0]
    values = nonzero if nonzero.size else sample
    lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))
    if hi <= lo:  # nearly one value everywhere: use the full range instead
        lo, hi = float(array.min()), float(array.max())
    return lo, hi
