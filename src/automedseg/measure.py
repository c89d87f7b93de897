"""Object sizes for reports: area or volume, and the longest in-plane (axial) diameter.

Diameters are measured between pixel centres in millimetres, in the plane of the image (of
each slice, axis 0, for a volume), as the largest distance between two points of the
object's convex hull — the RECIST-style "longest axial diameter".
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, QhullError


def longest_diameter_mm(mask: np.ndarray, spacing_yx: tuple[float, float]) -> float:
    """Largest distance (mm) between two pixel centres of a 2D mask; 0 for one pixel."""
    points = np.argwhere(mask) * np.asarray(spacing_yx, dtype=np.float64)
    if len(points) < 2:
        return 0.0
    if len(points) > 3:
        try:
            points = points[ConvexHull(points).vertices]
        except QhullError:  # all points on a line: the extremes are enough
            pass
    difference = points[:, None, :] - points[None, :, :]
    return float(np.sqrt((difference**2).sum(-1)).max())


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
