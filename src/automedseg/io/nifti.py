"""NIfTI (.nii / .nii.gz) with nibabel.

nibabel's array is indexed (x, y, z); ``Image.array`` is (z, y, x), so the axes are reversed
and the affine (voxel (x, y, z) → RAS+ mm) is kept as is: it is already the
``types.Geometry`` convention.
"""

from __future__ import annotations

import gzip
import os
from io import BytesIO
from pathlib import Path

import numpy as np

from automedseg.errors import InputError
from automedseg.io._common import atomic_open, reading
from automedseg.types import Geometry, Image


def _to_zyx(data: np.ndarray, path: Path) -> np.ndarray:
    """nibabel (x[, y[, z[, 1...]]]) → (z, y, x)."""
    if data.dtype.fields is not None:
        raise InputError("RGB / structured NIfTI is not supported; give a gray volume", path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise InputError(
            f"4D NIfTI ({data.shape[3]} volumes) is not supported; give one 3D volume", path
        )
    if data.ndim > 4:
        raise InputError(f"{data.ndim}D NIfTI of shape {data.shape} is not supported", path)
    if data.ndim < 2:
        raise InputError(f"NIfTI of shape {data.shape} is not an image", path)
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    return np.ascontiguousarray(data.transpose(2, 1, 0))


DEFLATE_MAX_RATIO = 1032
"""Deflate (gzip) expands at most about 1032 times: a .nii.gz of n bytes holds at most
1032·n bytes of header and voxels."""


def _check_data_size(path: Path, header) -> None:
    """Refuse a file that cannot hold the voxel bytes its header describes, before nibabel
    allocates them (the fuzzer's 153-byte .nii.gz claimed 5.8 GB of voxels). A gzipped file
    is bounded by deflate's largest expansion, so it is read once, by nibabel; one that is
    merely truncated fails there, with at most that bound allocated."""
    shape = tuple(int(n) for n in header.get_data_shape())
    needed = int(header.get_data_offset()) + int(np.prod(shape, dtype=np.float64)) * int(
        header.get_data_dtype().itemsize
    )
    size = path.stat().st_size
    gzipped = path.name.lower().endswith(".gz")
    held = size * DEFLATE_MAX_RATIO if gzipped else size
    if held < needed:
        room = f"at most {held:,} bytes once decompressed" if gzipped else f"{held:,} bytes"
        raise InputError(
            f"not a whole NIfTI file: its header describes {'x'.join(map(str, shape))} "
            f"voxels of {header.get_data_dtype()} ({needed:,} bytes with the header) but the "
            f"file holds {room}: truncated or corrupt", path)  # fmt: skip


def read_nifti(path: str | os.PathLike[str]) -> Image:
    """Read a NIfTI file as a volume ``(Z, Y, X)``; a 2D NIfTI gives ``(1, Y, X)``.

    Scaling (scl_slope / scl_inter) is applied; without scaling the stored integer type is
    kept. Float64 data is returned as float32.
    """
    import nibabel as nib

    path = Path(path)
    with reading(path, "NIfTI file"):
        img = nib.load(path)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"not a NIfTI image ({type(img).__name__})", path)
        _check_data_size(path, img.header)
        data = np.asanyarray(img.dataobj)  # applies scl_slope/scl_inter only when set
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        array = _to_zyx(np.asarray(data), path)
        affine = np.asarray(img.affine, dtype=np.float64)
    return Image(array=array, spatial_dims=3, geometry=Geometry(affine), modality="OT", source=path)


def label_dtype(label_map: np.ndarray) -> type[np.unsignedinteger]:
    """Smallest unsigned type for a label map: uint8, uint16 or uint32."""
    if label_map.size and label_map.min() < 0:
        raise ValueError("a label map must not hold negative values")
    if label_map.size and not np.issubdtype(label_map.dtype, np.integer):
        if label_map.dtype != np.bool_ and not np.all(np.mod(label_map, 1) == 0):
            raise ValueError("a label map must hold whole numbers")
    top = int(label_map.max(initial=0))
    return np.uint8 if top <= 0xFF else np.uint16 if top <= 0xFFFF else np.uint32


def write_nifti(path: str | os.PathLike[str], label_map: np.ndarray, geometry: Geometry) -> Path:
    """Write a label map ``(Z, Y, X)`` (or ``(H, W)``) as NIfTI-1 (.nii or .nii.gz).

    Stored as uint8 (uint16/uint32 when needed), with the sform and qform both set from
    ``geometry.affine`` (code 1, scanner) so viewers such as 3D Slicer place it on the image.
    The write is atomic. Returns the path written.
    """
    import nibabel as nib

    path = Path(path)
    labels = np.asarray(label_map)
    if labels.ndim == 2:
        labels = labels[np.newaxis]
    if labels.ndim != 3:
        raise ValueError(f"label map must be (Z, Y, X) or (H, W), got shape {labels.shape}")
    data = np.ascontiguousarray(labels.astype(label_dtype(labels)).transpose(2, 1, 0))
    affine = np.asarray(geometry.affine, dtype=np.float64)
    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_open(path) as f:
        if path.name.lower().endswith(".gz"):
            # no name, no time in the gzip header: the same label map gives the same bytes
            with gzip.GzipFile("", mode="wb", compresslevel=6, fileobj=f, mtime=0) as gz:
                img.to_stream(gz)
        else:
            img.to_stream(f)
    return path


def nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 of ``array`` ``(Z, Y, X)`` (gray, stored as float32, or labels as
    integers) or ``(Z, Y, X, 3)`` uint8 (stored as RGB24), with ``affine`` as sform and qform:
    what a browser viewer (NiiVue) reads."""
    import nibabel as nib

    data = np.asarray(array)
    if data.ndim == 4:
        rgb = np.ascontiguousarray(data.astype(np.uint8).transpose(2, 1, 0, 3))
        data = rgb.view([("R", "u1"), ("G", "u1"), ("B", "u1")]).reshape(rgb.shape[:3])
    elif np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_:
        data = np.ascontiguousarray(data.astype(label_dtype(data)).transpose(2, 1, 0))
    else:
        data = np.ascontiguousarray(data.astype(np.float32).transpose(2, 1, 0))
    img = nib.Nifti1Image(data, np.asarray(affine, np.float64))
    img.header.set_sform(img.affine, code=1)
    img.header.set_qform(img.affine, code=1)
    img.header.set_xyzt_units("mm")
    buffer = BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=1, mtime=0) as gz:
        img.to_stream(gz)
    return buffer.getvalue()
