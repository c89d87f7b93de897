"""PNG label maps, overlay pictures and JSON. Every write is atomic (see ``atomic_open``)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from automedseg.io._common import atomic_open, reading
from automedseg.io.nifti import label_dtype
from automedseg.io.overlay import blend_labels, to_display_rgb
from automedseg.types import Image


def _save_png(path: Path, array: np.ndarray) -> Path:
    picture = PILImage.fromarray(array)
    with atomic_open(path) as f:
        picture.save(f, format="PNG")
    return path


def write_label_png(path: str | os.PathLike[str], label_map: np.ndarray) -> Path:
    """Write an ``(H, W)`` label map as a gray PNG with the label values as they are.

    uint8 when every label is ≤ 255, else 16-bit. Returns the path written.
    """
    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"a label PNG needs an (H, W) label map, got shape {labels.shape}")
    dtype = label_dtype(labels)
    if dtype == np.uint32:
        raise ValueError("a PNG label map holds labels up to 65535")
    return _save_png(Path(path), np.ascontiguousarray(labels.astype(dtype)))


def _pick_slice(label_map: np.ndarray) -> int:
    """The slice with the most labelled voxels (the middle one when nothing is labelled)."""
    areas = (label_map != 0).reshape(len(label_map), -1).sum(axis=1)
    return int(np.argmax(areas)) if areas.any() else len(label_map) // 2


def write_overlay_png(
    path: str | os.PathLike[str],
    image: Image,
    label_map: np.ndarray,
    *,
    z: int | None = None,
    alpha: float = 0.45,
) -> Path:
    """Write ``image`` as an 8-bit RGB PNG with each label blended in its colour and outlined.

    Gray images use ``image.window`` when set, else a 0.5–99.5 percentile stretch; RGB is
    kept. For a volume, slice ``z`` is drawn (default: the slice with the largest labelled
    area). ``label_map`` has the image's spatial shape. Returns the path written.
    """
    labels = np.asarray(label_map)
    if labels.shape != image.shape:
        raise ValueError(f"label map {labels.shape} does not match image {image.shape}")
    array = image.array
    if image.spatial_dims == 3:
        index = _pick_slice(labels) if z is None else int(z)
        if not 0 <= index < image.shape[0]:
            raise ValueError(f"slice z={index} is outside the volume of {image.shape[0]} slices")
        array, labels = array[index], labels[index]
    rgb = to_display_rgb(array, image.window)
    return _save_png(Path(path), blend_labels(rgb, labels, alpha))


def to_jsonable(value: Any) -> Any:
    """Plain-Python copy of ``value``: numpy scalars/arrays, paths, tuples, sets, dataclasses.

    Non-finite floats become ``None`` so the output is strict JSON.
    """
    if isinstance(value, dict):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=str)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    return value


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as UTF-8 JSON, indent 2 (numpy values converted). Returns the path."""
    text = json.dumps(to_jsonable(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    path = Path(path)
    with atomic_open(path) as f:
        f.write(text.encode("utf-8"))
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text (a report) atomically. Returns the path."""
    path = Path(path)
    with atomic_open(path) as f:
        f.write(text.encode("utf-8"))
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write raw bytes (a serialised model) atomically. Returns the path."""
    path = Path(path)
    with atomic_open(path) as f:
        f.write(data)
    return path


def write_figure(path: str | os.PathLike[str], figure: Any, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically. Returns the path."""
    path = Path(path)
    with atomic_open(path) as f:
        figure.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return path


def write_animated_gif(
    path: str | os.PathLike[str], frames_rgb: np.ndarray, fps: float = 10
) -> Path:
    """Write ``(T, H, W, 3)`` uint8 RGB frames as a looping animated GIF with Pillow.

    Each frame is reduced to a 256-colour palette; GIF timing is in 1/100 s, so ``fps`` is
    rounded to the nearest frame duration of 10 ms or more. Returns the path written.
    """
    frames = np.asarray(frames_rgb)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"an animated GIF needs (T, H, W, 3) frames, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"an animated GIF needs uint8 frames, got {frames.dtype}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    pictures = [PILImage.fromarray(np.ascontiguousarray(frame)) for frame in frames]
    duration = max(10, round(1000 / fps / 10) * 10)
    path = Path(path)
    with atomic_open(path) as f:
        pictures[0].save(
            f, format="GIF", save_all=True, append_images=pictures[1:], duration=duration, loop=0
        )
    return path


def write_arrays(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> Path:
    """Write named arrays as an ``.npz`` (plain arrays: read back with ``read_arrays``)."""
    path = Path(path)
    with atomic_open(path) as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def read_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written by ``write_arrays`` (pickled objects refused)."""
    with reading(path, "array file"), np.load(path, allow_pickle=False) as stored:
        return {k: stored[k] for k in stored.files}
