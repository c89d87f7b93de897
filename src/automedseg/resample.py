"""Resampling of images and maps without torch: the same results as
``torch.nn.functional.interpolate`` (bilinear, ``align_corners=False``, with or without
``antialias``), shared by the exported models' predictor and the backbone prompter's
preprocessing. Antialiased resizing is Pillow's; plain bilinear sampling two taps per axis in
numpy.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage


def resize_antialiased(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W, C) float array resized to (h, w, C), channel by channel with Pillow's
    bilinear filter (a triangle whose half-width is the scale factor when shrinking: torch's
    ``antialias=True``)."""
    h, w = shape
    channels = [
        np.asarray(PILImage.fromarray(np.ascontiguousarray(image[..., c], np.float32))
                   .resize((w, h), PILImage.Resampling.BILINEAR))
        for c in range(image.shape[2])
    ]  # fmt: skip
    return np.stack(channels, axis=-1)


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper source index and the upper weight of plain bilinear sampling."""
    scale = np.float32(in_size / out_size)
    source = np.maximum(scale * (np.arange(out_size, dtype=np.float32) + 0.5) - 0.5, 0.0)
    lower = source.astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    return lower, upper, (source - lower).astype(np.float32)


def resize_bilinear(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(..., h, w) → (..., H, W), bilinear with ``align_corners=False`` (no antialiasing)."""
    lower, upper, weight = _linear_taps(array.shape[-2], shape[0])
    array = array[..., lower, :] * (1 - weight[:, None]) + array[..., upper, :] * weight[:, None]
    lower, upper, weight = _linear_taps(array.shape[-1], shape[1])
    return array[..., lower] * (1 - weight) + array[..., upper] * weight
