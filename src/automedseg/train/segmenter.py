"""Fine-tuning LiteMedSAM on a user's data: ``--method decoder`` or ``--method adapter``.

Reads top to bottom: split → examples → train the method's part with jittered ground-truth
boxes (checkpoint each epoch) → keep the epoch with the best validation Dice → save the
trained tensors as a delta + card.

* ``decoder``: the mask decoder, on cached image embeddings (the same cache as head training);
  fast, since the image encoder never runs during training.
* ``adapter``: bottleneck adapters in the image encoder's transformer blocks
  (``segment.adapter``), everything else frozen. The encoder changes, so each step runs it
  forward and backward on the plane's model input, made by ``litemedsam.preprocess`` exactly
  as at inference; planes are read from the data set each epoch (cases in a new random order,
  at most ``planes_per_case`` random foreground slices of a volume). Validation uses a fixed,
  seeded set of ``val_planes`` planes held in memory.

Prompts are the boxes of the ground truth's connected components in LiteMedSAM's 256×256
model space, each side moved by a normal error of ``jitter`` times the box's size (as a
detector errs); the loss is binary cross-entropy plus soft Dice against that component's mask.
Validation scores every component twice, prompted by its exact box (the oracle-box Dice in
model space) and by that box jittered like the training boxes (seeded, the same boxes every
epoch); ``select`` says which of the two picks the best epoch. Both are recorded for the
frozen model and the tuned one: on Kvasir-SEG, adapters tuned with jittered boxes lowered the
exact-box Dice while raising the jittered-box Dice (a detector's boxes are not exact).

The whole model stays in eval mode while training (TinyViT's batch norms keep their
statistics; nothing tuned has dropout).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from automedseg.checkpoints import read_training_state
from automedseg.data.datasets import LabelChoice
from automedseg.data.planes import Plane, iter_planes
from automedseg.errors import InputError
from automedseg.segment.adapter import AdapterConfig
from automedseg.segment.delta import METHODS, load_trained, save_delta, trainable, trained_state
from automedseg.segment.litemedsam import LiteMedSAMPredictor, load_litemedsam, preprocess
from automedseg.train.embeddings import (
    CachedPlane,
    Split,
    cached_split,
    load_entry,
    padded_target,
    split_data,
)
from automedseg.train.head import TrainLog

MIN_TRAINING_PIXELS = 16
"""Smaller components (annotation specks, in model-space pixels) are not training targets."""
VAL_PLANES = 64
"""Default number of validation planes for ``adapter`` (each costs an encoder pass per epoch)."""
SELECTIONS = ("exact", "jittered")
"""Which validation Dice picks the best epoch: with exact boxes, or with jittered boxes."""


@dataclass(frozen=True)
class Component:
    """One ground-truth object of a plane, in model space."""

    label: int
    box: np.ndarray
    """XYXY inclusive, float32."""
    mask: np.ndarray
    """(h, w) bool over the plane's valid region."""


@dataclass(frozen=True)
class Example:
    """One plane in model space, as a method trains on it."""

    source: np.ndarray
    """``decoder``: the cached embedding (256, 64, 64); ``adapter``: the model input
    (3, 256, 256); both float32."""
    target: np.ndarray
    """(256, 256) label plane, padded like the input."""
    valid: tuple[int, int]
    """(h, w) of the resized image inside the padding."""


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


def cached_examples(entries: Iterable[CachedPlane]) -> Iterator[Example]:
    """Examples of ``decoder`` from the embedding cache, in the given order."""
    for entry in entries:
        embedding, target, valid, _ = load_entry(entry.path)
        yield Example(embedding, target, valid)


def image_example(plane: Plane) -> Example:
    """An example of ``adapter``: the plane's model input, as ``LiteMedSAMPredictor`` makes it."""
    tensor, resized = preprocess(plane.image)
    return Example(tensor[0].numpy(), padded_target(plane.labels), resized)


