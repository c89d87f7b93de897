"""``read_image`` and ``read_label_map``: pick the reader from the path and the file's bytes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image as PILImage

from automedseg.errors import InputError
from automedseg.io._common import (
    has_dicom_magic,
    has_nifti_magic,
    is_nifti_name,
    is_raster_name,
    reading,
)
from automedseg.io.dicom import read_dicom_file
from automedseg.io.dicom_series import read_dicom_series
from automedseg.io.frames import frame_files, read_frames
from automedseg.io.nifti import read_nifti
from automedseg.io.raster import pil_to_array, read_raster
from automedseg.io.video import is_video_name, read_video
from automedseg.types import Image

Kind = Literal["folder", "nifti", "dicom", "video", "raster", "unknown"]
_UNREADABLE = "not a readable image (PNG/JPEG/BMP/TIFF, DICOM or NIfTI)"


def _kind(path: Path) -> Kind:
    """Check that ``path`` can be read at all and say which reader fits it."""
    if not path.exists():
        raise InputError("does not exist", path)
    if path.is_dir():
        return "folder"
    if not path.is_file():
        raise InputError("not a regular file or a folder", path)
    if path.stat().st_size == 0:
        raise InputError("empty file", path)
    if is_nifti_name(path) or has_nifti_magic(path):
        return "nifti"
    if has_dicom_magic(path) or path.suffix.lower() in (".dcm", ".dicom"):
        return "dicom"
    if is_video_name(path):
        return "video"
    if is_raster_name(path):
        return "raster"
    return "unknown"


def _holds_dicom(folder: Path, frames: list[Path]) -> bool:
    """True when a file directly in ``folder`` (other than the frame images) is DICOM."""
    skip = set(frames)
    with reading(folder, "folder"):
        entries = [p for p in folder.iterdir() if p not in skip and not p.name.startswith(".")]
    return any(
        p.is_file() and (p.suffix.lower() in (".dcm", ".dicom") or has_dicom_magic(p))
        for p in entries
    )


def _read_folder(folder: Path) -> Image:
    """The DICOM series of ``folder`` when it holds DICOM files, else its frame images."""
    frames = frame_files(folder)
    if frames and not _holds_dicom(folder, frames):
        return read_frames(folder)
    # Also when nothing looks like DICOM: GDCM finds files without the 'DICM' preamble.
    return read_dicom_series(folder)


def _read_unknown(path: Path) -> Image:
    """No known extension or magic: try Pillow, then pydicom (DICOM without preamble)."""
    for reader in (read_raster, read_dicom_file):
        try:
            return reader(path)
        except InputError:
            continue
    raise InputError(_UNREADABLE, path)


def read_image(path: str | os.PathLike[str]) -> Image:
    """Read an image, a volume, a video, a DICOM series folder or a folder of frames.

    * a folder holding DICOM files → the one DICOM series it holds (float32 ``(Z, Y, X)``);
      a folder holding both DICOM files and PNG/JPEG/... images is read as DICOM;
    * a folder of PNG/JPEG/BMP/TIFF frames → a video (``read_frames``): ``(T, H, W)`` or
      ``(T, H, W, 3)``, axis 0 = time in name order, ``frame_names`` = file stems;
    * ``.mp4`` / ``.avi`` / ``.mov`` / ``.mkv`` / ``.webm`` → ``(T, H, W, 3)`` uint8 RGB
      (``read_video``), ``frame_names`` "0000", "0001", ...;
    * ``.nii`` / ``.nii.gz`` → a volume ``(Z, Y, X)``;
    * DICOM (by its 'DICM' magic, with or without ``.dcm``) → 2D image or multi-frame volume;
    * PNG / JPEG / BMP / TIFF → 2D ``(H, W)`` gray or ``(H, W, 3)`` RGB.

    Every failure is an ``InputError`` naming the path. ``Image.source`` is set to ``path``.
    """
    path = Path(path).expanduser()
    kind = _kind(path)
    if kind == "folder":
        image = _read_folder(path)
    elif kind == "nifti":
        image = read_nifti(path)
    elif kind == "dicom":
        image = read_dicom_file(path)
    elif kind == "video":
        image = read_video(path)
    elif kind == "raster":
        image = read_raster(path)
    else:
        image = _read_unknown(path)
    image.source = path
    return image


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    """Whole-number array → integer labels (integer types kept, floats to the smallest type)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    finite = np.isfinite(array)
    if not finite.all() or not np.all(np.mod(array, 1) == 0):
        raise InputError("not a label map: it holds non-integer values", path)
    low, high = (array.min(), array.max()) if array.size else (0, 0)
    if low >= 0:
        dtype = np.uint8 if high <= 0xFF else np.uint16 if high <= 0xFFFF else np.uint32
    else:
        dtype = np.int16 if low >= -(2**15) and high < 2**15 else np.int32
    return array.astype(dtype)


def _raster_labels(path: Path) -> np.ndarray:
    with reading(path, "mask image"), PILImage.open(path) as img:
        img.load()
        lossy = img.format == "JPEG"
        is_stack = img.format == "TIFF" and int(getattr(img, "n_frames", 1)) > 1
        # Palette PNGs (VOC-style) store the label as the palette index.
        array = np.asarray(img) if img.mode == "P" else pil_to_array(img)
    colour = array.ndim == 3
    if is_stack:
        image = read_raster(path)
        array, colour = image.array, image.channels > 1
    if colour or lossy:
        # Lossy or colour masks: foreground is where any channel is above mid-gray.
        gray = array.max(axis=-1) if colour else array
        return (gray > 127).astype(np.uint8)
    values = np.unique(array)
    full = np.iinfo(array.dtype).max if np.issubdtype(array.dtype, np.integer) else None
    if full in (0xFF, 0xFFFF) and full in values and set(values.tolist()) <= {0, full}:
        return (array == full).astype(np.uint8)  # a binary mask saved as 0/255
    return _as_labels(array, path)


def read_label_map(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a segmentation mask / label map as an integer array (0 = background).

    * JPEG or colour (RGB) masks → uint8 0/1 where any channel is > 127 (JPEG artefacts
      and coloured masks on black both work);
    * a single-channel PNG/TIFF holding only 0 and 255 (or 0 and 65535) → uint8 0/1;
    * otherwise labels are kept (palette PNGs give their palette indices);
    * NIfTI → ``(Z, Y, X)`` integers (float files with whole numbers are converted).

    Every failure is an ``InputError`` naming the path.
    """
    path = Path(path).expanduser()
    kind = _kind(path)
    if kind == "raster":
        return _raster_labels(path)
    if kind == "unknown":
        try:
            return _raster_labels(path)
        except InputError:
            pass
    image = read_image(path)
    array = image.array
    if image.channels > 1:
        return (array.max(axis=-1) > 127).astype(np.uint8)
    return _as_labels(array, path)
