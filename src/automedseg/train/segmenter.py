"""Fine-tuning LiteMedSAM on a user's data: ``--method decoder``.

Reads top to bottom: split → cache embeddings (the same cache as head training) → train the
mask decoder on cached embeddings with jittered ground-truth boxes (checkpoint each epoch) →
keep the epoch with the best validation Dice → save the decoder as a delta + card.

Prompts are the boxes of the ground truth's connected components in LiteMedSAM's 256×256
model space, each side moved by a normal error of ``jitter`` times the box's size (as a
detector errs); the loss is binary cross-entropy plus soft Dice against that component's mask.
Validation scores the untouched boxes, so the card's Dice is the oracle-box Dice in model
space, for the frozen decoder and the tuned one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from automedseg.checkpoints import read_training_state
from automedseg.errors import InputError
from automedseg.evaluate.datasets import LabelChoice
from automedseg.segment.delta import METHODS, save_delta, trainable
from automedseg.train.embeddings import CachedPlane, cached_split, load_entry
from automedseg.train.head import TrainLog

MIN_TRAINING_PIXELS = 16
"""Smaller components (annotation specks, in model-space pixels) are not training targets."""


@dataclass(frozen=True)
class Component:
    """One ground-truth object of a cached plane, in model space."""

    label: int
    box: np.ndarray
    """XYXY inclusive, float32."""
    mask: np.ndarray
    """(h, w) bool over the plane's valid region."""


def components(target: np.ndarray, valid: tuple[int, int]) -> list[Component]:
    """Every connected component (8-connected, as oracle boxes are) of every label in a
    padded (256, 256) target."""
    h, w = valid
    plane = target[:h, :w]
    found = []
    for label in np.unique(plane):
        if label == 0:
            continue
        parts, _ = ndimage.label(plane == label, structure=np.ones((3, 3)))
        for index, region in enumerate(ndimage.find_objects(parts), start=1):
            rows, cols = region
            box = np.array([cols.start, rows.start, cols.stop - 1, rows.stop - 1], np.float32)
            found.append(Component(int(label), box, parts == index))
    return found


