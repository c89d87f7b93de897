"""COCO results JSON of 2D predictions (instance masks as run-length encodings, pycocotools).

``coco_annotations`` turns one image's objects into annotation dicts (no ids yet);
``write_coco`` numbers images and annotations and writes one file that
``pycocotools.coco.COCO`` loads, with the task's labels as categories.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from automedseg.io.writers import write_json


def coco_annotations(
    instance_map: np.ndarray, labels: Sequence[int], scores: Sequence[float]
) -> list[dict]:
    """One annotation per object ``n`` (1-based) present in the ``(H, W)`` ``instance_map``:
    category ``labels[n-1]``, ``score``, RLE ``segmentation``, ``area`` and XYWH ``bbox``."""
    from pycocotools import mask as rle

    out = []
    for number, (label, score) in enumerate(zip(labels, scores, strict=True), start=1):
        mask = np.asfortranarray(instance_map == number, dtype=np.uint8)
        if not mask.any():
            continue
        encoded = rle.encode(mask)
        out.append({
            "category_id": int(label),
            "score": round(float(score), 4),
            "segmentation": {"size": [int(s) for s in encoded["size"]],
                             "counts": encoded["counts"].decode("ascii")},
            "area": float(rle.area(encoded)),
            "bbox": [round(float(v), 2) for v in rle.toBbox(encoded)],
            "iscrowd": 0,
        })  # fmt: skip
    return out


def write_coco(
    path: str | os.PathLike[str],
    images: Sequence[tuple[str, tuple[int, int], list[dict]]],
    categories: Mapping[int, str],
) -> Path:
    """Write ``images`` — (file name, (H, W), its annotations) — as one COCO JSON; image and
    annotation ids are 1, 2, ... in order. The write is atomic."""
    entries, annotations = [], []
    for image_id, (name, (height, width), objects) in enumerate(images, start=1):
        entries.append({"id": image_id, "file_name": name, "height": int(height),
                        "width": int(width)})  # fmt: skip
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
    return write_json(path, {
        "info": {"description": "automedseg predictions"},
        "images": entries,
        "annotations": annotations,
        "categories": [{"id": int(k), "name": str(v)} for k, v in sorted(categories.items())],
    })  # fmt: skip
