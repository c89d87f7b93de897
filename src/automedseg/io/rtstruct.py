"""DICOM RT Structure Set (RTSTRUCT) output with rt-utils, for radiotherapy planning systems.

One ROI per label value present, named by the task's label names, its contours drawn on the
source series' slices (``source_files`` in the order of the label map's axis 0, as
``Image.source_files`` holds them). rt-utils (and OpenCV, which draws its contours) are
imported only when an RTSTRUCT is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from automedseg.errors import InputError
from automedseg.io._common import atomic_open, has_dicom_magic
from automedseg.io.dicom_seg import TYPE2_ATTRIBUTES
from automedseg.io.overlay import label_color

ALGORITHM = "AUTOMATIC"


def write_rtstruct(
    path: str | os.PathLike[str],
    label_map: np.ndarray,
    source_files: Sequence[str | os.PathLike[str]],
    label_names: Mapping[int, str] | None = None,
    label_codes: Mapping[int, Mapping[str, Sequence[str]]] | None = None,
    series_description: str = "automedseg structures",
) -> Path:
    """Write the ``(Z, Y, X)`` ``label_map`` of a DICOM series (slice z ↔ ``source_files[z]``)
    as an RTSTRUCT; each label value present becomes a ROI named ``label_names[value]`` (else
    "label N"). Empty label maps raise ``ValueError``; sources rt-utils cannot use (no Frame of
    Reference, a single 2D image) raise ``InputError``. ``label_codes`` is accepted for the
    same call as ``write_dicom_seg`` (an RTSTRUCT names its ROIs only). The write is
    atomic."""
    import pydicom
    from rt_utils import RTStruct
    from rt_utils.ds_helper import create_rtstruct_dataset

    labels = np.asarray(label_map)
    files = [Path(f) for f in source_files]
    if labels.ndim != 3 or len(files) != len(labels):
        raise InputError("an RTSTRUCT needs a DICOM series with one file per slice",
                         files[0] if files else None)  # fmt: skip
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise ValueError("the label map is empty: an RTSTRUCT needs at least one ROI")
    where = files[0].parent
    try:
        series = [pydicom.dcmread(f, force=not has_dicom_magic(f)) for f in files]
        for ds in series:
            for keyword in (*TYPE2_ATTRIBUTES, "StudyDescription", "SeriesNumber"):
                if keyword not in ds:
                    setattr(ds, keyword, None if keyword != "SeriesNumber" else 0)
        rt = RTStruct(series, create_rtstruct_dataset(series))
        names = label_names or {}
        for value in values:
            rt.add_roi(
                mask=np.moveaxis(labels == value, 0, -1),  # rt-utils: (rows, columns, slices)
                color=list(label_color(value)),
                name=names.get(value, f"label {value}"),
                roi_generation_algorithm=ALGORITHM,
            )
        rt.ds.SeriesDescription = series_description[:64]
    except Exception as error:  # rt-utils and pydicom raise anything on sources they refuse
        raise InputError(f"cannot derive an RTSTRUCT from this series: {error}", where) from error
    path = Path(path)
    with atomic_open(path) as f:
        rt.ds.save_as(f, enforce_file_format=True)
    return path
