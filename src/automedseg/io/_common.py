"""Helpers shared by the readers and writers: file sniffing, error wrapping, atomic writes."""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from automedseg.errors import InputError

RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def is_raster_name(path: Path) -> bool:
    return path.suffix.lower() in RASTER_SUFFIXES


def _head(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def has_dicom_magic(path: Path) -> bool:
    """True when the file has the DICOM Part 10 preamble: 'DICM' at byte 128."""
    return _head(path, 132)[128:132] == b"DICM"


def has_nifti_magic(path: Path) -> bool:
    """True for an uncompressed single-file NIfTI-1 ('n+1' at byte 344) or NIfTI-2 ('n+2' at 4)."""
    head = _head(path, 348)
    return head[344:348] == b"n+1\x00" or head[4:8] == b"n+2\x00"


@contextmanager
def reading(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn any library exception raised inside the block into an ``InputError`` naming ``path``.

    ``what`` names the format in the message, e.g. "DICOM file".
    """
    try:
        yield
    except InputError:
        raise
    except Exception as error:  # libraries raise anything on corrupt input
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        detail = detail or type(error).__name__
        if isinstance(error, (EOFError, struct.error)):
            detail = f"the file is truncated or corrupt ({detail})"
        raise InputError(f"cannot read {what}: {detail}", path) from error


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path`` for binary writing; move it into place on success.

    The parent folders are created. On any exception the temporary file is removed and
    ``path`` is left untouched, so a failed write never leaves a half-written output.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name[:200]}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "xb") as f:  # 'x': never clobber; normal umask permissions
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
