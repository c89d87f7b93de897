"""Experiment (issue 4): does tuning the image encoder together with a head prompter lift
automatic Dice? Med-SA adapters (``segment.adapter``) in TinyViT's last stage, optionally its
neck too, are trained jointly with a trained head (``--head``), plus the mask decoder's box loss
on the same embedding so that one encoder pass still serves prompting and segmentation.

Stages 0-2 stay frozen, so their output (4096 tokens × 320 per plane) is cached once in
``--cache``; a step then runs only stage 3, the neck, the head and the decoder. The split is the
head's own (its card's seed and validation fraction). After every epoch the validation planes are
scored in LiteMedSAM's 256×256 model space: oracle Dice (ground-truth boxes) and automatic Dice
(the head's boxes at several score thresholds, the best-scoring box when none passes),
epoch 0 being the head and encoder as given.

    python benchmarks/adapted_head.py --data ../shared/datasets/kvasir_seg \\
        --head src/automedseg/models/polyp/prompter.json --cache runs/cache_kvasir_stage2 \\
        --epochs 5 --out runs/adapted_head_polyp [--neck]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from automedseg.checkpoints import read_card
from automedseg.data.datasets import find_cases
from automedseg.data.planes import iter_planes, split_cases
from automedseg.evaluate.metrics import dice
from automedseg.prompt.components import boxes_from_probabilities
from automedseg.prompt.head import load_head_prompter
from automedseg.segment.adapter import AdapterConfig
from automedseg.segment.delta import trainable
from automedseg.segment.litemedsam import load_litemedsam, preprocess
from automedseg.train.embeddings import padded_target
from automedseg.train.head import head_loss, learning_rate_at
from automedseg.train.segmenter import components, jittered, segmentation_loss

TOKENS, SIDE = 4096, 64
THRESHOLDS = (0.5, 0.8, 0.9, 0.95)


def frozen_tokens(encoder, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(4096, 320) float16 output of TinyViT stages 0-2 for one image, and its resized size."""
    tensor, resized = preprocess(image)
    with torch.no_grad():
        x = encoder.patch_embed(tensor)
        for layer in encoder.layers[:3]:
            x = layer(x)
    return x[0].numpy().astype(np.float16), resized


def cache(data: str, ids: list[str], folder: Path, encoder) -> None:
    """One .npz per case (tokens, padded target, valid size, original size), resumable."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i in ids if not (folder / f"{i}.npz").is_file()]
    for plane in tqdm(iter_planes(find_cases(data), todo), total=len(todo), desc="stage-2 tokens"):
        if plane.index is not None:
            raise SystemExit(f"error: {data} is not a 2D data set (this experiment takes images)")
        tokens, resized = frozen_tokens(encoder, plane.image)
        temp = folder / f"{plane.case_id}.tmp.npz"
        np.savez(temp, tokens=tokens, target=padded_target(plane.labels),
                 valid=np.asarray(resized), original=np.asarray(plane.labels.shape))  # fmt: skip
        temp.rename(folder / f"{plane.case_id}.npz")


def load(folder: Path, ids: list[str]):
    """Stacked tokens (N, 4096, 320) float16, targets (N, 256, 256), valid masks, sizes."""
    tokens, targets, valid, sizes = [], [], [], []
    for case_id in ids:
        with np.load(folder / f"{case_id}.npz") as entry:
            tokens.append(torch.from_numpy(entry["tokens"]))
            targets.append(torch.from_numpy(entry["target"].astype(np.int64)))
            h, w = (int(v) for v in entry["valid"])
            mask = torch.zeros(1, 256, 256)
            mask[:, :h, :w] = 1
            valid.append(mask)
            sizes.append(((h, w), tuple(int(v) for v in entry["original"])))
    return torch.stack(tokens), torch.stack(targets), torch.stack(valid), sizes


def embed(encoder, tokens: torch.Tensor) -> torch.Tensor:
    """Stage 3 and the neck: (B, 4096, 320) tokens → (B, 256, 64, 64) image embedding."""
    x = encoder.layers[3](tokens.float())
    return encoder.neck(x.view(len(x), SIDE, SIDE, -1).permute(0, 3, 1, 2))


def flipped(tokens, targets, valid, axes: list[int]):
    """The batch mirrored along the given image axes (1 = rows, 2 = columns)."""
    grid = tokens.view(len(tokens), SIDE, SIDE, -1)
    for axis in axes:
        grid, targets, valid = grid.flip(axis), targets.flip(axis), valid.flip(axis + 1)
    return grid.reshape(len(tokens), TOKENS, -1), targets, valid


def mask_of(model, embedding: torch.Tensor, boxes: np.ndarray, valid: tuple[int, int]):
    """The union of the decoder's masks for ``boxes`` (256-pixel space) on one embedding."""
    h, w = valid
    if len(boxes) == 0:
        return np.zeros((h, w), bool)
    logits = model.decode(embedding, torch.as_tensor(np.asarray(boxes), dtype=torch.float32))
    return (logits[:, 0, :h, :w] > 0).any(0).numpy()


