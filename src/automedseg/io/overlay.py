"""Rendering for overlay pictures: an image to 8-bit RGB, label maps blended on top.

Pure array functions (no files), used by ``write_overlay_png``.
"""

from __future__ import annotations

import colorsys

import numpy as np

# Distinct, colour-blind-friendly first colours (Okabe-Ito + extras); later labels get hues
# spread by the golden ratio.
_PALETTE = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (255, 0, 0),
    (0, 255, 0),
    (160, 32, 240),
]


def label_color(label: int) -> tuple[int, int, int]:
    """RGB colour of ``label`` (1, 2, ...); the same label always gets the same colour."""
    if 1 <= label <= len(_PALETTE):
        return _PALETTE[label - 1]
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def to_uint8(array: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """Gray array → uint8: the (center, width) window if given, else a 0.5–99.5 % stretch."""
    values = np.asarray(array, dtype=np.float64)
    if window is not None:
        center, width = window
        lo, hi = center - width / 2.0, center + width / 2.0
    else:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return np.zeros(values.shape, dtype=np.uint8)
        lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
        if hi <= lo:
            lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.where(values > lo, 255, 0).astype(np.uint8)
    scaled = (np.nan_to_num(values, nan=lo) - lo) / (hi - lo) * 255.0
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def to_display_rgb(array: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    """``(H, W)`` or ``(H, W, C)`` array → ``(H, W, 3)`` uint8 RGB for display."""
    if array.ndim == 3:
        rgb = array[..., :3] if array.shape[-1] >= 3 else np.repeat(array[..., :1], 3, axis=-1)
        return rgb if rgb.dtype == np.uint8 else to_uint8(rgb, window)
    gray = to_uint8(array, window)
    return np.repeat(gray[..., np.newaxis], 3, axis=-1)


def contour(label_map: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)``: labelled pixels with a 4-neighbour of another value (1-px border)."""
    padded = np.pad(label_map, 1, mode="edge")
    center = padded[1:-1, 1:-1]
    edge = np.zeros(label_map.shape, dtype=bool)
    for neighbour in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        edge |= neighbour != center
    return edge & (label_map != 0)


def blend_labels(rgb: np.ndarray, label_map: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Each label blended in its colour at ``alpha``, plus its contour in full colour."""
    if rgb.shape[:2] != label_map.shape:
        raise ValueError(f"label map {label_map.shape} does not match image {rgb.shape[:2]}")
    out = rgb.astype(np.float32)
    edge = contour(label_map)
    for label in np.unique(label_map):
        if label == 0:
            continue
        color = np.asarray(label_color(int(label)), dtype=np.float32)
        inside = label_map == label
        out[inside] = (1.0 - alpha) * out[inside] + alpha * color
        out[inside & edge] = color
    return np.clip(out, 0, 255).round().astype(np.uint8)
