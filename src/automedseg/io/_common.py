"""Helpers shared by the readers and writers: file sniffing, error wrapping, atomic writes."""

from __future__ import annotations

import gzip
import io
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


def head_bytes(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _nifti_header(head: bytes) -> bool:
    if len(head) < 348:
        return False
    little = int.from_bytes(head[:4], "little")
    big = int.from_bytes(head[:4], "big")
    return (348 in (little, big) and head[344:347] in (b"n+1", b"ni1")) or head[4:7] == b"n+2"


def sniff(head: bytes) -> str | None:
    """The format of a file from its first bytes (at least 352 of them when there are), or
    None: one of ``SUFFIXES``' keys, or ``zip``."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM") and len(head) > 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "mkv"
    if head.startswith(b"\x1f\x8b"):
        try:
            inner = gzip.GzipFile(fileobj=io.BytesIO(head)).read(352)
        except (OSError, EOFError):
            inner = b""
        return "nifti-gz" if _nifti_header(inner) else None
    return "nifti" if _nifti_header(head) else None


KINDS = {
    "png": "a PNG image", "jpeg": "a JPEG image", "bmp": "a BMP image", "tiff": "a TIFF image",
    "dicom": "DICOM", "zip": "a ZIP archive", "mp4": "an MP4/MOV video", "avi": "an AVI video",
    "mkv": "an MKV/WebM video", "nifti-gz": "a NIfTI volume", "nifti": "a NIfTI volume",
}  # fmt: skip
"""What ``sniff``'s formats are called in messages."""


def what_is(path: Path) -> str:
    """What a file holds, judged by its bytes: "a PNG image", "text", "empty", ..."""
    head = head_bytes(path, 1024)
    if not head:
        return "nothing (it is empty)"
    kind = sniff(head)
    if kind is not None:
        return KINDS[kind]
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "data of no image format automedseg knows"


def has_dicom_magic(path: Path) -> bool:
    """True when the file has the DICOM Part 10 preamble: 'DICM' at byte 128."""
    return head_bytes(path, 132)[128:132] == b"DICM"


def has_nifti_magic(path: Path) -> bool:
    """True for an uncompressed single-file NIfTI-1 ('n+1' at byte 344) or NIfTI-2 ('n+2' at 4)."""
    head = head_bytes(path, 348)
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
