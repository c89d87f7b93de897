"""Object sizes for reports: area or volume, and the longest in-plane (axial) diameter.

Diameters are measured between pixel centres in millimetres, in the plane of the image (of
each slice, axis 0, for a volume), as the largest distance between two points of the
object's convex hull — the RECIST-style "longest axial diameter".
"""

from __future__ import annotations

import numpy as np

BLOCK = 512


def longest_diameter_mm(mask: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """Largest distance (mm) between two pixel centres of a 2D mask; 0 for one pixel.

    Only the leftmost and rightmost pixel of each row can be corners of the mask's convex
    hull, and the longest distance is between two corners, so those two per row are compared
    (in blocks, to bound memory)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return 0.0
    inside = mask[rows]
    first = inside.argmax(axis=1)
    last = inside.shape[1] - 1 - inside[:, ::-1].argmax(axis=1)
    points = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)])
    points = np.unique(points, axis=0) * np.asarray(spacing_yx, dtype=np.float64)
    longest = 0.0
    for start in range(0, len(points), BLOCK):
        difference = points[start : start + BLOCK, None, :] - points[None, :, :]
        longest = max(longest, float((difference**2).sum(-1).max()))
    return float(np.sqrt(longest))


def measure_objects(instance_map: np.ndarray, spacing: tuple[float, ...] | None) -> dict[int, dict]:
    """Per object number (1..N) in ``instance_map``: its size and longest in-plane diameter.

    2D maps give ``area_mm2``; volumes ``volume_ml``, the ``slices`` it spans and the
    ``longest_axial_diameter_mm`` over its slices. ``spacing`` is in array order; None (the
    pixel size is not known) gives the same in pixels: ``area_px`` / ``voxels`` and ``_px``
    diameters.
    """
    unit = "mm" if spacing is not None else "px"
    spacing = spacing if spacing is not None else (1.0,) * instance_map.ndim
    voxel = float(np.prod(spacing))
    out = {}
    for number in np.unique(instance_map):
        if number == 0:
            continue
        mask = instance_map == number
        count = int(mask.sum())
        if instance_map.ndim == 2:
            out[int(number)] = {
                "area_mm2" if unit == "mm" else "area_px": round(count * voxel, 3),
                f"longest_diameter_{unit}": round(longest_diameter_mm(mask, spacing[-2:]), 2),
            }
            continue
        slices = np.nonzero(mask.reshape(len(mask), -1).any(axis=1))[0]
        diameter = max(longest_diameter_mm(mask[z], spacing[-2:]) for z in slices)
        size = (
            {"volume_ml": round(count * voxel / 1000.0, 4)} if unit == "mm" else {"voxels": count}
        )
        out[int(number)] = {
            **size,
            "slices": [int(slices[0]), int(slices[-1])],
            f"longest_axial_diameter_{unit}": round(diameter, 2),
        }
    return out
