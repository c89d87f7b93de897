"""A folder of frame images as a video, and one label PNG per frame back out.

The layout is that of endoscopy video data sets: ``frames/<seq>/0000.jpg, 0001.jpg, ...``
with ``masks/<seq>/0000.png, ...``. The frames of one folder are its PNG / JPEG / BMP / TIFF
files (hidden files and subfolders are skipped) in name order, which is their time order;
digit runs compare as numbers, so ``frame_2`` comes before ``frame_10`` (zero-padded names
sort the same either way). The result is an ``Image`` with ``spatial_dims=3`` whose axis 0 is
time and whose ``frame_names`` are the file stems.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from automedseg.errors import InputError
from automedseg.io._common import is_raster_name, reading
from automedseg.io.nifti import label_dtype
from automedseg.io.raster import read_raster
from automedseg.io.writers import write_label_png
from automedseg.types import Image

_DIGITS = re.compile(r"(\d+)", flags=re.ASCII)


def _name_key(path: Path) -> tuple[list[int | str], str]:
    """Natural order: split the name into text and numbers ('f10' → ['f', 10, ''])."""
    parts = _DIGITS.split(path.name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], path.name


def frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The raster images directly inside ``folder`` (hidden files skipped), in time order."""
    folder = Path(folder)
    with reading(folder, "frame folder"):
        files = [
            p
            for p in folder.iterdir()
            if is_raster_name(p) and not p.name.startswith(".") and p.is_file()
        ]
    return sorted(files, key=_name_key)


def _describe(image: Image) -> str:
    if image.spatial_dims != 2:
        return f"a stack of {image.array.shape[0]} pages"
    height, width = image.shape
    colour = "gray" if image.channels == 1 else "RGB"
    return f"{width}x{height} {colour} {image.array.dtype}"


def read_frames(folder: str | os.PathLike[str]) -> Image:
    """Read a folder of 2D frame images as a video ``(T, H, W)`` gray or ``(T, H, W, 3)`` RGB.

    Every frame must have the size, channel count and pixel type of the first; the first
    frame that differs raises ``InputError`` naming it. Gray frames keep their pixel type
    and get modality "OT", colour frames are uint8 with modality "RGB". The geometry is the
    identity (pixels and frames are 1 unit), ``frame_names`` are the file stems and
    ``source`` is the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder of frame images", folder)
    files = frame_files(folder)
    if not files:
        raise InputError(
            "no frame images (PNG/JPEG/BMP/TIFF) in this folder (subfolders are not searched)",
            folder,
        )
    names = [f.stem for f in files]
    seen: dict[str, Path] = {}
    for file, name in zip(files, names, strict=True):
        if name in seen:
            raise InputError(
                f"two frames are named '{name}' ({seen[name].name} and {file.name}); "
                "keep one file per frame",
                folder,
            )
        seen[name] = file

    first = read_raster(files[0])
    if first.spatial_dims != 2:
        raise InputError("a frame must be one 2D image, not a multi-page TIFF", files[0])
    array = np.empty((len(files), *first.array.shape), dtype=first.array.dtype)
    array[0] = first.array
    for index, file in enumerate(files[1:], start=1):
        frame = read_raster(file)
        same = frame.array.shape == first.array.shape and frame.array.dtype == first.array.dtype
        if frame.spatial_dims != 2 or not same:
            raise InputError(
                f"this frame is {_describe(frame)} but the first frame ({files[0].name}) is "
                f"{_describe(first)}; all frames of a folder must match",
                file,
            )
        array[index] = frame.array
    return Image(
        array=array,
        spatial_dims=3,
        modality=first.modality,
        source=folder,
        frame_names=names,
        spacing_known=False,
    )


def _check_names(names: Sequence[str], count: int) -> list[str]:
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"{count} label maps but {len(names)} frame names")
    separators = {"/", os.sep, os.altsep or "/"}
    seen: set[str] = set()
    for name in names:
        if name in ("", ".", "..") or any(s in name for s in separators):
            raise ValueError(f"frame name {name!r} cannot be a file name")
        if name.casefold() in seen:  # case-insensitive file systems would merge them
            raise ValueError(f"frame name {name!r} is given twice")
        seen.add(name.casefold())
    return names


def write_frame_masks(
    folder: str | os.PathLike[str], label_maps: np.ndarray, names: Sequence[str]
) -> list[Path]:
    """Write one label PNG per frame, ``folder/<name>.png``, with the label values as they are.

    ``label_maps`` is ``(T, H, W)`` integers (0 = background, at most 65535) and ``names``
    the ``T`` frame names (``Image.frame_names``). Each PNG is uint8, or 16-bit when that
    frame holds a label above 255 (see ``write_label_png``). All frames are first written to
    hidden temporary files, then renamed into place: if any write fails, every file of this
    call is removed (and a failed PNG write leaves files already in ``folder`` untouched).
    Returns the paths written, in frame order.
    """
    labels = np.asarray(label_maps)
    if labels.ndim != 3:
        raise ValueError(f"frame masks need (T, H, W) label maps, got shape {labels.shape}")
    names = _check_names(names, len(labels))
    if label_dtype(labels) == np.uint32:
        raise ValueError("a PNG label map holds labels up to 65535")
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(6)
    temps = [folder / f".{index}.{token}.tmp" for index in range(len(names))]
    targets = [folder / f"{name}.png" for name in names]
    moved: list[Path] = []
    try:
        for temp, label_map in zip(temps, labels, strict=True):
            write_label_png(temp, label_map)
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
            moved.append(target)
    except BaseException:
        for path in temps + moved:
            path.unlink(missing_ok=True)
        if created:
            try:
                folder.rmdir()  # only succeeds when the folder is empty
            except OSError:
                pass
        raise
    return targets
