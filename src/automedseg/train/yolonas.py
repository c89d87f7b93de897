"""Training YOLO-NAS as a box prompter on a CPU, top to bottom.

1. **Data** (``train.yolonas_data``): samples from the masks or a box file, split by case;
   the ids go to ``train_cases.txt`` / ``val_cases.txt`` in ``out``.
2. **Model**: ``prompt.yolonas.build_yolonas`` (random init: no pretrained weights can be
   fetched here), the PP-YOLOE loss of ``modern-yolonas`` (ATSS assignment for the first
   epochs, then task-aligned), AdamW without decay on norms/biases, linear warm-up then
   cosine to a tenth of the learning rate, gradient clipping at 10, BatchNorm momentum 0.1,
   and an exponential moving average (EMA) of the weights, which is what is validated and
   saved.
3. **Each epoch**: a pass over the augmented training samples, then validation on the
   held-out cases with the prompter's own preprocessing and NMS —
   ``evaluate.metrics.detection_metrics``: mAP at IoU 0.5 (COCO's 101-point interpolation,
   averaged over classes) and precision / recall / F1 at the score threshold that maximises
   F1 — a line in ``train.log``, and ``last.pt`` (only tensors and plain types: it loads with
   ``torch.load(weights_only=True)``) from which ``resume=True`` goes on. The epoch with the
   best mAP50 is kept.
4. **The result**: fp16 safetensors + JSON card (``checkpoints.save_checkpoint``), with the
   F1-best score threshold as the prompter's ``score_threshold``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from automedseg import io
from automedseg.checkpoints import read_training_state, save_checkpoint
from automedseg.data.datasets import LabelChoice
from automedseg.errors import InputError
from automedseg.evaluate.metrics import detection_metrics
from automedseg.prompt.yolonas import KIND, build_yolonas, select_boxes
from automedseg.train.yolonas_data import (
    Augmentation,
    Sample,
    as_inclusive,
    augment,
    collate,
    load_samples,
    unchanged,
)

CHECKPOINT_FORMAT = "automedseg-yolonas-train-1"
WEIGHTS_NAME = "yolonas.safetensors"
BN_MOMENTUM = 0.1
"""BatchNorm momentum while training (the package uses 0.03, tuned for COCO's long runs): the
running statistics that validation and inference use settle within ~30 steps, which matters
on small medical data sets of a few steps per epoch."""
EVAL_SCORE_FLOOR = 0.01
"""Validation keeps detections scoring at least this, to trace the precision/recall curve."""


# --- one epoch, one validation -------------------------------------------------------------


def batch_count(n: int, batch_size: int) -> int:
    """Batches per epoch: a last batch of one image is dropped (BatchNorm needs two)."""
    count = math.ceil(n / batch_size)
    return count - 1 if count > 1 and n % batch_size == 1 else max(count, 1)


def learning_rate(step: int, total: int, warmup: int, lr: float, final_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``lr`` to ``lr * final_ratio``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def update_ema(ema: dict, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, for every floating tensor (others copied)."""
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                ema[key].mul_(decay).add_(value.detach(), alpha=1.0 - decay)
            else:
                ema[key].copy_(value)


def train_one_epoch(
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: list[Sample],
    values: np.ndarray,
    *,
    epoch: int,
    step: int,
    size: int,
    batch_size: int,
    rng: np.random.Generator,
    aug: Augmentation | None,
    lr_at: Callable[[int], float],
    ema: dict,
    ema_decay: Callable[[int], float],
    progress: bool,
) -> tuple[float, int, int]:
    """(mean loss, steps done so far, batches skipped for a non-finite loss)."""
    from tqdm import tqdm

    model.train()
    order = rng.permutation(len(samples))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = batches[: batch_count(len(samples), batch_size)]
    total, seen, skipped = 0.0, 0, 0
    for indices in tqdm(batches, desc=f"epoch {epoch + 1}", disable=not progress, leave=False):
        items = [
            augment(samples[i], size, rng, aug) if aug else unchanged(samples[i], size)
            for i in indices
        ]
        images, targets = collate(items, values, size)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss, _ = criterion(model(images), targets, input_size=(size, size), epoch=epoch)
        if not torch.isfinite(loss):
            skipped += 1
            continue
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
        optimizer.step()
        step += 1
        update_ema(ema, model, ema_decay(step))
        total += float(loss.detach()) * len(indices)
        seen += len(indices)
    return total / max(seen, 1), step, skipped


def validate(
    model: torch.nn.Module,
    samples: list[Sample],
    values: np.ndarray,
    size: int,
    batch_size: int,
    iou_threshold: float,
) -> dict:
    """``evaluate.metrics.detection_metrics`` of the model on the samples, with the
    prompter's preprocessing and NMS. Boxes are compared in input pixels (IoU does not change
    with the scale), turned from continuous into inclusive corners (``as_inclusive``)."""
    model.eval()
    predictions, truths = [], []
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            items = [unchanged(s, size) for s in samples[start : start + batch_size]]
            boxes, scores = model(torch.stack([item[0] for item in items]))
            for i, (_, true_boxes, labels) in enumerate(items):
                xyxy, kept, classes = select_boxes(
                    boxes[i], scores[i], EVAL_SCORE_FLOOR, iou_threshold
                )
                predictions.append((as_inclusive(xyxy.numpy()), kept.numpy(), classes.numpy()))
                truths.append((as_inclusive(true_boxes), np.searchsorted(values, labels)))
    return detection_metrics(predictions, truths, 0.5, EVAL_SCORE_FLOOR)


# --- the whole run ------------------------------------------------------------------------


def train_yolonas(
    data_root: str | Path,
    out: str | Path,
    *,
    val_fraction: float = 0.2,
    epochs: int = 30,
    input_size: int = 320,
    batch_size: int = 8,
    resume: bool = False,
    boxes_file: str | Path | None = None,
    channel: int = 0,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    size: str = "s",
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    ema_decay: float = 0.999,
    iou_threshold: float = 0.5,
    empty_fraction: float = 0.1,
    label_choice: LabelChoice | None = None,
    augmentation: Augmentation | None = Augmentation(),  # noqa: B008 (frozen: immutable)
    threads: int | None = None,
) -> Path:
    """Train a YOLO-NAS prompter on ``data_root`` (any ``data.datasets`` layout); write
    ``out/yolonas.safetensors`` + ``out/yolonas.json`` (the card, returned), ``last.pt``,
    ``train.log``, ``train_cases.txt`` and ``val_cases.txt``.

    Boxes come from the masks (one per connected component of each label) or, for a 2D
    ``images/`` folder, from ``boxes_file`` (COCO JSON, YOLO labels/ folder or Kvasir JSON).
    Volumes and sequences give every plane with foreground plus ``empty_fraction`` of the
    others. ``label_choice`` keeps only some mask labels, or trains them as one class, 1
    (e.g. all BraTS tumour labels). ``input_size`` must be a multiple of 32. Every line of the
    log also goes to ``log`` when given; ``progress`` shows a bar over each epoch's batches.

    Raises ``InputError`` when there is no foreground to learn from. A class found in the
    training cases but not in the validation cases is a **warning** (its detection is just
    not measured): on small or video data sets a rare class often lands on one side only.
    """
    started = time.monotonic()
    data_root, out = Path(data_root), Path(out)
    if input_size < 32 or input_size % 32:
        raise InputError(f"input_size must be a positive multiple of 32, got {input_size}")
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be at least 1, got {epochs}, {batch_size}")
    if threads:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    last_path = out / "last.pt"
    resuming = resume and last_path.is_file()
    log_file = (out / "train.log").open("a" if resuming else "w", encoding="utf-8")

    def say(message: str) -> None:
        log_file.write(message + "\n")
        log_file.flush()
        if log is not None:
            log(message)

    try:
        if resume and not resuming:
            say(f"no {last_path.name} in {out}: starting from scratch")
        say(f"data {data_root}" + (f", boxes {boxes_file}" if boxes_file else ""))
        train, val, labels, train_ids, val_ids = load_samples(
            data_root,
            boxes_file=boxes_file,
            val_fraction=val_fraction,
            seed=seed,
            channel=channel,
            size=input_size,
            empty_fraction=empty_fraction,
            label_choice=label_choice,
            say=say,
        )
        values = np.array(sorted(labels), dtype=np.int64)
        say(
            f"{len(train_ids)} training cases ({len(train)} planes, "
            f"{sum(len(s.boxes) for s in train)} boxes), {len(val_ids)} validation cases "
            f"({len(val)} planes, {sum(len(s.boxes) for s in val)} boxes); classes "
            + ", ".join(f"{v}={n}" for v, n in labels.items())
        )

        config = {
            "size": size,
            "input_size": input_size,
            "labels": [[int(v), n] for v, n in labels.items()],
            "train_ids": train_ids,
            "val_ids": val_ids,
        }
        saved = _read_last(last_path, config) if resuming else None
        io.write_text(out / "train_cases.txt", "\n".join(train_ids) + "\n")
        io.write_text(out / "val_cases.txt", "\n".join(val_ids) + "\n")

        # modern_yolonas.training imports albumentations, which asks the internet for updates.
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        from modern_yolonas.training.loss import PPYoloELoss
        from modern_yolonas.training.optimizer import create_optimizer

        torch.manual_seed(seed)
        model = build_yolonas(len(values), size)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = BN_MOMENTUM
        eval_model = copy.deepcopy(model)  # holds the EMA weights for validation
        criterion = PPYoloELoss(num_classes=len(values), static_assigner_epochs=min(4, epochs // 4))
        optimizer = create_optimizer(model, "adamw", lr=lr, weight_decay=weight_decay)
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        first_epoch, step, elapsed, history, best = 0, 0, 0.0, [], None
        if saved is not None:
            model.load_state_dict(saved["model"])
            ema = saved["ema"]
            optimizer.load_state_dict(saved["optimizer"])
            first_epoch, step = int(saved["epoch"]), int(saved["step"])
            elapsed, history, best = float(saved["elapsed"]), saved["history"], saved["best"]
            del saved
            say(f"resuming after epoch {first_epoch} (step {step})")

        steps_per_epoch = batch_count(len(train), batch_size)
        total_steps = epochs * steps_per_epoch
        warmup = max(1, min(3 * steps_per_epoch, total_steps // 10))

        def lr_at(s: int) -> float:
            return learning_rate(s, total_steps, warmup, lr, 0.1)

        def ema_at(s: int) -> float:  # short memory at first, so early weights fade fast
            return ema_decay * (1.0 - math.exp(-s / 200.0))

        say(
            f"YOLO-NAS-{size.upper()} {len(values)} class(es), input {input_size}, batch "
            f"{batch_size}, {steps_per_epoch} steps/epoch, AdamW lr {lr:g}, "
            f"{torch.get_num_threads()} torch thread(s)"
        )
        for epoch in range(first_epoch, epochs):
            epoch_start = time.monotonic()
            rng = np.random.default_rng([seed, epoch])
            loss, step, skipped = train_one_epoch(
                model,
                criterion,
                optimizer,
                train,
                values,
                epoch=epoch,
                step=step,
                size=input_size,
                batch_size=batch_size,
                rng=rng,
                aug=augmentation,
                lr_at=lr_at,
                ema=ema,
                ema_decay=ema_at,
                progress=progress,
            )
            eval_model.load_state_dict(ema)
            metrics = validate(eval_model, val, values, input_size, batch_size, iou_threshold)
            elapsed += time.monotonic() - epoch_start
            record = {
                "epoch": epoch + 1,
                "loss": loss,
                "elapsed_s": round(elapsed, 1),
                **{k: v for k, v in metrics.items() if k != "ap50_per_class"},
            }
            history.append(record)
            say(_epoch_line(record, epochs, skipped))
            score = -1.0 if metrics["mAP50"] is None else metrics["mAP50"]
            if best is None or score >= best["score"]:
                best = {
                    "epoch": epoch + 1,
                    "score": score,
                    "metrics": record,
                    "state": {k: _half(v) for k, v in ema.items()},
                }
            _write_last(
                last_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "config": config,
                    "epoch": epoch + 1,
                    "step": step,
                    "elapsed": elapsed,
                    "history": history,
                    "best": best,
                    "model": model.state_dict(),
                    "ema": ema,
                    "optimizer": optimizer.state_dict(),
                },
            )

        metrics = best["metrics"]
        threshold = metrics["score_threshold"]
        card = {
            "kind": KIND,
            "architecture": {"size": size, "num_classes": len(values), "input_size": input_size},
            "preprocessing": (
                "image in [0, 1] (automedseg.intensity); gray repeated to 3 channels; longest "
                "side resized to input_size (bilinear, antialiased), padded bottom/right with 0"
            ),
            "labels": {str(v): n for v, n in labels.items()},
            "score_threshold": 0.25 if threshold is None else threshold,
            "iou_threshold": iou_threshold,
            "training_data": {
                "root": str(data_root.resolve()),
                "boxes_file": None if boxes_file is None else str(Path(boxes_file).resolve()),
                "channel": channel,
                "n_train_cases": len(train_ids),
                "n_val_cases": len(val_ids),
                "n_train_planes": len(train),
                "n_val_planes": len(val),
                "train_ids_file": "train_cases.txt",
                "val_ids_file": "val_cases.txt",
            },
            "val_metrics": {
                "epoch": best["epoch"],
                "mAP50": metrics["mAP50"],
                "recall": metrics["recall"],
                "precision": metrics["precision"],
                "f1": metrics["f1"],
                "score_threshold": threshold,
                "iou_match": 0.5,
            },
            "epochs": len(history),
            "training_seconds": round(elapsed, 1),
            "torch_threads": torch.get_num_threads(),
            "training": {
                "optimizer": "AdamW",
                "lr": lr,
                "weight_decay": weight_decay,
                "schedule": f"linear warm-up {warmup} steps, cosine to 0.1 lr",
                "batch_size": batch_size,
                "ema_decay": ema_decay,
                "seed": seed,
                "val_fraction": val_fraction,
                **(label_choice or LabelChoice()).as_dict(),
                "augmentation": None if augmentation is None else asdict(augmentation),
                "weights": "random init (no pretraining)",
            },
            "software": _versions(),
        }
        card_path = save_checkpoint(out / WEIGHTS_NAME, best["state"], card)
        megabytes = (out / WEIGHTS_NAME).stat().st_size / 1e6
        say(
            f"best epoch {best['epoch']}: wrote {card_path.name} + {WEIGHTS_NAME} "
            f"({megabytes:.1f} MB) in {time.monotonic() - started:.0f} s"
        )
        return card_path
    finally:
        log_file.close()


def _read_last(path: Path, config: dict) -> dict:
    saved = read_training_state(path)
    if saved.get("format") != CHECKPOINT_FORMAT:
        raise InputError("cannot resume: not an automedseg YOLO-NAS training checkpoint", path)
    for key, value in config.items():
        if saved["config"].get(key) != value:
            raise InputError(
                f"cannot resume: this run's {key} differs from the checkpoint's "
                "(use another output folder, or resume=False to start again)",
                path,
            )
    return saved


def _write_last(path: Path, state: dict) -> None:
    temp = path.with_suffix(".pt.tmp")
    torch.save(state, temp)
    os.replace(temp, path)


def _half(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach().clone()
    return tensor.half() if tensor.dtype.is_floating_point else tensor


def _epoch_line(record: dict, epochs: int, skipped: int) -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    line = (
        f"epoch {record['epoch']}/{epochs}  loss {record['loss']:.4f}  "
        f"val mAP50 {number(record['mAP50'])}  recall {number(record['recall'])}  "
        f"precision {number(record['precision'])}  F1 {number(record['f1'])} "
        f"@ score {number(record['score_threshold'])}  elapsed {record['elapsed_s']:.0f} s"
    )
    return line + (f"  ({skipped} batch(es) skipped: loss not finite)" if skipped else "")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "modern-yolonas"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "unknown"
    return versions