def image_examples(
    split: Split, case_ids: list[str], rng: np.random.Generator, planes_per_case: int | None,
    channel: int, choice: LabelChoice,
) -> Iterator[Example]:  # fmt: skip
    """Examples of ``adapter``: the cases in ``rng``'s order, of each at most
    ``planes_per_case`` (None: all) random planes with foreground, read from the data set."""
    for case_id in rng.permutation(np.array(case_ids, dtype=object)):
        planes = iter_planes(split.dataset, [case_id], channel, 0.0, 0, choice)
        planes = [p for p in planes if p.labels.any()]
        for i in sorted(rng.permutation(len(planes))[:planes_per_case]):
            yield image_example(planes[i])


def embed(model, method: str, source: np.ndarray) -> torch.Tensor:
    """(1, 256, 64, 64) image embedding of an example's source."""
    tensor = torch.from_numpy(source)[None]
    return tensor if method == "decoder" else model.image_encoder(tensor)


def train_epoch(
    model, method: str, optimizer, examples: Iterable[Example], jitter: float,
    boxes_per_plane: int, rng: np.random.Generator, max_planes: int | None = None,
    progress: bool = False,
) -> tuple[float, int]:  # fmt: skip
    """One pass over ``examples`` (at most ``max_planes`` planes with a component to learn);
    returns (mean loss, planes trained on)."""
    losses = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_planes, desc="train", unit="plane", file=sys.stderr)
    for example in examples:
        if max_planes is not None and len(losses) >= max_planes:
            break
        found = components(example.target, example.valid)
        found = [c for c in found if c.mask.sum() >= MIN_TRAINING_PIXELS]
        if not found:
            continue
        picked = [found[j] for j in rng.integers(0, len(found), boxes_per_plane)]
        boxes = np.stack([jittered(c.box, jitter, rng) for c in picked])
        logits = model.decode(embed(model, method, example.source), torch.from_numpy(boxes))
        h, w = example.valid
        truth = torch.from_numpy(np.stack([c.mask for c in picked]).astype(np.float32))
        loss = segmentation_loss(logits[:, 0, :h, :w], truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return (float(np.mean(losses)) if losses else float("nan")), len(losses)


@torch.inference_mode()
def validation_dice(
    model, method: str, examples: Iterable[Example], jitter: float, seed: int = 0
) -> tuple[float, float]:
    """(exact-box, jittered-box) mean Dice per plane and label: every component prompted by
    its exact box (as ``evaluate --prompts oracle`` does, in model space), and by that box
    jittered by ``jitter`` with a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    exact: list[float] = []
    moved: list[float] = []
    for example in examples:
        found = components(example.target, example.valid)
        if not found:
            continue
        embedding = embed(model, method, example.source)
        boxes = np.stack([c.box for c in found])
        shifted = np.stack([jittered(c.box, jitter, rng) for c in found])
        for prompts, scores in ((boxes, exact), (shifted, moved)):
            logits = model.decode(embedding, torch.from_numpy(prompts))
            scores += _label_dice(logits, found, example)
    return _mean(exact), _mean(moved)


def _label_dice(logits: torch.Tensor, found: list[Component], example: Example) -> list[float]:
    """Dice per label of the union of its components' masks."""
    (h, w), target = example.valid, example.target
    masks = (logits[:, 0, :h, :w] > 0).numpy()
    scores = []
    for label in sorted({c.label for c in found}):
        mine = [m for m, c in zip(masks, found, strict=True) if c.label == label]
        predicted, truth = np.any(mine, axis=0), target[:h, :w] == label
        scores.append(float(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())))
    return scores


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@dataclass
class _Data:
    """What a method trains and validates on."""

    epoch: Callable[[np.random.Generator], Iterable[Example]]
    """The training examples of one epoch, in the order ``rng`` gives."""
    validation: Callable[[], Iterable[Example]]
    record: dict


