"""PNG / JPEG / BMP / TIFF with Pillow.

Gray images keep their bit depth (uint8, uint16, int32 or float32) and get modality "OT";
colour images become ``(H, W, 3)`` uint8 RGB with modality "RGB". Alpha is dropped, a palette
becomes RGB (or gray when every palette entry is gray). Pixels are 1 mm: a DPI in the file
says nothing about the anatomy, so the geometry is the identity. A multi-page TIFF whose
pages share one size and mode becomes a volume ``(Z, Y, X[, 3])``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from automedseg.errors import InputError
from automedseg.io._common import reading
from automedseg.types import Geometry, Image

# Pillow modes whose pixels are already one gray channel of a numeric type.
_GRAY_MODES = {
    "L": np.uint8,
    "I;16": np.uint16,
    "I;16L": np.uint16,
    "I;16B": np.uint16,
    "I;16N": np.uint16,
    "I": np.int32,
    "F": np.float32,
}


def _palette_is_gray(img: PILImage.Image) -> bool:
    palette = img.getpalette()  # flat [r, g, b, r, g, b, ...] (RGB palettes)
    if not palette or img.palette is None or img.palette.mode != "RGB":
        return False
    rgb = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
    return bool(np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2]))


def pil_to_array(img: PILImage.Image) -> np.ndarray:
    """One Pillow frame as ``(H, W)`` gray (dtype kept) or ``(H, W, 3)`` uint8 RGB."""
    mode = img.mode
    if mode in _GRAY_MODES:
        return np.asarray(img).astype(_GRAY_MODES[mode], copy=False)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode == "LA" or mode == "La":
        return np.asarray(img.convert("L"))
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        if _palette_is_gray(img) and not has_alpha:
            return np.asarray(img.convert("L"))
        return np.asarray(img.convert("RGBA").convert("RGB"))
    if mode in ("RGBA", "RGBa", "RGBX"):
        return np.asarray(img.convert("RGB"))
    if mode == "RGB":
        return np.asarray(img)
    # CMYK, YCbCr, LAB, HSV and anything else Pillow can convert.
    return np.asarray(img.convert("RGB"))


def _frames(img: PILImage.Image) -> list[np.ndarray]:
    count = int(getattr(img, "n_frames", 1))
    if count <= 1 or img.format != "TIFF":
        return [pil_to_array(img)]
    arrays = []
    for index in range(count):
        img.seek(index)
        arrays.append(pil_to_array(img))
    return arrays


SCREEN_DPI = (72.0, 96.0)
"""Resolutions that image software writes by default: they say nothing about the pixel size."""


def pixel_size_mm(info: dict) -> tuple[float, float] | None:
    """(row, column) pixel size in mm from an image's stored resolution (PNG pHYs in pixels
    per metre, TIFF/JPEG/BMP resolution, as Pillow's ``dpi``), unless it is a screen default."""
    dpi = info.get("dpi")
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    if not (x > 0 and y > 0) or any(abs(v - d) < 0.5 for v in (x, y) for d in SCREEN_DPI):
        return None
    return 25.4 / y, 25.4 / x


def read_raster(path: str | os.PathLike[str]) -> Image:
    """Read a PNG, JPEG, BMP or TIFF file as a 2D ``Image`` (a TIFF stack as a volume); its
    stored resolution, when there is one (``pixel_size_mm``), gives the pixel size."""
    path = Path(path)
    with reading(path, "image file"), PILImage.open(path) as img:
        img.load()
        arrays = _frames(img)
        size = pixel_size_mm(img.info)
    shapes = {(a.shape, a.dtype) for a in arrays}
    if len(shapes) > 1:
        raise InputError(
            f"multi-page TIFF with {len(arrays)} pages of different sizes or types; "
            "give one image or a stack of equal pages",
            path,
        )
    array = np.ascontiguousarray(arrays[0] if len(arrays) == 1 else np.stack(arrays))
    spatial_dims = 2 if len(arrays) == 1 else 3
    is_rgb = array.ndim == spatial_dims + 1
    spacing = size if spatial_dims == 2 else None  # a TIFF stack's slice distance is unknown
    return Image(
        array=array,
        spatial_dims=spatial_dims,
        geometry=Geometry() if spacing is None else Geometry.from_spacing(spacing),
        modality="RGB" if is_rgb else "OT",
        source=path,
        spacing_known=spacing is not None,
    )
