"""Per-label statistics of a segmented case with SimpleITK's label statistics: voxel count,
volume (mL) or area (mm², 2D) when the spacing is known, and the mean and standard deviation of
the image intensity inside the label (RGB: the mean of the channels)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from automedseg.types import Image


def label_statistics(
    image: Image, label_map: np.ndarray, names: Mapping[int, str] | None = None
) -> list[dict[str, Any]]:
    """One row per label value present in ``label_map`` (the image's spatial shape):
    ``label``, ``label_name``, ``voxels``, ``volume_ml`` (volumes) or ``area_mm2`` (2D) — empty
    when the file gave no pixel size — and ``mean_intensity`` / ``std_intensity``."""
    import SimpleITK as sitk

    names = names or {}
    intensity = np.asarray(image.array, np.float64)
    if image.channels > 1:
        intensity = intensity.mean(axis=-1)
    spacing = image.geometry.spacing(image.spatial_dims)
    picture = sitk.GetImageFromArray(intensity)
    picture.SetSpacing(tuple(reversed(spacing)))
    labels = sitk.GetImageFromArray(np.asarray(label_map).astype(np.uint32))
    labels.CopyInformation(picture)
    measured = sitk.LabelStatisticsImageFilter()
    measured.Execute(picture, labels)
    element = float(np.prod(spacing))
    rows = []
    for value in sorted(int(v) for v in measured.GetLabels() if v != 0):
        count = int(measured.GetCount(value))
        volume = image.spacing_known and label_map.ndim == 3
        area = image.spacing_known and label_map.ndim == 2
        rows.append({
            "label": value,
            "label_name": names.get(value, f"label {value}"),
            "voxels": count,
            "volume_ml": round(count * element / 1000.0, 4) if volume else "",
            "area_mm2": round(count * element, 3) if area else "",
            "mean_intensity": round(float(measured.GetMean(value)), 4),
            "std_intensity": round(float(measured.GetSigma(value)), 4),
        })  # fmt: skip
    return rows
