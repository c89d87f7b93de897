"""A folder holding one DICOM series (one file per slice), read with SimpleITK / GDCM.

GDCM sorts the slices along the slice normal and applies Rescale Slope/Intercept; the
volume comes back as float32 ``(Z, Y, X)``. SimpleITK reports geometry in LPS; the affine is
turned into the RAS+ NIfTI convention of ``types.Geometry`` by negating the first two rows.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from automedseg.errors import InputError
from automedseg.io._common import reading
from automedseg.io.dicom import header_modality, header_window, read_dicom_file, spacing_yx
from automedseg.types import Geometry, Image

if TYPE_CHECKING:
    import SimpleITK


@contextmanager
def warnings_off():
    """pydicom's warnings about odd headers silenced (the caller decides what is wrong)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def sitk_affine(image: SimpleITK.Image) -> np.ndarray:
    """RAS+ affine of a SimpleITK image (index (x, y, z) → mm) from its LPS geometry."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing  # scales column j by spacing[j]
    affine[:3, 3] = image.GetOrigin()
    affine[:2, :] *= -1.0  # LPS → RAS
    return affine


def series_in(folder: Path) -> dict[str, list[str]]:
    """SeriesInstanceUID → its files in slice order, for the DICOM files directly in
    ``folder`` (GDCM reads files with or without the 'DICM' preamble). GDCM only sees the
    files whose header pydicom reads, with a SeriesInstanceUID and no element longer than the
    file (``_plausible``): given a 62-byte file claiming a 3 GB element, GDCM's scanner
    allocated 3 GB (benchmarks/fuzz_readers.py)."""
    import SimpleITK as sitk

    files = [f for f in sorted(folder.iterdir()) if f.is_file() and _plausible(f)]
    if not files:
        return {}
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found" → our message
    with tempfile.TemporaryDirectory(prefix="automedseg-series-") as stage:
        links = {}
        for i, file in enumerate(files):
            link = Path(stage) / f"{i:06d}.dcm"
            link.symlink_to(file.resolve())
            links[str(link)] = str(file)
        try:
            uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(stage))
            return {uid: [links[f] for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(
                stage, uid)] for uid in uids}  # fmt: skip
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _plausible(file: Path) -> bool:
    """Whether ``file``'s header (pixel data aside) reads with pydicom, names its series, and
    declares no element longer than the file."""
    import pydicom

    size = file.stat().st_size
    try:
        with warnings_off():
            ds = pydicom.dcmread(file, stop_before_pixels=True, force=True)
            if "SeriesInstanceUID" not in ds:
                return False
            lengths = [getattr(ds.get_item(tag), "length", 0) for tag in ds.keys()]
    except Exception:  # noqa: BLE001 - any failure means "not a file of a series"
        return False
    return all(n == 0xFFFFFFFF or n <= size for n in lengths)


def _series_files(folder: Path) -> list[str]:
    series = series_in(folder)
    uids = list(series)
    if not uids:
        raise InputError(
            "no DICOM series and no frame images (PNG/JPEG/BMP/TIFF) found in this folder "
            "(subfolders are not searched); give a folder holding the DICOM files of one "
            "series, a folder of video frames, or one image or video file",
            folder,
        )
    if len(uids) > 1:
        raise InputError(
            f"the folder holds {len(uids)} DICOM series ({', '.join(uids)}); "
            "give a folder holding only one series (`automedseg batch` splits them)",
            folder,
        )
    return series[uids[0]]


def read_dicom_series(folder: str | os.PathLike[str]) -> Image:
    """Read the one DICOM series in ``folder`` as a volume (a lone file as ``read_dicom_file``)."""
    folder = Path(folder)
    with reading(folder, "DICOM series"):
        files = _series_files(folder)
    return read_series_files(files, folder)


def read_series_files(files: list[str] | list[Path], source: Path) -> Image:
    """The DICOM files of one series, in slice order as GDCM sorts them (``series_in``), as a
    volume (a lone file as ``read_dicom_file``); ``source`` names it in messages and results."""
    files = [str(f) for f in files]
    with reading(source, "DICOM series"):
        if len(files) == 1:
            image = read_dicom_file(files[0])
            image.source = source
            return image

        import pydicom
        import SimpleITK as sitk

        header = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
        rgb = int(header.get("SamplesPerPixel", 1)) > 1
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        if not rgb:
            reader.SetOutputPixelType(sitk.sitkFloat32)
        volume = reader.Execute()
        array = sitk.GetArrayFromImage(volume)
        window = None if rgb else header_window(header)
        if not rgb and str(header.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            lo, hi = float(array.min()), float(array.max())
            array = np.float32(lo + hi) - array
            window = None if window is None else (lo + hi - window[0], window[1])
        affine = sitk_affine(volume)
        modality = header_modality(header, rgb)  # header values are parsed lazily: inside
        spacing_known = spacing_yx(header) is not None
    return Image(
        array=np.ascontiguousarray(array),
        spatial_dims=3,
        geometry=Geometry(affine),
        modality=modality,
        window=window,
        source=source,
        source_files=[Path(f) for f in files],
        spacing_known=spacing_known,
    )
