"""The inputs of a cohort: a folder searched recursively, or a CSV list of paths.

Each input becomes a ``Source``: one case with the files it is read from.

* a NIfTI file, a video file, a 2D image file → one case each;
* the DICOM files of a folder → one case per series (SeriesInstanceUID), its files in slice
  order; a single-file series (a 2D or multi-frame image) is a case too;
* with ``frames=True`` (a video task), a folder of PNG/JPEG/... images is one case (its frames
  in name order) instead of one case per image.

Hidden files and folders, and files of no image format (notes, JSON, CSV) are skipped. A case
id is the input's path below the root, with ``__`` for each folder separator, and the series
number after a folder's name when it holds several series.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from automedseg.errors import InputError
from automedseg.io._common import has_dicom_magic, has_nifti_magic, is_nifti_name, reading
from automedseg.io.dicom_series import read_series_files, series_in
from automedseg.io.frames import frame_files
from automedseg.io.read import read_image
from automedseg.io.video import is_video_name
from automedseg.types import Image

Kind = Literal["file", "frames", "dicom"]


@dataclass(frozen=True)
class Source:
    """One case's input."""

    case_id: str
    """Unique within the cohort; safe as a folder name."""
    path: Path
    """The file, the frame folder, or the folder of a DICOM series."""
    kind: Kind
    files: tuple[Path, ...] = ()
    """For ``dicom``: the series' files in slice order."""


def read_source(source: Source) -> Image:
    """The image of a case (``InputError`` naming its path when it cannot be read)."""
    if source.kind == "dicom":
        return read_series_files(list(source.files), source.path)
    return read_image(source.path)


def source_files(source: Source) -> list[Path]:
    """Every file a case is read from, in a fixed order."""
    if source.kind == "dicom":
        return list(source.files)
    if source.kind == "frames":
        return frame_files(source.path)
    if source.path.is_dir():
        return sorted(p for p in source.path.iterdir() if p.is_file())
    return [source.path]


def content_sha256(source: Source) -> str:
    """SHA-256 over the names (relative to the case's path) and bytes of its files."""
    digest = hashlib.sha256()
    with reading(source.path, "input"):
        for file in source_files(source):
            name = file.name if file == source.path else os.path.relpath(file, source.path)
            digest.update(name.encode() + b"\0")
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _kind_of_file(path: Path) -> str | None:
    if path.name.startswith(".") or not path.is_file():
        return None
    if is_nifti_name(path) or has_nifti_magic(path):
        return "nifti"
    if path.suffix.lower() in (".dcm", ".dicom") or has_dicom_magic(path):
        return "dicom"
    if is_video_name(path):
        return "video"
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
        return "raster"
    return None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".dicom"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _identify(relative: Path) -> str:
    parts = [p for p in relative.parts if p not in ("", ".")] or ["input"]
    return re.sub(r"[^\w.-]", "_", "__".join(parts))


def _folder_sources(folder: Path, root: Path, frames: bool) -> list[Source]:
    with reading(folder, "folder"):
        files = sorted(p for p in folder.iterdir() if p.is_file())
    kinds = {p: _kind_of_file(p) for p in files}
    found: list[Source] = []
    here = folder.relative_to(root) if folder != root else Path(folder.name)
    if any(k == "dicom" for k in kinds.values()):
        series = series_in(folder)
        for number, (uid, names) in enumerate(series.items(), start=1):
            name = here if len(series) == 1 else here / f"series{number}_{uid[-8:]}"
            found.append(Source(_identify(name), folder, "dicom", tuple(Path(n) for n in names)))
    rasters = [p for p, k in kinds.items() if k == "raster"]
    if frames and rasters:
        found.append(Source(_identify(here), folder, "frames"))
        rasters = []
    for path, kind in kinds.items():
        if kind in ("nifti", "video") or path in rasters:
            relative = path.relative_to(root) if folder != root else Path(path.name)
            found.append(Source(_identify(relative.with_name(_stem(path))), path, "file"))
    return found


def find_sources(root: str | os.PathLike[str], frames: bool = False) -> list[Source]:
    """Every case below ``root`` (a folder searched recursively, or one input file), in path
    order; ``frames``: a folder of images is one video (see the module's docstring)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise InputError("does not exist", root)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return read_source_list(root)
        return [Source(_identify(Path(_stem(root))), root, "file")]
    found: list[Source] = []
    for folder, subfolders, _ in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += _folder_sources(Path(folder), root, frames)
    return unique_ids(found)


def read_source_list(path: str | os.PathLike[str]) -> list[Source]:
    """The cases of a CSV file: a ``path`` column (else the first column) of files or folders,
    relative to the CSV's folder or absolute, and an optional ``case_id`` column."""
    path = Path(path)
    with reading(path, "CSV list of inputs"), open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise InputError("the CSV lists no inputs", path)
    header = [cell.strip().lower() for cell in rows[0]]
    has_header = "path" in header
    column = header.index("path") if has_header else 0
    ids = header.index("case_id") if "case_id" in header else None
    sources = []
    for row in rows[1:] if has_header else rows:
        if column >= len(row) or not row[column].strip():
            continue
        target = Path(row[column].strip()).expanduser()
        target = target if target.is_absolute() else path.parent / target
        case_id = row[ids].strip() if ids is not None and ids < len(row) else ""
        listed = Path(row[column].strip())  # its folder and name: readable, mostly unique
        name = case_id or Path(*listed.parts[-2:-1], _stem(target)).as_posix()
        sources.append(Source(_identify(Path(name)), target, "file"))
    return unique_ids(sources)


def unique_ids(sources: list[Source]) -> list[Source]:
    """The sources with repeated case ids made unique (``_2``, ``_3``... in order)."""
    seen: dict[str, int] = {}
    out = []
    for source in sources:
        count = seen.get(source.case_id, 0) + 1
        seen[source.case_id] = count
        if count > 1:
            source = Source(f"{source.case_id}_{count}", source.path, source.kind, source.files)
        out.append(source)
    return out
