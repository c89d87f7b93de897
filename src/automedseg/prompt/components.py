"""Class probability maps in LiteMedSAM's model space → boxes in original-image pixels.

Torch-free, so that the PyTorch head prompter (``prompt.head``) and the ONNX Runtime one
(``runtime.onnx``) share it. The maps are (K, 256, 256) in the padded model space (see
``segment.model_space``); boxes are XYXY inclusive pixels of the original image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from automedseg.segment.model_space import IMAGE_SIZE, resized_shape
from automedseg.types import Boxes


def boxes_from_probabilities(
    probabilities: np.ndarray,
    original_hw: tuple[int, int],
    label_values: list[int],
    pixel_threshold: float = 0.5,
    score_threshold: float = 0.0,
    min_area_fraction: float = 0.0,
) -> Boxes:
    """One box per connected component of each class map, mapped to original pixels."""
    new_h, new_w = resized_shape(original_hw)
    scale = IMAGE_SIZE / max(original_hw)
    min_area = min_area_fraction * new_h * new_w
    xyxy, labels, scores = [], [], []
    for label, prob in zip(label_values, probabilities, strict=True):
        prob = prob[:new_h, :new_w]
        components, count = ndimage.label(prob > pixel_threshold, structure=np.ones((3, 3)))
        if count == 0:
            continue
        index = np.arange(1, count + 1)
        areas = ndimage.sum_labels(np.ones_like(prob), components, index)
        peaks = ndimage.maximum(prob, components, index)
        for region, area, peak in zip(ndimage.find_objects(components), areas, peaks, strict=True):
            if area < min_area or peak < score_threshold:
                continue
            rows, cols = region
            h, w = original_hw
            x0, y0 = np.floor(cols.start / scale), np.floor(rows.start / scale)
            x1 = min(w - 1, np.ceil(cols.stop / scale) - 1)
            y1 = min(h - 1, np.ceil(rows.stop / scale) - 1)
            xyxy.append((x0, y0, x1, y1))
            labels.append(label)
            scores.append(float(peak))
    return Boxes(np.asarray(xyxy, np.float32).reshape(-1, 4), np.asarray(labels, int), scores)


def map_prompter_boxes(prompter, probabilities: np.ndarray, original_hw: tuple[int, int]) -> Boxes:
    """Boxes of a prompter that predicts class maps (the PyTorch and ONNX head prompters), with
    its labels and thresholds (``labels``, ``pixel_threshold``, ``score_threshold``,
    ``min_area_fraction``)."""
    return boxes_from_probabilities(
        probabilities,
        original_hw,
        list(prompter.labels),
        prompter.pixel_threshold,
        prompter.score_threshold,
        prompter.min_area_fraction,
    )
