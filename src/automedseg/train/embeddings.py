"""An on-disk cache of LiteMedSAM image embeddings, so heads train on CPU in minutes.

One ``.npz`` per plane: ``embedding`` (256, 64, 64) float16, ``target`` (256, 256) uint8
label plane in the model's padded space (nearest-neighbour resize, padded with 0),
``valid`` (h, w) of the resized image inside the padding, ``original`` (H, W), ``boxes``
(N, 5) oracle boxes in original pixels with their label (x0, y0, x1, y1, label). A
``cache.json`` records what the entries depend on (segmenter weights' SHA-256, data folder,
channel, label merging); a cache made for anything else is refused. Existing entries are
reused, so an interrupted cache build resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from automedseg import io
from automedseg.data.datasets import DataSet, find_cases
from automedseg.data.planes import Plane, augmented, iter_planes, split_usable
from automedseg.errors import InputError
from automedseg.prompt.oracle import oracle_boxes
from automedseg.segment.litemedsam import (
    IMAGE_SIZE,
    PACKAGED_WEIGHTS_SHA256,
    LiteMedSAMPredictor,
    resized_shape,
)
from automedseg.types import Boxes


@dataclass
class CachedPlane:
    path: Path
    case_id: str
    labels_present: set[int]


def plane_key(plane: Plane) -> str:
    safe = re.sub(r"[^\w.-]", "_", plane.case_id)
    key = safe if plane.index is None else f"{safe}__{plane.index:04d}"
    return key if plane.copy == 0 else f"{key}__aug{plane.copy}"


def padded_target(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels → (256, 256) uint8 in LiteMedSAM's padded space."""
    new_h, new_w = resized_shape(labels.shape)
    tensor = torch.from_numpy(labels.astype(np.float32))[None, None]
    resized = F.interpolate(tensor, size=(new_h, new_w), mode="nearest")[0, 0]
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    out[:new_h, :new_w] = resized.numpy().astype(np.uint8)
    return out


def open_cache(cache_dir: Path, key: dict) -> None:
    """Create the cache folder, or check that an existing one was made for the same ``key``
    (segmenter weights, data, options)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta = cache_dir / "cache.json"
    key = json.loads(json.dumps(key))  # as it reads back from JSON
    if meta.is_file():
        recorded = json.loads(meta.read_text())
        different = sorted(k for k in key if recorded.get(k) != key[k])
        if different:
            raise InputError(
                f"this embedding cache was made for another {', '.join(different)}; "
                "delete it or choose another --cache folder",
                cache_dir,
            )
    else:
        meta.write_text(json.dumps(key, indent=2) + "\n")


def cache_planes(
    planes, predictor: LiteMedSAMPredictor, cache_dir: Path, total: int | None = None,
    progress: bool = True,
) -> list[CachedPlane]:  # fmt: skip
    """Embed each plane once (skipping those already cached); returns the cache entries."""
    entries = []
    iterator = planes
    if progress:
        from tqdm import tqdm

        iterator = tqdm(planes, total=total, desc="embed", unit="plane", file=sys.stderr)
    for plane in iterator:
        path = cache_dir / f"{plane_key(plane)}.npz"
        present = {int(v) for v in np.unique(plane.labels) if v != 0}
        if not path.is_file():
            predictor.set_image(plane.image)
            embedding = predictor.embedding[0].numpy().astype(np.float16)
            _save_npz(
                path,
                embedding=embedding,
                target=padded_target(plane.labels),
                valid=np.asarray(resized_shape(plane.labels.shape)),
                original=np.asarray(plane.labels.shape),
                boxes=_oracle_rows(plane.labels),
            )
        entries.append(CachedPlane(path, plane.case_id, present))
    return entries


def load_entry(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]:
    """(embedding float32 (256, 64, 64), target (256, 256), valid (h, w), original (H, W))."""
    with np.load(path) as data:
        return (
            data["embedding"].astype(np.float32),
            data["target"],
            tuple(int(v) for v in data["valid"]),
            tuple(int(v) for v in data["original"]),
        )


def load_truth(path: Path) -> tuple[tuple[int, int], Boxes]:
    """(original (H, W), oracle boxes in original pixels) of a cached plane."""
    with np.load(path) as data:
        rows = data["boxes"].reshape(-1, 5)
        return tuple(int(v) for v in data["original"]), Boxes(rows[:, :4], rows[:, 4], 1.0)


def _oracle_rows(labels: np.ndarray) -> np.ndarray:
    boxes = oracle_boxes(labels)
    return np.concatenate([boxes.xyxy, boxes.labels[:, None].astype(np.float32)], axis=1)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)


@dataclass
class Split:
    """A data set's usable cases split into training and validation."""

    dataset: DataSet
    train_ids: list[str]
    val_ids: list[str]

    def record(self, val_fraction: float, seed: int, channel: int, choice, limit) -> dict:
        """The fields every training card records about its data and split."""
        return {
            "data": str(self.dataset.root.resolve()),
            "layout": self.dataset.layout,
            "train_cases": len(self.train_ids),
            "val_cases": len(self.val_ids),
            "val_fraction": val_fraction,
            "seed": seed,
            "channel": channel,
            **choice.as_dict(),
            "case_limit": limit,
        }