def _decoder_data(
    data, out: Path, cache, model, progress: bool, log, *, val_fraction: float, seed: int,
    channel: int, choice: LabelChoice, limit: int | None, val_planes: int | None,
) -> _Data:  # fmt: skip
    """The cached embeddings of the split's planes with foreground (cached here if new)."""
    split = cached_split(
        data, out, cache, LiteMedSAMPredictor(model), val_fraction=val_fraction, seed=seed,
        channel=channel, choice=choice, limit=limit, empty_fraction=0.0, progress=progress,
        log=log,
    )  # fmt: skip
    train = [e for e in split.train if e.labels_present]
    val = [e for e in split.val if e.labels_present][:val_planes]
    if not train or not val:
        missing = "validation" if train else "training"
        raise InputError(f"no foreground in the {missing} masks", data)
    return _Data(
        lambda rng: cached_examples(train[i] for i in rng.permutation(len(train))),
        lambda: cached_examples(val),
        split.record(val_fraction, seed, channel, choice, limit),
    )


def _adapter_data(
    data, out: Path, planes_per_case: int | None, *, val_fraction: float, seed: int,
    channel: int, choice: LabelChoice, limit: int | None, val_planes: int | None,
) -> _Data:  # fmt: skip
    """The split's images read each epoch; a fixed seeded set of validation planes in memory."""
    split = split_data(data, out, val_fraction=val_fraction, seed=seed, limit=limit)
    examples = image_examples(split, split.val_ids, np.random.default_rng(seed),
                              planes_per_case, channel, choice)  # fmt: skip
    held = list(islice(examples, val_planes or VAL_PLANES))
    if not held:
        raise InputError("no foreground in the validation masks", data)
    return _Data(
        lambda rng: image_examples(split, split.train_ids, rng, planes_per_case, channel, choice),
        lambda: held,
        {**split.record(val_fraction, seed, channel, choice, limit), "val_planes": len(held),
         "planes_per_case": planes_per_case},
    )  # fmt: skip


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
    planes_per_epoch: int | None = None,
    planes_per_case: int | None = 4,
    val_planes: int | None = None,
    adapter: AdapterConfig | None = None,
    select: str = "exact",
    progress: bool = True,
    model=None,
) -> Path:
    """Fine-tune LiteMedSAM's ``method`` part on a data set; returns the delta's card path.

    ``model`` is the LiteMedSAM to tune (default: the packaged weights); only the method's
    part changes (``adapter`` inserts the adapters of ``adapter``, default
    ``AdapterConfig()``). ``learning_rate``: AdamW's, for either method (adapters at 1e-4 on
    Kvasir-SEG: 180 planes moved the validation Dice by about 2 points).
    ``planes_per_epoch`` caps the planes trained on per epoch (default: all);
    ``planes_per_case`` caps the slices a volume gives per epoch (``adapter`` only);
    ``val_planes`` caps the validation planes (default: all for ``decoder``, ``VAL_PLANES``
    for ``adapter``). ``select``: the validation Dice that picks the best epoch, with
    ``exact`` or ``jittered`` boxes (see the module docstring). With ``resume`` training
    continues from ``out/last.pt``.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {METHODS}")
    if select not in SELECTIONS:
        raise InputError(f"unknown selection {select!r}; choose one of {SELECTIONS}")
    chosen = SELECTIONS.index(select)
    started = time.perf_counter()
    adapter = (adapter or AdapterConfig()) if method == "adapter" else None
    label_choice = label_choice or LabelChoice()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = TrainLog(out / "train.log")
    model = (load_litemedsam() if model is None else model).eval()
    options = {"val_fraction": val_fraction, "seed": seed, "channel": channel,
               "choice": label_choice, "limit": limit, "val_planes": val_planes}  # fmt: skip
    if method == "decoder":
        runs = _decoder_data(data, out, cache, model, progress, log, **options)
    else:
        runs = _adapter_data(data, out, planes_per_case, **options)
        record = runs.record
        log(f"{record['train_cases']} train cases, {record['val_planes']} validation planes of "
            f"{record['val_cases']} cases; adapters {adapter.as_dict()}")  # fmt: skip
    parameters = trainable(model, method, adapter)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-4)
    last = out / "last.pt"
    adapter_record = None if adapter is None else adapter.as_dict()
    if resume and last.is_file():
        saved = read_training_state(last)
        try:
            same = (saved.get("method"), saved.get("adapter"), saved.get("select"))
            if same != (method, adapter_record, select):
                raise ValueError("another method, other adapters or another selection")
            load_trained(model, method, saved["trained"])
            optimizer.load_state_dict(saved["optimizer"])
            first, frozen, best, best_state = (
                saved["epoch"] + 1, tuple(saved["frozen_dice"]), tuple(saved["best_dice"]),
                saved["best"],
            )  # fmt: skip
            best_epoch, train_seconds, planes = (
                saved["best_epoch"], saved["train_seconds"], saved["planes"],
            )  # fmt: skip
        except (KeyError, RuntimeError, ValueError, TypeError):
            raise InputError(
                f"cannot resume: this checkpoint is not from a --method {method} run of this "
                "model with these options (use another output folder, or train without "
                "--resume)",
                last,
            ) from None
        earlier = float(saved.get("seconds", 0.0))
        log(f"resumed after epoch {saved['epoch']}")
    else:
        first, earlier, best_epoch, train_seconds, planes = 1, 0.0, 0, 0.0, 0
        frozen = best = validation_dice(model, method, runs.validation(), jitter, seed)
        best_state = _copy(trained_state(model, method))
        log(f"frozen model: validation Dice {_pair(frozen)}")
    rng = np.random.default_rng(seed + first)
    for epoch in range(first, epochs + 1):
        tick = time.perf_counter()
        loss, trained = train_epoch(
            model, method, optimizer, runs.epoch(rng), jitter, boxes_per_plane, rng,
            planes_per_epoch, progress and method == "adapter",
        )  # fmt: skip
        if trained == 0:
            raise InputError("no foreground in the training masks", data)
        epoch_seconds = time.perf_counter() - tick
        train_seconds, planes = train_seconds + epoch_seconds, planes + trained
        dice = validation_dice(model, method, runs.validation(), jitter, seed)
        if dice[chosen] > best[chosen]:
            best, best_epoch, best_state = dice, epoch, _copy(trained_state(model, method))
        seconds = earlier + time.perf_counter() - started
        torch.save(
            {"method": method, "adapter": adapter_record, "select": select,
             "trained": trained_state(model, method),
             "optimizer": optimizer.state_dict(), "epoch": epoch, "frozen_dice": frozen,
             "best_dice": best, "best": best_state, "best_epoch": best_epoch,
             "train_seconds": train_seconds, "planes": planes, "seconds": seconds},
            last,
        )  # fmt: skip
        log(f"epoch {epoch}/{epochs} loss {loss:.4f} validation Dice {_pair(dice)}; {trained} "
            f"planes in {epoch_seconds:.0f} s ({epoch_seconds / trained:.2f} s/plane), "
            f"{seconds:.0f} s in all")  # fmt: skip
    load_trained(model, method, best_state)
    training = {
        **runs.record,
        "epochs": epochs,
        "best_epoch": best_epoch,
        "learning_rate": learning_rate,
        "box_jitter": jitter,
        "boxes_per_plane": boxes_per_plane,
        "planes_per_epoch": planes_per_epoch,
        "planes_trained": planes,
        "seconds_per_training_plane": round(train_seconds / planes, 3) if planes else None,
        "seconds": round(earlier + time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    metrics = {
        "oracle_dice_frozen": round(frozen[0], 4),
        "oracle_dice_tuned": round(best[0], 4),
        "jittered_box_dice_frozen": round(frozen[1], 4),
        "jittered_box_dice_tuned": round(best[1], 4),
        "selected_on": f"{select} boxes",
    }
    card_path = save_delta(
        out / "segmenter.safetensors", model, method, training, metrics, adapter=adapter
    )
    log(f"validation Dice {_pair(frozen)} frozen → {_pair(best)} tuned (epoch {best_epoch}, "
        f"selected on {select} boxes); saved {card_path}")  # fmt: skip
    return card_path


def _pair(dice: tuple[float, float]) -> str:
    return f"{dice[0]:.4f} exact boxes / {dice[1]:.4f} jittered boxes"


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}
