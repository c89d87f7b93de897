"""One DICOM file with pydicom: a 2D image (CR/DX/US/...) or a multi-frame volume (CT/MR).

Gray pixels are returned as float32 in modality units (Rescale Slope/Intercept or the
Modality LUT applied, so CT is in HU); MONOCHROME1 is inverted so that bright means dense
everywhere; colour (RGB, YBR_*, PALETTE COLOR) becomes ``(H, W, 3)`` uint8 RGB.
Geometry goes from DICOM's LPS patient frame to the RAS+ NIfTI affine of ``types.Geometry``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from automedseg.errors import InputError
from automedseg.io._common import has_dicom_magic, head_bytes, reading, what_is
from automedseg.types import Geometry, Image

# Radiograph modalities, reported as "XR" (see ``types.Image.modality``).
_RADIOGRAPH = frozenset({"CR", "DX", "DR", "RG", "MG", "IO", "PX", "RF", "XA"})
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_affine(
    position: np.ndarray,
    orientation: np.ndarray,
    spacing_yx: tuple[float, float],
    slice_vector: np.ndarray,
) -> np.ndarray:
    """RAS+ affine of voxel index (column, row, slice) from DICOM LPS position/orientation.

    ``orientation`` is ImageOrientationPatient (row cosines, then column cosines),
    ``spacing_yx`` is PixelSpacing (between rows, between columns), ``slice_vector`` the LPS
    step from one slice to the next in mm.
    """
    row_cos, col_cos = np.asarray(orientation, float)[:3], np.asarray(orientation, float)[3:6]
    affine = np.eye(4)
    affine[:3, 0] = row_cos * float(spacing_yx[1])
    affine[:3, 1] = col_cos * float(spacing_yx[0])
    affine[:3, 2] = np.asarray(slice_vector, float)
    affine[:3, 3] = np.asarray(position, float)
    return _LPS_TO_RAS @ affine


def header_modality(ds: Any, rgb: bool) -> str:
    """``Image.modality`` from (0008,0060); radiographs become "XR"."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if not modality:
        return "RGB" if rgb else "OT"
    return "XR" if modality in _RADIOGRAPH else modality


def header_window(ds: Any) -> tuple[float, float] | None:
    """(center, width) from WindowCenter/WindowWidth (first value), also in functional groups."""
    sources = [ds, _functional(ds, 0, "FrameVOILUTSequence")]
    for item in sources:
        if item is None or "WindowCenter" not in item or "WindowWidth" not in item:
            continue
        center, width = item.WindowCenter, item.WindowWidth
        center = center[0] if _is_multi(center) else center
        width = width[0] if _is_multi(width) else width
        try:
            if float(width) > 0:
                return float(center), float(width)
        except (TypeError, ValueError):
            return None
    return None


