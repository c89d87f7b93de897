"""Training the shared-encoder prompter head on cached LiteMedSAM embeddings.

Reads top to bottom: split → cache embeddings → train epochs (checkpoint each) → choose the
box score threshold on validation → save safetensors + card.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from automedseg.checkpoints import read_card, read_training_state, save_checkpoint
from automedseg.data.datasets import LabelChoice, class_names
from automedseg.errors import InputError
from automedseg.evaluate.metrics import detection_scores, match_detections
from automedseg.prompt.components import boxes_from_probabilities
from automedseg.prompt.head import EmbeddingHead
from automedseg.segment.litemedsam import PACKAGED_WEIGHTS_SHA256
from automedseg.tasks import load_models
from automedseg.train.embeddings import (
    CachedPlane,
    cached_split,
    load_entry,
    load_truth,
)

# Box score thresholds tried on validation; a box's score is its component's peak
# probability, which saturates near 1 for confident heads, hence the fine steps at the top.
THRESHOLDS = np.concatenate([np.round(np.arange(0.3, 0.96, 0.05), 2), [0.97, 0.98, 0.99]])


@dataclass
class TrainLog:
    path: Path

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self.path.open("a") as handle:
            handle.write(f"{stamp} {message}\n")
        print(message, file=sys.stderr)


def batches(entries: list[CachedPlane], size: int, rng: np.random.Generator | None):
    """(embeddings, targets, valid masks) tensors; shuffled when ``rng`` is given."""
    order = rng.permutation(len(entries)) if rng is not None else np.arange(len(entries))
    for start in range(0, len(order), size):
        chosen = [load_entry(entries[i].path) for i in order[start : start + size]]
        embeddings = torch.from_numpy(np.stack([c[0] for c in chosen]))
        targets = torch.from_numpy(np.stack([c[1] for c in chosen]).astype(np.int64))
        valid = torch.zeros(len(chosen), 1, 256, 256)
        for i, (_, _, (h, w), _) in enumerate(chosen):
            valid[i, :, :h, :w] = 1.0
        yield embeddings, targets, valid


def head_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, labels: list[int]):
    """BCE + soft Dice per class at the head's 128×128 resolution, inside the valid region."""
    size = logits.shape[-2:]
    truth = torch.stack([(targets == v).float() for v in labels], dim=1)
    truth = F.interpolate(truth, size=size, mode="nearest")
    weight = F.interpolate(valid, size=size, mode="nearest")
    bce = F.binary_cross_entropy_with_logits(logits, truth, weight=weight.expand_as(truth))
    prob = torch.sigmoid(logits) * weight
    inter = (prob * truth).sum(dim=(2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum(dim=(2, 3)) + truth.sum(dim=(2, 3)) + 1)
    return bce + dice.mean()


def learning_rate_at(epoch: int, epochs: int, peak: float, warmup: int = 2) -> float:
    """Linear warm-up for ``warmup`` epochs, then cosine decay to 1% of ``peak``."""
    if epoch <= warmup:
        return peak * epoch / (warmup + 1)
    progress = (epoch - warmup) / max(epochs - warmup, 1)
    # a Python float: it goes into the optimizer state, which last.pt loads with weights_only
    return float(peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))))


def augment(embeddings, targets, valid, rng: np.random.Generator, shift: int = 4):
    """The batch mirrored left-right and/or up-down (each with probability 1/2) and shifted
    by up to ``shift`` embedding pixels (4 model-input pixels each) along both axes.

    A flipped or shifted embedding is not the embedding of the flipped or shifted image, but
    close enough to regularise: on Kvasir-SEG (runs/exp, same split and 30 epochs) the
    decoder's validation Dice with the depth-5 head's boxes rose from 0.831 (no augmentation)
    to 0.835 (flips) and 0.839 (flips and shifts)."""
    for axis in (-1, -2):
        if rng.random() < 0.5:
            embeddings, targets, valid = (t.flip(axis) for t in (embeddings, targets, valid))
    dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, 2))
    scale = targets.shape[-1] // embeddings.shape[-1]  # 256 / 64
    embeddings = torch.roll(embeddings, (dy, dx), (-2, -1))
    targets = torch.roll(targets, (dy * scale, dx * scale), (-2, -1))
    valid = torch.roll(valid, (dy * scale, dx * scale), (-2, -1))
    return embeddings, targets, valid