@torch.no_grad()
def score(model, head, val) -> dict:
    """Validation: head loss, oracle Dice and automatic Dice per score threshold (model space)."""
    model.eval()
    head.eval()
    tokens, targets, valid, sizes = val
    encoder = model.image_encoder
    embeddings = torch.cat([embed(encoder, tokens[i : i + 8]) for i in range(0, len(tokens), 8)])
    logits = torch.cat([head(embeddings[i : i + 32]) for i in range(0, len(tokens), 32)])
    loss = float(head_loss(logits, targets, valid, [1]))
    probabilities = torch.sigmoid(F.interpolate(logits, size=(256, 256), mode="bilinear")).numpy()
    oracle, auto = [], {t: [] for t in THRESHOLDS}
    for i, (size, original) in enumerate(sizes):
        truth = targets[i, : size[0], : size[1]].numpy() == 1
        embedding = embeddings[i : i + 1]
        boxes = [c.box for c in components(targets[i].numpy(), size)]
        oracle.append(dice(mask_of(model, embedding, np.stack(boxes), size), truth))
        found = boxes_from_probabilities(probabilities[i], original, [1], 0.5, 0.0, 0.0005)
        for threshold in THRESHOLDS:
            keep = np.asarray(found.scores) >= threshold
            if not keep.any() and len(found.scores):
                keep[int(np.argmax(found.scores))] = True
            boxes = found.xyxy[keep] * 256 / max(original)
            auto[threshold].append(dice(mask_of(model, embedding, boxes, size), truth))
    model.train()
    head.train()
    return {
        "head_loss": round(loss, 4),
        "oracle_dice": round(float(np.mean(oracle)), 4),
        "auto_dice": {str(t): round(float(np.mean(v)), 4) for t, v in auto.items()},
    }


def box_loss(model, embeddings, targets, rng: np.random.Generator) -> torch.Tensor | None:
    """The decoder's loss for one ground-truth object per plane, its box jittered by 5 %."""
    losses = []
    for i in range(len(embeddings)):
        found = [c for c in components(targets[i].numpy(), (256, 256)) if c.mask.sum() >= 16]
        if found:
            c = found[rng.integers(len(found))]
            box = torch.from_numpy(jittered(c.box, 0.05, rng))[None]
            logits = model.decode(embeddings[i : i + 1], box).float()
            truth = torch.from_numpy(c.mask[None].astype(np.float32))
            losses.append(segmentation_loss(logits[:, 0], truth))
    return torch.stack(losses).mean() if losses else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--head", required=True, help="the trained head's card (its split is used)")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--neck", action="store_true", help="train the encoder's neck too")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--box-loss", type=float, default=1.0, help="the decoder loss's weight")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    training = read_card(args.head)["training"]
    usable = sorted(c.case_id for c in find_cases(args.data).cases if not c.problem)
    usable = usable[: training["case_limit"]]
    train_ids, val_ids = split_cases(usable, training["val_fraction"], training["seed"])
    model = load_litemedsam().eval()
    cache(args.data, train_ids + val_ids, Path(args.cache), model.image_encoder)
    parameters = trainable(model, "adapter", AdapterConfig(stages=(3,)))
    if args.neck:
        parameters += [p.requires_grad_(True) for p in model.image_encoder.neck.parameters()]
    head = load_head_prompter(args.head).head
    train, val = load(Path(args.cache), train_ids), load(Path(args.cache), val_ids)
    history = [{"epoch": 0, **score(model, head, val)}]
    print(json.dumps(history[-1]), file=sys.stderr)
    optimizer = torch.optim.AdamW([*parameters, *head.parameters()], lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(epoch, args.epochs, args.lr, warmup=1)
        losses = []
        order = rng.permutation(len(train_ids))
        for start in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}"):
            index = order[start : start + args.batch_size]
            axes = [a for a in (1, 2) if rng.random() < 0.5]
            batch = (part[index] for part in train[:3])
            tokens, targets, valid = flipped(*batch, axes)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                embeddings = embed(model.image_encoder, tokens)
                loss = head_loss(head(embeddings).float(), targets, valid, [1])
                decoder_loss = box_loss(model, embeddings, targets, rng)
            if decoder_loss is not None:
                loss = loss + args.box_loss * decoder_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        seconds = round(time.perf_counter() - started)
        history.append({"epoch": epoch, "train_loss": round(float(np.mean(losses)), 4),
                        "seconds": seconds, **score(model, head, val)})  # fmt: skip
        print(json.dumps(history[-1]), file=sys.stderr)
        record = {
            "command": " ".join(sys.argv),
            "threads": args.threads,
            "train_cases": len(train_ids),
            "val_cases": len(val_ids),
            "history": history,
        }
        (out / "history.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
