"""DICOM Segmentation (DICOM-SEG) output with highdicom, referencing the source images.

A label map is written as one BINARY segmentation with one segment per label value present,
segment numbers 1..N in increasing label order, each labelled with its name and marked
AUTOMATIC, made by "automedseg" at its version. Frames map to the source pixel for pixel:

* a DICOM series: ``source_files`` in the order of the label map's axis 0, as the series
  reader returns them in ``Image.source_files`` (GDCM's order along the slice normal);
* one multi-frame file: the label map is in ``read_dicom_file``'s order (frames sorted along
  the slice normal) and is put back in the file's own frame order here;
* one single-frame file (a radiograph, an ultrasound picture): an ``(H, W)`` label map.

highdicom (and pydicom) are imported only when a DICOM-SEG is written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import automedseg
from automedseg.errors import InputError
from automedseg.io._common import atomic_open, has_dicom_magic
from automedseg.io.dicom import frame_order

# Type 2 (required, may be empty) patient/study attributes highdicom copies from the source;
# de-identified files often drop them.
TYPE2_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _read_sources(files: Sequence[Path]) -> list[Any]:
    """The sources' headers, with missing type 2 attributes added empty (in memory only)."""
    import pydicom

    sources = []
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True, force=not has_dicom_magic(file))
        except Exception as error:
            raise InputError(f"cannot read the source DICOM file: {error}", file) from error
        for keyword in TYPE2_ATTRIBUTES:
            if keyword not in ds:
                setattr(ds, keyword, None)
        sources.append(ds)
    return sources


def _frames(labels: np.ndarray, sources: list[Any], first: Path) -> np.ndarray:
    """The label map as frames in the source's order: (F, H, W), one frame per source frame."""
    frames = int(sources[0].get("NumberOfFrames", 1) or 1)
    if len(sources) == 1 and frames > 1:
        if labels.ndim != 3 or len(labels) != frames:
            raise ValueError(f"a {frames}-frame source needs {frames} slices, got {labels.shape}")
        in_file_order = np.empty_like(labels)
        in_file_order[frame_order(sources[0], frames)] = labels  # slice k is frame order[k]
        labels = in_file_order
    elif labels.ndim == 2:
        labels = labels[np.newaxis]
    if labels.ndim != 3 or (frames == 1 and len(labels) != len(sources)):
        raise ValueError(
            f"label map of shape {labels.shape} does not match {len(sources)} source file(s)"
        )
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    if labels.shape[1:] != (rows, columns):
        raise ValueError(f"label map slices {labels.shape[1:]} are not {rows}x{columns}: {first}")
    return labels


def _code(triplet: Sequence[str] | None, default: Any) -> Any:
    """A coded concept from its (value, scheme, meaning), e.g. ("39607008", "SCT", "Lung")."""
    from pydicom.sr.coding import Code

    if not triplet:
        return default
    value, scheme, meaning = (str(v) for v in triplet)
    return Code(value, scheme, meaning)


def _descriptions(values: list[int], names: Mapping[int, str],
                  label_codes: Mapping[int, Mapping[str, Sequence[str]]]) -> list[Any]:  # fmt: skip
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="automedseg",
        family=codes.cid7162.ArtificialIntelligence,
        version=automedseg.__version__,
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(names.get(value, f"label {value}"))[:64] or f"label {value}",
            segmented_property_category=_code(label_codes.get(value, {}).get("category"),
                                              codes.SCT.Tissue),  # fmt: skip
            segmented_property_type=_code(label_codes.get(value, {}).get("type"),
                                          codes.SCT.Tissue),  # fmt: skip
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"label {value}",
        )
        for number, value in enumerate(values, start=1)
    ]


def write_dicom_seg(
    path: str | os.PathLike[str],
    label_map: np.ndarray,
    source_files: Sequence[str | os.PathLike[str]],
    label_names: Mapping[int, str] | None = None,
    label_codes: Mapping[int, Mapping[str, Sequence[str]]] | None = None,
    series_description: str = "automedseg segmentation",
) -> Path:
    """Write ``label_map`` as a DICOM-SEG of the DICOM image(s) in ``source_files``.

    ``label_map`` is ``(Z, Y, X)`` for a series (slice z ↔ ``source_files[z]``) or a
    multi-frame file (slices sorted along the normal, as ``read_image`` returns them), or
    ``(H, W)`` for one single-frame file. ``label_names`` maps a label value to its segment
    label (default "label N"), ``label_codes`` to its coded ``category`` and ``type`` (each a
    (value, scheme, meaning) triplet, e.g. SNOMED CT; default SCT Tissue). Values present
    become segments 1..N in increasing order; ``series_description`` names the series.

    A label map with no labelled voxel raises ``ValueError``: a DICOM-SEG needs at least one
    segment (callers skip the file instead). Sources highdicom cannot derive a segmentation
    from (e.g. no Frame of Reference) raise ``InputError``. The write is atomic. Returns the
    path written.
    """
    files = [Path(f) for f in source_files]
    if not files:
        raise ValueError("a DICOM-SEG needs the source DICOM file(s)")
    labels = np.asarray(label_map)
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError("a label map holds non-negative integers")
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise ValueError("the label map is empty: a DICOM-SEG needs at least one segment")
    sources = _read_sources(files)
    frames = _frames(labels, sources, files[0])
    numbers = np.zeros(frames.shape, np.uint8 if len(values) < 256 else np.uint16)
    for number, value in enumerate(values, start=1):  # label value → segment number
        numbers[frames == value] = number

    import highdicom as hd

    where = files[0].parent if len(files) > 1 else files[0]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=numbers,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(values, label_names or {}, label_codes or {}),
            series_instance_uid=hd.UID(),
            series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="automedseg",
            manufacturer_model_name="automedseg",
            software_versions=automedseg.__version__,
            device_serial_number="1",
            content_description="automedseg segmentation",
            series_description=series_description[:64],
        )
    except Exception as error:  # highdicom refuses sources lacking what a SEG must copy
        raise InputError(f"cannot derive a DICOM-SEG from this image: {error}", where) from error
    path = Path(path)
    with atomic_open(path) as f:
        seg.save_as(f, enforce_file_format=True)
    return path