def bf16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX); elsewhere autocast
    to bfloat16 would be emulated and slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def train_one_epoch(head, optimizer, entries, labels, batch_size, rng) -> float:
    """One pass over ``entries``; the forward pass in bfloat16 where the CPU has it (the head's
    convolutions run about twice as fast; the loss and the weights stay float32)."""
    head.train()
    total, count = 0.0, 0
    use_bf16 = bf16_supported()
    for embeddings, targets, valid in batches(entries, batch_size, rng):
        embeddings, targets, valid = augment(embeddings, targets, valid, rng)
        embeddings = F.dropout2d(embeddings, p=0.1)  # feature dropout: regularises on few images
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = head(embeddings)
        loss = head_loss(logits.float(), targets, valid, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(embeddings)
        count += len(embeddings)
    return total / max(count, 1)


@torch.inference_mode()
def validate(head, entries, labels, batch_size) -> tuple[float, list[np.ndarray]]:
    """(validation loss, per-plane (K, 256, 256) probabilities)."""
    head.eval()
    total, probabilities = 0.0, []
    for embeddings, targets, valid in batches(entries, batch_size, None):
        logits = head(embeddings)
        total += float(head_loss(logits, targets, valid, labels)) * len(embeddings)
        up = torch.sigmoid(F.interpolate(logits, size=(256, 256), mode="bilinear"))
        probabilities.extend(up.numpy())
    return total / max(len(entries), 1), probabilities


def choose_threshold(entries, probabilities, labels, min_area_fraction) -> tuple[float, dict]:
    """The box score threshold with the best detection F1 (IoU ≥ 0.5) on validation."""
    truths = [load_truth(entry.path) for entry in entries]
    best: tuple[float, float, dict] = (-1.0, 0.5, {})
    for threshold in THRESHOLDS:
        tp = fp = fn = 0
        for prob, (original, truth) in zip(probabilities, truths, strict=True):
            found = boxes_from_probabilities(
                prob, original, labels, 0.5, float(threshold), min_area_fraction
            )
            for label in labels:
                mine, theirs = found.labels == label, truth.labels == label
                a, b, c = match_detections(
                    found.xyxy[mine], found.scores[mine], truth.xyxy[theirs], 0.5
                )
                tp, fp, fn = tp + a, fp + b, fn + c
        scores = detection_scores(tp, fp, fn)
        scores["fp_per_image"] = fp / max(len(entries), 1)
        if scores["f1"] > best[0]:
            best = (scores["f1"], float(threshold), scores)
    return best[1], best[2]


def segmenter_record(segmenter_weights: str | Path | None) -> dict:
    """What a prompter's card records of the segmenter it was trained for: the packaged
    LiteMedSAM and, with ``segmenter_weights``, the tuned delta (its card, SHA-256, method and
    whether it changes the image embedding)."""
    record = {"name": "LiteMedSAM", "sha256": PACKAGED_WEIGHTS_SHA256}
    if segmenter_weights is not None:
        delta_card = read_card(segmenter_weights)
        delta = {k: delta_card.get(k) for k in ("sha256", "method", "changes_image_embedding")}
        record["delta"] = {**delta, "card": str(Path(segmenter_weights).resolve())}
    return record


def train_head(
    data: str | Path,
    out: str | Path,
    *,
    val_fraction: float = 0.2,
    epochs: int = 30,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    cache: str | Path | None = None,
    resume: bool = False,
    channel: int = 0,
    empty_fraction: float = 0.1,
    task: str | None = None,
    seed: int = 0,
    label_choice: LabelChoice | None = None,
    limit: int | None = None,
    progress: bool = True,
    predictor=None,
    segmenter_weights: str | Path | None = None,
    augment_copies: int = 0,
) -> Path:
    """Train a head prompter on a data set; returns the path of its card (JSON).

    ``predictor`` is the LiteMedSAMPredictor whose embeddings the head reads (default: the
    packaged weights, with the tuned-segmenter delta ``segmenter_weights`` if given: an
    ``adapter`` delta changes the embedding, so a head meant to run with it is trained on
    it; the card records the delta). Embeddings are cached in ``cache`` (default
    ``out/cache``); with ``resume`` training continues from ``out/last.pt``. ``limit`` uses
    only the first N usable cases (sorted by id) for a quicker run. ``augment_copies`` N adds
    N augmented copies of every training plane (``data.planes.augmented``), each embedded once
    into the cache: N + 1 times the training planes, and N times the images to encode again.
    """
    if augment_copies < 0:
        raise InputError(f"the number of augmented copies cannot be negative ({augment_copies})")
    started = time.perf_counter()
    label_choice = label_choice or LabelChoice()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = TrainLog(out / "train.log")
    record = segmenter_record(segmenter_weights)  # what the card says of the segmenter
    delta = record.get("delta")
    if predictor is None:
        predictor = load_models(runtime="torch", segmenter_weights=segmenter_weights).segmenter
    split = cached_split(
        data, out, cache, predictor, val_fraction=val_fraction, seed=seed, channel=channel,
        choice=label_choice, limit=limit, empty_fraction=empty_fraction, progress=progress,
        log=log, delta_sha256=None if delta is None else delta["sha256"],
        augment_copies=augment_copies,
    )  # fmt: skip
    train, val = split.train, split.val
    labels = sorted(set().union(*(e.labels_present for e in train)))
    if not labels:
        raise InputError("no foreground in any training mask: nothing to learn", data)
    missing = set(labels) - set().union(*(e.labels_present for e in val))
    if missing:
        raise InputError(
            f"label(s) {sorted(missing)} never appear in the validation cases; "
            "use a larger --val-split or another --seed",
            data,
        )
    head = EmbeddingHead(num_classes=len(labels))
    optimizer = torch.optim.AdamW(head.parameters(), lr=learning_rate, weight_decay=1e-4)
    first_epoch, best_loss, best_state, earlier_seconds = 1, float("inf"), None, 0.0
    last = out / "last.pt"
    if resume and last.is_file():
        saved = read_training_state(last)
        try:
            head.load_state_dict(saved["head"])
            optimizer.load_state_dict(saved["optimizer"])
        except (KeyError, RuntimeError, ValueError):
            raise InputError(
                "cannot resume: this checkpoint is for another head or other labels "
                "(use another output folder, or train without --resume)",
                last,
            ) from None
        first_epoch, best_loss, best_state = saved["epoch"] + 1, saved["best_loss"], saved["best"]
        earlier_seconds = float(saved.get("seconds", 0.0))  # time of the runs before this one
        log(f"resumed after epoch {saved['epoch']}")
    rng = np.random.default_rng(seed + first_epoch)
    for epoch in range(first_epoch, epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(epoch, epochs, learning_rate)
        loss = train_one_epoch(head, optimizer, train, labels, batch_size, rng)
        val_loss, _ = validate(head, val, labels, batch_size)
        if val_loss < best_loss:
            best_loss = val_loss
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        torch.save(
            {"head": head.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "best_loss": best_loss, "best": best_state,
             "seconds": earlier_seconds + time.perf_counter() - started},
            last,
        )  # fmt: skip
        log(f"epoch {epoch}/{epochs} train loss {loss:.4f} val loss {val_loss:.4f} "
            f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    head.load_state_dict(best_state)
    min_area = 0.0005
    _, probabilities = validate(head, val, labels, batch_size)
    threshold, scores = choose_threshold(val, probabilities, labels, min_area)
    log(f"score threshold {threshold}: {scores}")
    names = class_names(split.dataset.label_names, label_choice)
    card = {
        "kind": "head",
        "task": task,
        "architecture": head.architecture(),
        "labels": {str(v): names.get(v, f"label{v}") for v in labels},
        "score_threshold": threshold,
        "pixel_threshold": 0.5,
        "min_area_fraction": min_area,
        "segmenter": record,
        "preprocessing": "automedseg.intensity.to_unit_range, LiteMedSAM 256 longest side + pad",
        "training": {
            **split.record(val_fraction, seed, channel, label_choice, limit),
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "seconds": round(earlier_seconds + time.perf_counter() - started, 1),
            "torch_threads": torch.get_num_threads(),
            "bfloat16_forward": bf16_supported(),
            "augmentation": "embedding flips (left-right, up-down) and shifts up to 4",
            "augment_copies": augment_copies,
        },
        "val_metrics": {"loss": round(best_loss, 4), **{k: round(v, 4) for k, v in scores.items()}},
    }
    half = {k: v.half() if v.is_floating_point() else v for k, v in best_state.items()}
    card_path = save_checkpoint(out / "prompter.safetensors", half, card)
    log(f"saved {card_path}")
    return card_path