def jittered(box: np.ndarray, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """The box with each side moved by N(0, jitter × side length), kept inside 0..255."""
    size = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1] * 2, np.float32)
    moved = box + rng.normal(0.0, jitter, 4).astype(np.float32) * size
    x0, x1 = sorted((moved[0], moved[2]))
    y0, y1 = sorted((moved[1], moved[3]))
    return np.clip(np.array([x0, y0, x1, y1], np.float32), 0, 255)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice, (N, h, w) logits against (N, h, w) 0/1 targets."""
    prob = torch.sigmoid(logits)
    overlap = (prob * target).sum((1, 2))
    dice = 1 - (2 * overlap + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()


def train_epoch(model, optimizer, entries, jitter, boxes_per_plane, rng) -> float:
    """One pass over the training planes with foreground; returns the mean loss."""
    model.mask_decoder.train()
    losses = []
    for i in rng.permutation(len(entries)):
        embedding, target, valid, _ = load_entry(entries[i].path)
        found = [c for c in components(target, valid) if c.mask.sum() >= MIN_TRAINING_PIXELS]
        if not found:
            continue
        picked = [found[j] for j in rng.integers(0, len(found), boxes_per_plane)]
        boxes = np.stack([jittered(c.box, jitter, rng) for c in picked])
        logits = model.decode(torch.from_numpy(embedding)[None], torch.from_numpy(boxes))
        h, w = valid
        truth = torch.from_numpy(np.stack([c.mask for c in picked]).astype(np.float32))
        loss = segmentation_loss(logits[:, 0, :h, :w], truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.inference_mode()
def oracle_dice(model, entries: list[CachedPlane]) -> float:
    """Mean Dice per plane and label, every component prompted by its exact box (as
    ``evaluate --prompts oracle`` does, in model space)."""
    model.mask_decoder.eval()
    scores = []
    for entry in entries:
        embedding, target, valid, _ = load_entry(entry.path)
        found = components(target, valid)
        if not found:
            continue
        boxes = torch.from_numpy(np.stack([c.box for c in found]))
        h, w = valid
        masks = (model.decode(torch.from_numpy(embedding)[None], boxes)[:, 0, :h, :w] > 0).numpy()
        for label in sorted({c.label for c in found}):
            mine = [m for m, c in zip(masks, found, strict=True) if c.label == label]
            predicted, truth = np.any(mine, axis=0), target[:h, :w] == label
            scores.append(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))
    return float(np.mean(scores)) if scores else float("nan")


def train_segmenter(
    data: str | Path,
    out: str | Path,
    *,
    method: str = "decoder",
    val_fraction: float = 0.2,
    epochs: int = 4,
    learning_rate: float = 1e-4,
    jitter: float = 0.1,
    boxes_per_plane: int = 3,
    cache: str | Path | None = None,
    resume: bool = False,
    channel: int = 0,
    seed: int = 0,
    label_choice: LabelChoice | None = None,
    limit: int | None = None,
    progress: bool = True,
    model=None,
) -> Path:
    """Fine-tune LiteMedSAM's ``method`` part on a data set; returns the delta's card path.

    ``model`` is the LiteMedSAM to tune (default: the packaged weights); only its mask decoder
    changes. With ``resume`` training continues from ``out/last.pt``.
    """
    from automedseg.segment.litemedsam import LiteMedSAMPredictor, load_litemedsam

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {METHODS}")
    started = time.perf_counter()
    label_choice = label_choice or LabelChoice()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = TrainLog(out / "train.log")
    model = load_litemedsam() if model is None else model
    split = cached_split(
        data, out, cache, LiteMedSAMPredictor(model), val_fraction=val_fraction, seed=seed,
        channel=channel, choice=label_choice, limit=limit, empty_fraction=0.0,
        progress=progress, log=log,
    )  # fmt: skip
    train, val = split.train, split.val
    train = [e for e in train if e.labels_present]
    val = [e for e in val if e.labels_present]
    if not train or not val:
        raise InputError(
            "no foreground in the " + ("training" if not train else "validation") + " masks",
            data,
        )
    parameters = trainable(model, method)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-4)
    last = out / "last.pt"
    if resume and last.is_file():
        saved = read_training_state(last)
        try:
            model.mask_decoder.load_state_dict(saved["decoder"])
            optimizer.load_state_dict(saved["optimizer"])
            first, frozen, best, best_state = (
                saved["epoch"] + 1, saved["frozen_dice"], saved["best_dice"], saved["best"],
            )  # fmt: skip
        except (KeyError, RuntimeError, ValueError):
            raise InputError(
                "cannot resume: this checkpoint is not a decoder run of this model "
                "(use another output folder, or train without --resume)",
                last,
            ) from None
        earlier = float(saved.get("seconds", 0.0))
        log(f"resumed after epoch {saved['epoch']}")
    else:
        first, earlier = 1, 0.0
        frozen = best = oracle_dice(model, val)
        best_state = {k: v.detach().clone() for k, v in model.mask_decoder.state_dict().items()}
        log(f"frozen decoder: validation oracle-box Dice {frozen:.4f}")
    rng = np.random.default_rng(seed + first)
    for epoch in range(first, epochs + 1):
        loss = train_epoch(model, optimizer, train, jitter, boxes_per_plane, rng)
        dice = oracle_dice(model, val)
        if dice > best:
            best = dice
            best_state = {k: v.detach().clone() for k, v in model.mask_decoder.state_dict().items()}
        seconds = earlier + time.perf_counter() - started
        torch.save(
            {"decoder": model.mask_decoder.state_dict(), "optimizer": optimizer.state_dict(),
             "epoch": epoch, "frozen_dice": frozen, "best_dice": best, "best": best_state,
             "seconds": seconds},
            last,
        )  # fmt: skip
        log(f"epoch {epoch}/{epochs} loss {loss:.4f} validation Dice {dice:.4f} ({seconds:.0f} s)")
    model.mask_decoder.load_state_dict(best_state)
    training = {
        **split.record(val_fraction, seed, channel, label_choice, limit),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "box_jitter": jitter,
        "boxes_per_plane": boxes_per_plane,
        "seconds": round(earlier + time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    metrics = {"oracle_dice_frozen": round(frozen, 4), "oracle_dice_tuned": round(best, 4)}
    card_path = save_delta(out / "segmenter.safetensors", model, method, training, metrics)
    log(f"validation oracle-box Dice {frozen:.4f} frozen → {best:.4f} tuned; saved {card_path}")
    return card_path
