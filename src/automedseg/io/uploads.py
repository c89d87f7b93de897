"""Uploaded files: what they are by their bytes (not their names), stored safely.

``sniff`` names the format from the first bytes; ``store_upload`` writes an upload into a
job's folder as a file with the right extension, or, for a ZIP (a DICOM series), extracts it
flat into a folder after refusing absolute paths, ``..``, links, too many members and too
many bytes (zip bombs).
"""

from __future__ import annotations

import io as bytes_io
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath

from automedseg.errors import InputError
from automedseg.io._common import atomic_open, sniff

SUFFIXES = {
    "png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "tiff": ".tif", "nifti-gz": ".nii.gz",
    "nifti": ".nii", "dicom": ".dcm", "mp4": ".mp4", "avi": ".avi", "mkv": ".mkv",
}  # fmt: skip
ACCEPTED = ("PNG, JPEG, BMP, TIFF, NIfTI (.nii / .nii.gz), DICOM, a ZIP of a DICOM series, "
            "MP4/AVI/MKV")  # fmt: skip
MAX_MEMBERS = 5000


def store_upload(data: bytes, folder: str | os.PathLike[str], name: str = "upload",
                 max_bytes: int = 1 << 30) -> Path:  # fmt: skip
    """Write the uploaded ``data`` into ``folder`` as ``input<suffix>`` (or the folder
    ``input/`` for a ZIP); returns its path. ``InputError`` (naming ``name``) for a format
    that is not accepted or an unsafe archive; nothing is left behind then."""
    kind = sniff(data[:1024])
    if kind is None:
        raise InputError(f"not an accepted file ({ACCEPTED}), judged by its content", name)
    folder = Path(folder)
    if kind == "zip":
        return _extract_zip(data, folder / "input", name, max_bytes)
    path = folder / f"input{SUFFIXES[kind]}"
    with atomic_open(path) as f:
        f.write(data)
    return path


def _safe_member(info: zipfile.ZipInfo, name: str) -> str | None:
    """The member's file name, None for a folder entry; ``InputError`` when unsafe."""
    raw = info.filename.replace("\\", "/")
    member = PurePosixPath(raw)
    if member.is_absolute() or ".." in member.parts or raw.startswith("/") or ":" in raw:
        raise InputError(f"the ZIP holds an unsafe path {info.filename!r}; refused", name)
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(f"the ZIP holds a link {info.filename!r}; refused", name)
    if info.is_dir():
        return None
    return member.name


def _extract_zip(data: bytes, target: Path, name: str, max_bytes: int) -> Path:
    try:
        archive = zipfile.ZipFile(bytes_io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise InputError(f"not a readable ZIP file ({error})", name) from None
    if len(infos) > MAX_MEMBERS:
        raise InputError(f"the ZIP holds {len(infos)} files, more than {MAX_MEMBERS}", name)
    members = [(info, _safe_member(info, name)) for info in infos]
    members = [(info, base) for info, base in members if base and not base.startswith(".")]
    if not members:
        raise InputError("the ZIP holds no files", name)
    if sum(info.file_size for info, _ in members) > max_bytes:
        raise InputError(f"the ZIP unpacks to more than {max_bytes // (1 << 20)} MB", name)
    target.mkdir(parents=True, exist_ok=False)
    written = 0
    try:
        for number, (info, base) in enumerate(members):
            with archive.open(info) as source, open(target / f"{number:05d}_{base}", "xb") as f:
                while block := source.read(1 << 20):
                    written += len(block)
                    if written > max_bytes:  # the sizes in the directory may lie
                        raise InputError("the ZIP unpacks to more than it says", name)
                    f.write(block)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as error:
        _remove_tree(target)
        raise InputError(f"cannot unpack the ZIP ({error})", name) from None
    except InputError:
        _remove_tree(target)
        raise
    return target


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
