"""Resampling of images and maps in numpy, without torch: the same results as
``torch.nn.functional.interpolate`` (bilinear, ``align_corners=False``, with or without
``antialias``), shared by the ONNX Runtime predictor and the backbone prompter's preprocessing.

Resampling is separable: a few weighted taps per output sample, one axis at a time.
"""

from __future__ import annotations

import numpy as np


def antialiased_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(out, taps) source indices and weights of torch's antialiased bilinear resampling
    along one axis.

    Output sample ``i`` is centred at ``scale * (i + 0.5)`` in input pixels (``scale`` =
    in/out); the triangle filter has half-width ``max(scale, 1)`` and is normalised to sum 1
    over the input pixels it covers.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    inverse = 1.0 / scale if scale >= 1.0 else 1.0
    centres = scale * (np.arange(out_size) + 0.5)
    first = np.maximum((centres - support + 0.5).astype(np.int64), 0)
    stop = np.minimum((centres + support + 0.5).astype(np.int64), in_size)
    taps = int((stop - first).max())
    index = first[:, None] + np.arange(taps)
    weights = np.clip(1.0 - np.abs((index - centres[:, None] + 0.5) * inverse), 0.0, None)
    weights[index >= stop[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return np.minimum(index, in_size - 1), weights.astype(np.float32)


def _resample_rows(array: np.ndarray, out_size: int) -> np.ndarray:
    """Axis 0 of ``array`` resampled to ``out_size`` (antialiased), summing one tap at a time."""
    index, weights = antialiased_taps(array.shape[0], out_size)
    out = np.zeros((out_size, *array.shape[1:]), np.float32)
    for tap in range(index.shape[1]):
        out += weights[:, tap, None] * array[index[:, tap]]
    return out


def resize_antialiased(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W, C) float array resized to (h, w, C) (rows first, then columns)."""
    h_in, w_in, channels = image.shape
    h, w = shape
    rows = _resample_rows(image.reshape(h_in, w_in * channels).astype(np.float32, copy=False), h)
    rows = rows.reshape(h, w_in, channels).transpose(1, 0, 2).reshape(w_in, h * channels)
    both = _resample_rows(rows, w)
    return np.ascontiguousarray(both.reshape(w, h, channels).transpose(1, 0, 2), np.float32)


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