def split_data(
    data: str | Path, out: Path, *, val_fraction: float, seed: int, limit: int | None
) -> Split:
    """Split the usable cases (the first ``limit``) and write OUT/train_cases.txt and
    val_cases.txt."""
    dataset = find_cases(data)
    usable = [c.case_id for c in dataset.cases if not c.problem]
    train_ids, val_ids = split_usable(usable, val_fraction, seed, limit)
    io.write_text(out / "train_cases.txt", "\n".join(train_ids) + "\n")
    io.write_text(out / "val_cases.txt", "\n".join(val_ids) + "\n")
    return Split(dataset, train_ids, val_ids)


@dataclass
class CachedSplit(Split):
    """A split whose every plane's embedding is cached."""

    train: list[CachedPlane]
    val: list[CachedPlane]

    def record(self, val_fraction: float, seed: int, channel: int, choice, limit) -> dict:
        return {
            **super().record(val_fraction, seed, channel, choice, limit),
            "train_planes": len(self.train),
            "val_planes": len(self.val),
        }


def cached_split(
    data: str | Path, out: Path, cache: str | Path | None, predictor: LiteMedSAMPredictor, *,
    val_fraction: float, seed: int, channel: int, choice, limit: int | None,
    empty_fraction: float, progress: bool, log, delta_sha256: str | None = None,
    augment_copies: int = 0,
) -> CachedSplit:  # fmt: skip
    """Split the usable cases (the first ``limit``), write OUT/train_cases.txt and
    val_cases.txt, and cache every plane's embedding in ``cache`` (default OUT/cache).
    ``delta_sha256`` names the adapter delta in ``predictor``'s encoder, if any. With
    ``augment_copies`` N, N augmented copies of every training plane (``data.planes.augmented``)
    are cached and trained on too."""
    split = split_data(data, out, val_fraction=val_fraction, seed=seed, limit=limit)
    dataset, train_ids, val_ids = split.dataset, split.train_ids, split.val_ids
    cache_dir = Path(cache) if cache else out / "cache"
    open_cache(
        cache_dir,
        {"segmenter_sha256": PACKAGED_WEIGHTS_SHA256, "segmenter_delta_sha256": delta_sha256,
         "data": str(Path(data).resolve()), "channel": channel, **choice.as_dict()},
    )  # fmt: skip
    log(f"caching embeddings of {len(train_ids)} train + {len(val_ids)} val cases in {cache_dir}")

    def planes(ids: list[str], offset: int):
        return iter_planes(dataset, ids, channel, empty_fraction, seed + offset, choice)

    train, val = (
        cache_planes(planes(ids, i), predictor, cache_dir, progress=progress)
        for i, ids in enumerate((train_ids, val_ids))
    )
    if augment_copies > 0:
        log(f"caching {augment_copies} augmented copies of the {len(train)} training planes")
        numbers = range(1, augment_copies + 1)
        copies = (augmented(p, n) for p in planes(train_ids, 0) for n in numbers)
        train += cache_planes(copies, predictor, cache_dir, len(train) * augment_copies, progress)
    return CachedSplit(dataset, train_ids, val_ids, train, val)
