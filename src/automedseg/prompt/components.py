"""Class probability maps in a padded model space → boxes in original-image pixels.

Torch-free, so that the PyTorch prompters (``prompt.head``, ``prompt.backbone``) and the ONNX
Runtime ones (``runtime.onnx``) share it. The maps are (K, S, S) — or any padded size whose
top-left holds the image resized so that its longest side is ``size`` (S = 256: LiteMedSAM's
model space, see ``segment.model_space``); boxes are XYXY inclusive pixels of the original
image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from automedseg.resample import resize_bilinear
from automedseg.segment.model_space import IMAGE_SIZE, resized_shape
from automedseg.types import Boxes


def boxes_from_probabilities(
    probabilities: np.ndarray,
    original_hw: tuple[int, int],
    label_values: list[int],
    pixel_threshold: float = 0.5,
    score_threshold: float = 0.0,
    min_area_fraction: float = 0.0,
    size: int = IMAGE_SIZE,
    fallback: bool = False,
) -> Boxes:
    """One box per connected component of each class map, mapped to original pixels; a
    component's score is its highest probability. With ``fallback``, a class none of whose
    components reaches ``score_threshold`` keeps its best-scoring one (for data in which every
    image holds every class)."""
    new_h, new_w = resized_shape(original_hw, size)
    scale = size / max(original_hw)
    min_area = min_area_fraction * new_h * new_w
    xyxy, labels, scores = [], [], []
    for label, prob in zip(label_values, probabilities, strict=True):
        prob = prob[:new_h, :new_w]
        regions = [(region, float(prob[region][inside].max()))
                   for region, inside in regions_of(prob > pixel_threshold, min_area)]  # fmt: skip
        kept = [(r, p) for r, p in regions if p >= score_threshold]
        if fallback and regions and not kept:
            kept = [max(regions, key=lambda region: region[1])]
        for (rows, cols), peak in kept:
            h, w = original_hw
            x0, y0 = np.floor(cols.start / scale), np.floor(rows.start / scale)
            x1 = min(w - 1, np.ceil(cols.stop / scale) - 1)
            y1 = min(h - 1, np.ceil(rows.stop / scale) - 1)
            xyxy.append((x0, y0, x1, y1))
            labels.append(label)
            scores.append(peak)
    return Boxes(np.asarray(xyxy, np.float32).reshape(-1, 4), np.asarray(labels, int), scores)


Region = tuple[tuple[slice, ...], np.ndarray]


def regions_of(mask: np.ndarray, min_pixels: float = 0) -> list[Region]:
    """Each connected component of a 2D boolean mask (8-connected) with at least
    ``min_pixels`` pixels, as (its bounding box as slices, the component within that box)."""
    # uint8, not bool: cc3d 4.1 numbers some boolean masks' components with gaps
    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    components, count = cc3d.connected_components(binary, connectivity=8, return_N=True)
    if count == 0:
        return []
    stats = cc3d.statistics(components)
    boxes, areas = stats["bounding_boxes"], stats["voxel_counts"]
    found = [(box, components[box] == index)
             for index, (box, area) in enumerate(zip(boxes, areas, strict=True))
             if index > 0 and area >= max(min_pixels, 1)]  # fmt: skip
    # in the order a row-by-row scan meets them (as scipy.ndimage.label numbers them)
    return sorted(found, key=lambda r: (r[0][0].start, r[0][1].start + int(np.argmax(r[1][0]))))


def map_prompter_boxes(prompter, probabilities: np.ndarray, original_hw: tuple[int, int]) -> Boxes:
    """Boxes of a prompter that predicts class maps (the head and backbone prompters), with
    its labels and thresholds (``labels``, ``pixel_threshold``, ``score_threshold``,
    ``min_area_fraction``), the longest side of its map space (``size``, default 256) and
    ``fallback`` (default False)."""
    return boxes_from_probabilities(
        probabilities,
        original_hw,
        list(prompter.labels),
        prompter.pixel_threshold,
        prompter.score_threshold,
        prompter.min_area_fraction,
        getattr(prompter, "size", IMAGE_SIZE),
        getattr(prompter, "fallback", False),
    )


@dataclass(frozen=True)
class ClassMaps:
    """A map prompter's class probabilities for one plane, as the pipeline refines with them.

    ``probabilities`` is (K, Hp, Wp) in the padded map space whose top-left ``resized`` (h, w)
    holds the image resized so that its longest side is ``size``; channel k is the class
    ``label_values[k]``.
    """

    probabilities: np.ndarray
    resized: tuple[int, int]
    label_values: tuple[int, ...]

    def at(self, original_hw: tuple[int, int]) -> np.ndarray:
        """(K, H, W) float32 probabilities resampled to the original image (bilinear)."""
        h, w = self.resized
        return resize_bilinear(self.probabilities[:, :h, :w], original_hw).astype(np.float32)


class FindsWithMaps:
    """``find`` and ``find_with_maps`` of a prompter whose ``maps(image) -> ClassMaps`` gives
    its class probabilities (the PyTorch and the exported backbone prompters)."""

    def find_with_maps(self, image: np.ndarray) -> tuple[Boxes, ClassMaps]:
        maps = self.maps(image)
        return map_prompter_boxes(self, maps.probabilities, image.shape[:2]), maps

    def find(self, image: np.ndarray, embedding: object | None = None) -> Boxes:
        return self.find_with_maps(image)[0]