def _is_multi(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _functional(ds: Any, frame: int, name: str) -> Any:
    """First item of functional group ``name`` for ``frame`` (per-frame first, then shared)."""
    for group_name, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(group_name)
        if groups is not None and len(groups) > index and name in groups[index]:
            items = groups[index].get(name)
            if items is not None and len(items):
                return items[0]
    return None


def _decode(ds: Any, path: Path) -> tuple[np.ndarray, bool]:
    """Pixel array (frames first), and whether it is already in modality units."""
    from pydicom.pixels import pixel_array

    try:
        return pixel_array(ds), False
    except Exception as error:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is None or not syntax.is_compressed or not _gdcm_may_help(syntax):
            raise
        # pydicom lacks a decoder for this compression; GDCM (inside SimpleITK) has them all.
        import SimpleITK as sitk

        try:
            array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except Exception:
            raise error from None
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames == 1 and array.ndim >= 3 and array.shape[0] == 1:
            array = array[0]
        return array, int(ds.get("SamplesPerPixel", 1)) == 1


def _gdcm_may_help(syntax: Any) -> bool:
    """Whether GDCM should try a compressed file pydicom failed on: only where pydicom has no
    decoder here, or only Pillow's, which reads 8-bit JPEG but not 12-bit. Where pydicom's
    decoder is complete (RLE, JPEG-LS, JPEG 2000) the data is broken, and GDCM, given a
    broken 1 kB RLE file, allocated 3.7 GB (benchmarks/fuzz_readers.py)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGExtended12Bit

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return True
    return not decoder.is_available or syntax == JPEGExtended12Bit


def _to_rgb8(array: np.ndarray, ds: Any) -> np.ndarray:
    if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        array = apply_color_lut(array, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:
        bits = int(ds.get("BitsStored", 8) or 8)
    if array.dtype != np.uint8 or bits != 8:
        scale = 255.0 / (2**bits - 1)
        array = np.clip(array.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)
    return array


def _frame_rescale(ds: Any, frames: np.ndarray) -> np.ndarray:
    """Per-frame Rescale Slope/Intercept from PixelValueTransformationSequence (enhanced CT/MR)."""
    out = frames.astype(np.float32)
    for i in range(len(frames)):
        item = _functional(ds, i, "PixelValueTransformationSequence")
        if item is not None:
            slope = float(item.get("RescaleSlope", 1) or 1)
            out[i] = out[i] * slope + float(item.get("RescaleIntercept", 0) or 0)
    return out


def _to_modality_units(array: np.ndarray, ds: Any, rescaled: bool, multi: bool) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    if rescaled:
        return array.astype(np.float32)
    if any(k in ds for k in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence")):
        return np.asarray(apply_modality_lut(array, ds), dtype=np.float32)
    if multi:
        return _frame_rescale(ds, array)
    return array.astype(np.float32)


def _stored_range(ds: Any) -> tuple[float, float]:
    """Modality values of the smallest and largest storable pixel (for MONOCHROME1)."""
    from pydicom.pixels import apply_modality_lut

    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    values = np.asarray(apply_modality_lut(np.array([lo, hi]), ds), dtype=np.float64)
    return float(values.min()), float(values.max())


def spacing_yx(ds: Any, frame: int = 0) -> tuple[float, float] | None:
    measures = _functional(ds, frame, "PixelMeasuresSequence")
    for item in (measures, ds):
        for key in ("PixelSpacing", "ImagerPixelSpacing"):
            if item is not None and item.get(key):
                return float(item.get(key)[0]), float(item.get(key)[1])
    return None


def _slice_spacing(ds: Any) -> float:
    measures = _functional(ds, 0, "PixelMeasuresSequence")
    for item in (measures, ds):
        for key in ("SpacingBetweenSlices", "SliceThickness"):
            if item is not None and item.get(key):
                return abs(float(item.get(key)))
    return 1.0


def _frame_geometry(ds: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame order (sorted along the slice normal when positions are known) and the affine."""
    spacing = spacing_yx(ds) or (1.0, 1.0)
    plane = _functional(ds, 0, "PlaneOrientationSequence")
    orientation = (plane or ds).get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        affine = np.diag([spacing[1], spacing[0], _slice_spacing(ds), 1.0])
        return np.arange(count), affine
    orientation = np.asarray(orientation, float)
    normal = np.cross(orientation[:3], orientation[3:6])
    positions = []
    for i in range(count):
        item = _functional(ds, i, "PlanePositionSequence")
        position = (item or ds).get("ImagePositionPatient")
        positions.append(None if position is None else np.asarray(position, float))
    order = np.arange(count)
    step = normal * _slice_spacing(ds)
    if all(p is not None for p in positions):
        points = np.stack(positions)
        order = np.argsort(points @ normal, kind="stable")
        points = points[order]
        if count > 1 and np.linalg.norm(points[-1] - points[0]) > 1e-6:
            step = (points[-1] - points[0]) / (count - 1)
        origin = points[0]
    else:
        origin = positions[0] if positions[0] is not None else np.zeros(3)
    return order, lps_affine(origin, orientation, spacing, step)


def frame_order(ds: Any, count: int) -> np.ndarray:
    """Frame indices of a ``count``-frame file in ``read_dicom_file``'s slice order."""
    return _frame_geometry(ds, count)[0]


def _headerless(path: Path) -> bool:
    """True for DICOM without the Part 10 preamble: a file whose first element is a group
    0x0002 or 0x0008 tag (little endian), as old or raw DICOM files start."""
    head = head_bytes(path, 4)
    return len(head) == 4 and int.from_bytes(head[:2], "little") in (0x0002, 0x0008)


def read_dicom_file(path: str | os.PathLike[str]) -> Image:
    """Read one DICOM file: single frame → 2D ``Image``, several frames → a volume."""
    import pydicom

    path = Path(path)
    if not has_dicom_magic(path) and (what := what_is(path)) != "DICOM" and not _headerless(path):
        raise InputError(f"not a DICOM file: it holds {what}", path)
    with reading(path, "DICOM file"):
        ds = pydicom.dcmread(path, force=not has_dicom_magic(path))
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise InputError("DICOM file has no pixel data (not an image, or truncated)", path)
        array, rescaled = _decode(ds, path)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        rgb = (
            int(ds.get("SamplesPerPixel", 1)) > 1
            or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR"
        )
        window = header_window(ds)
        if rgb:
            array = _to_rgb8(array, ds)
            window = None
        else:
            array = _to_modality_units(array, ds, rescaled, frames > 1)
            if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
                lo, hi = _stored_range(ds) if not rescaled else (array.min(), array.max())
                lo, hi = float(lo), float(hi)
                array = np.float32(lo + hi) - array
                window = None if window is None else (lo + hi - window[0], window[1])
        if frames > 1:
            order, affine = _frame_geometry(ds, frames)
            array, spatial_dims = array[order], 3
        else:
            _, affine = _frame_geometry(ds, 1)
            spatial_dims = 2
        modality = header_modality(ds, rgb)  # header values are parsed lazily: inside
        spacing_known = spacing_yx(ds) is not None
    return Image(
        array=np.ascontiguousarray(array),
        spatial_dims=spatial_dims,
        geometry=Geometry(affine),
        modality=modality,
        window=window,
        source=path,
        source_files=[path],
        spacing_known=spacing_known,
    )
