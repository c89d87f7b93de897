"""The backbone prompter's input space, without torch (the PyTorch and ONNX prompters and the
trainer share it).

A plane in [0, 1] ((H, W) or (H, W, C); gray is repeated to 3 channels) is resized so that its
longest side is ``size`` (antialiased bilinear, aspect kept), padded bottom/right with black to
a multiple of ``STRIDE`` and normalised with ImageNet's channel means and deviations.

A prompter may have several members (networks at different sizes) and mirror the image
(test-time augmentation): ``views`` gives one member's input — the plane, and its mirror
image as a second batch item — ``member_views`` every member's (in parallel), and
``combined`` averages every member's and view's probabilities in the largest member's
resized space.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from automedseg.resample import resize_antialiased, resize_bilinear
from automedseg.segment.model_space import resized_shape

STRIDE = 32
IMAGENET_MEAN = np.asarray([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.asarray([0.229, 0.224, 0.225], np.float32)


def padded(side: int) -> int:
    """``side`` rounded up to a multiple of ``STRIDE``."""
    return -(-side // STRIDE) * STRIDE


def resized_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]: the plane resized so that its longest side is ``size``."""
    array = np.asarray(image, np.float32)
    array = array[..., None] if array.ndim == 2 else array[..., :3]
    if array.shape[-1] != 3:
        array = np.repeat(array[..., :1], 3, axis=-1)
    return np.clip(resize_antialiased(array, resized_shape(array.shape[:2], size)), 0.0, 1.0)


def normalised(rgb: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) in [0, 1] → (..., 3, H, W) with ImageNet's normalisation."""
    return np.moveaxis((rgb - IMAGENET_MEAN) / IMAGENET_STD, -1, -3).astype(np.float32)


def pad_to(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) placed top-left in a black (H, W, 3) canvas."""
    canvas = np.zeros((*shape, 3), np.float32)
    canvas[: rgb.shape[0], : rgb.shape[1]] = rgb
    return canvas


def backbone_input(image: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(1, 3, Hp, Wp) float32 network input and the (h, w) of the resized plane inside it —
    what training feeds the network (``normalised(pad_to(resized_rgb(...)))``)."""
    rgb = resized_rgb(image, size)
    h, w = rgb.shape[:2]
    return normalised(pad_to(rgb, (padded(h), padded(w))))[None], (h, w)


def views(image: np.ndarray, size: int, flip: bool) -> tuple[np.ndarray, tuple[int, int]]:
    """(V, 3, Hp, Wp) input of one member — the plane, and with ``flip`` its left-right mirror
    as the second item — and the (h, w) of the resized plane inside it. Equal to
    ``backbone_input`` per view, written channel by channel into one array (no padded copy,
    no transposed copy, no concatenation); the mirror is taken of the resized plane (resizing
    is symmetric, so it is the mirrored plane resized)."""
    rgb = resized_rgb(image, size)
    h, w = rgb.shape[:2]
    batch = np.empty((2 if flip else 1, 3, padded(h), padded(w)), np.float32)
    for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)):
        batch[:, c] = -mean / std  # black padding, normalised
        plane = batch[0, c, :h, :w]
        np.subtract(rgb[..., c], mean, out=plane)
        plane /= std
        if flip:
            batch[1, c, :h, :w] = plane[:, ::-1]
    return batch, (h, w)


def member_views(
    image: np.ndarray, sizes: tuple[int, ...], flip: bool, workers: int = 1
) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """``views`` of every member, on up to ``workers`` threads (Pillow's resizing and numpy's
    normalising release the GIL, so two members take about the time of one)."""
    workers = min(workers, len(sizes))
    if workers < 2:
        return [views(image, size, flip) for size in sizes]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda size: views(image, size, flip), sizes))


def combined(
    probabilities: list[np.ndarray], resized: list[tuple[int, int]]
) -> tuple[np.ndarray, tuple[int, int]]:
    """Each member's (V, K, Hp, Wp) probabilities (view 1, if any, of the mirrored plane)
    averaged as (K, h, w) in the largest member's resized space (h, w), which is returned too.
    A member's views are summed before its one resize (resizing is linear)."""
    target = max(resized, key=lambda hw: hw[0] * hw[1])
    total = np.zeros((probabilities[0].shape[1], *target), np.float32)
    for member, (h, w) in zip(probabilities, resized, strict=True):
        maps = member[0, :, :h, :w].copy()
        for view in member[1:]:
            maps += view[:, :h, :w][:, :, ::-1]
        total += maps if (h, w) == target else resize_bilinear(maps, target)
    total /= sum(len(member) for member in probabilities)
    return total, target
