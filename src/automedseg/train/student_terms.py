"""The distilled encoder's other losses: what the task's models read from its embedding.

**The mask term.** An embedding close to the teacher's in mean squared error can still move
a mask's boundary: the mask decoder weighs some of the 256 channels far more than others.
This loss prompts the task's frozen prompt encoder and mask decoder (fine-tuning delta
included) with boxes around a training plane's ground-truth components, jittered as a
prompter's would be, once on the student's embedding and once on the teacher's cached one,
and takes the binary cross-entropy of the student's mask logits against the teacher's mask
probabilities. The boxes surround the components of the labels chosen (the task's); those of
the training planes (never the validation split's) are read once into ``OUT/cache/boxes.npz``.

**The head term.** A task whose prompter is a head on the embedding (``prompt.head``) finds
its boxes from the embedding too: the binary cross-entropy of the frozen head's class maps
from the student's embedding against its maps from the teacher's, on every row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from automedseg import io
from automedseg.data.datasets import LabelChoice
from automedseg.prompt.oracle import oracle_boxes
from automedseg.segment.model_space import IMAGE_SIZE

MAX_BOXES = 8
"""Boxes kept per plane (its largest components)."""
VIEWS = 3
"""The cache's rows per plane: the plane, its left-right and its up-down mirror image."""
JITTER = 0.1
"""Each box side moves by up to this share of the box's width or height."""


class Decoder(Protocol):
    def decode(self, embedding: torch.Tensor, boxes_256: torch.Tensor) -> torch.Tensor: ...


def plane_boxes(labels: np.ndarray) -> np.ndarray:
    """(VIEWS, MAX_BOXES, 4) model-space XYXY edges around the components of an (H, W) label
    map, in the plane and in its two mirror images (the cache's views); unused rows NaN."""
    h, w = labels.shape
    scale = IMAGE_SIZE / max(h, w)
    xyxy = oracle_boxes(labels).xyxy
    areas = (xyxy[:, 2] - xyxy[:, 0] + 1) * (xyxy[:, 3] - xyxy[:, 1] + 1)
    xyxy = xyxy[np.argsort(-areas, kind="stable")[:MAX_BOXES]]
    x1, y1 = xyxy[:, 0] * scale, xyxy[:, 1] * scale
    x2, y2 = (xyxy[:, 2] + 1) * scale, (xyxy[:, 3] + 1) * scale
    out = np.full((VIEWS, MAX_BOXES, 4), np.nan, np.float32)
    size, n = IMAGE_SIZE, len(xyxy)
    out[0, :n] = np.stack([x1, y1, x2, y2], axis=1)
    out[1, :n] = np.stack([size - x2, y1, size - x1, y2], axis=1)
    out[2, :n] = np.stack([x1, size - y2, x2, size - y1], axis=1)
    return out


def read_boxes(folder: Path, planes: Iterator, count: int,
               labels: LabelChoice | None = None) -> np.ndarray:  # fmt: skip
    """The boxes of the cache's rows, (count × VIEWS, MAX_BOXES, 4), around the components of
    the ``labels`` chosen (the task's: a larynx frame's largest component is "other tissue"),
    kept in ``folder``/boxes.npz: written from ``planes`` (their label maps, in the cache's
    order) the first time or for another choice, read afterwards."""
    labels = labels or LabelChoice()
    path, choice = folder / "boxes.npz", json.dumps(labels.as_dict(), sort_keys=True)
    if path.exists():
        stored = io.read_arrays(path)
        if len(stored["boxes"]) == count * VIEWS and str(stored.get("labels", "")) == choice:
            return stored["boxes"]
    boxes = np.concatenate([plane_boxes(labels.apply(p.labels)) for p in planes] or
                           [np.empty((0, MAX_BOXES, 4), np.float32)])  # fmt: skip
    io.write_arrays(path, {"boxes": boxes, "labels": np.array(choice)})
    return boxes


def pick_boxes(
    boxes: np.ndarray, rng: np.random.Generator, most: int
) -> tuple[np.ndarray, np.ndarray]:
    """One jittered box for each of at most ``most`` random rows of (B, MAX_BOXES, 4) that
    have any: the rows (sorted) and their (n, 4) boxes, clipped to the model space."""
    having = np.flatnonzero(~np.isnan(boxes[:, :, 0]).all(axis=1))
    rows = np.sort(rng.permutation(having)[:most])
    chosen = []
    for row in rows:
        valid = boxes[row][~np.isnan(boxes[row, :, 0])]
        chosen.append(valid[rng.integers(len(valid))])
    picked = np.asarray(chosen, np.float32).reshape(-1, 4)
    sides = np.tile(picked[:, 2:] - picked[:, :2], 2)  # width, height, width, height
    picked = picked + rng.uniform(-JITTER, JITTER, picked.shape) * sides
    return rows, np.clip(picked, 0, IMAGE_SIZE).astype(np.float32)


def mask_loss(
    decoder: Decoder, predicted: torch.Tensor, target: torch.Tensor, boxes: np.ndarray,
    rng: np.random.Generator, most: int,
) -> torch.Tensor | None:  # fmt: skip
    """The binary cross-entropy of the masks decoded from the student's embeddings
    (``predicted``, with gradients) against those from the teacher's (``target``), one jittered
    ground-truth box on each of at most ``most`` rows (the decoder's backward pass is the
    costly part); None when no row has a box."""
    rows, picked = pick_boxes(boxes, rng, most)
    if len(rows) == 0:
        return None
    index, prompts = torch.from_numpy(rows), torch.from_numpy(picked)
    return matched(lambda e: decoder.decode(e, prompts), predicted[index], target[index])


def matched(model, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The binary cross-entropy of ``model``'s logits from the student's embeddings against
    its probabilities from the teacher's (computed without gradients)."""
    with torch.no_grad():
        wanted = torch.sigmoid(model(target).float())
    return nn.functional.binary_cross_entropy_with_logits(model(predicted).float(), wanted)


def frozen(model: nn.Module) -> nn.Module:
    """``model`` in evaluation mode with no gradients of its own."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


@dataclass
class MaskTerm:
    """The mask loss as a term of the distillation loss: ``weight`` × ``mask_loss`` on at most
    ``rows`` rows of each batch, ``boxes`` holding every cache row's boxes."""

    decoder: Decoder
    boxes: np.ndarray
    weight: float
    rows: int = 2

    def __call__(self, predicted: torch.Tensor, target: torch.Tensor, cache_rows: np.ndarray,
                 rng: np.random.Generator) -> torch.Tensor | None:  # fmt: skip
        loss = mask_loss(self.decoder, predicted, target, self.boxes[cache_rows], rng, self.rows)
        return None if loss is None else self.weight * loss


@dataclass
class HeadTerm:
    """``weight`` × the binary cross-entropy of a frozen head prompter's class logits from
    the student's embedding against its class probabilities from the teacher's."""

    head: nn.Module
    weight: float

    def __call__(self, predicted: torch.Tensor, target: torch.Tensor, cache_rows: np.ndarray,
                 rng: np.random.Generator) -> torch.Tensor:  # fmt: skip
        return self.weight * matched(self.head, predicted, target)


class Term(Protocol):
    def __call__(self, predicted: torch.Tensor, target: torch.Tensor, cache_rows: np.ndarray,
                 rng: np.random.Generator) -> torch.Tensor | None: ...  # fmt: skip
