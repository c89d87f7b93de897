"""Training the backbone prompter (``prompt.backbone``) on a data folder, on the CPU.

Reads top to bottom: split (train / tune / validation cases) → for each member size, planes
resized once into memory → epochs of albumentations-augmented batches, bfloat16 forward where
the CPU has it, a one-cycle schedule, a checkpoint after every epoch (``last_<size>.pt``,
``--resume``) → the epoch with the lowest tuning loss → with every member (and the mirrored
view), the boxes' pixel and score thresholds, the fallback and the refinement
(``pipeline.refine``) that give the best Dice through the segmenter on the tuning planes →
safetensors + card.

The tuning cases are a share of the training cases that the network never trains on; the
validation cases (``val_cases.txt``, the same split as every other trainer) are used for
nothing here, so evaluating on them is honest.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from automedseg import io
from automedseg.checkpoints import read_training_state, save_checkpoint
from automedseg.data.datasets import LabelChoice, class_names
from automedseg.data.planes import Plane, iter_planes, split_cases
from automedseg.errors import InputError
from automedseg.evaluate.metrics import dice
from automedseg.pipeline.refine import agreements, reprompted
from automedseg.prompt.backbone import BackboneNet, BackbonePrompter, build_net
from automedseg.prompt.backbone_space import normalised, pad_to, resized_rgb
from automedseg.prompt.components import boxes_from_probabilities
from automedseg.prompt.pretrained import BACKBONE_WEIGHTS, BACKBONES
from automedseg.segment.base import BoxSegmenter
from automedseg.train.embeddings import split_data
from automedseg.train.head import THRESHOLDS, TrainLog, bf16_supported
from automedseg.types import Boxes, Segmentation

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations must not go online
AGREEMENTS = (0.0, 0.2, 0.4, 0.6)
"""``min_agreement`` values tried on the tuning planes."""
PIXEL_THRESHOLDS = (0.5, 0.7, 0.9)
"""``pixel_threshold`` values tried on the tuning planes: a higher one cuts a component that
joins a small lesion to a less certain neighbour (a fold) into the part the map is sure of."""
MIN_AREA_FRACTION = 0.0005


@dataclass
class SizedPlane:
    """A training plane resized so that its longest side is the network's ``size``."""

    rgb: np.ndarray
    """(h, w, 3) float16 in [0, 1]."""
    labels: np.ndarray
    """(h, w) uint8 label plane (nearest neighbour)."""


def nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A label plane resampled to ``shape`` by nearest neighbour (pixel centres)."""
    rows = ((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int)
    cols = ((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int)
    return labels[rows][:, cols]


def sized(plane: Plane, size: int) -> SizedPlane:
    rgb = resized_rgb(plane.image, size)
    return SizedPlane(rgb.astype(np.float16), nearest(plane.labels, rgb.shape[:2]).astype(np.uint8))


def augmentation(colour: bool):
    """Flips, 90° turns, scale/shift/rotation, brightness/contrast and gamma (and hue and
    saturation for colour images), applied alike to the image and its labels."""
    import albumentations as A  # noqa: N812 (the library's own convention)

    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=0.5),
        A.Affine(scale=(0.75, 1.25), translate_percent=(-0.1, 0.1), rotate=(-20, 20),
                 border_mode=0, fill=0, fill_mask=0, p=0.7),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.RandomGamma(gamma_limit=(70, 150), p=0.5),
        *([A.HueSaturationValue(10, 15, 10, p=0.3)] if colour else []),
    ])  # fmt: skip


def batch_of(planes: list[SizedPlane], size: int, labels: list[int], transform=None):
    """(images (B, 3, size, size), truth (B, K, size, size)) tensors, planes padded top-left."""
    images, truths = [], []
    for plane in planes:
        rgb, lab = plane.rgb.astype(np.float32), plane.labels
        if transform is not None:
            out = transform(image=rgb, mask=lab)
            rgb, lab = np.clip(out["image"], 0.0, 1.0), out["mask"]
        images.append(pad_to(rgb, (size, size)))
        truth = np.zeros((len(labels), size, size), np.float32)
        for k, value in enumerate(labels):
            truth[k, : lab.shape[0], : lab.shape[1]] = lab == value
        truths.append(truth)
    return torch.from_numpy(normalised(np.stack(images))), torch.from_numpy(np.stack(truths))


def map_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice per class and image."""
    bce = F.binary_cross_entropy_with_logits(logits, truth)
    prob = torch.sigmoid(logits)
    inter = (prob * truth).sum(dim=(2, 3))
    soft = 1 - (2 * inter + 1) / (prob.sum(dim=(2, 3)) + truth.sum(dim=(2, 3)) + 1)
    return bce + soft.mean()


def train_epoch(net, optimizer, schedule, planes, size, labels, batch_size, rng, transform,
                progress: str | None) -> float:  # fmt: skip
    net.train()
    order = rng.permutation(len(planes))
    starts = range(0, len(order), batch_size)
    if progress:
        import sys

        from tqdm import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", file=sys.stderr, leave=False)
    total, use_bf16 = 0.0, bf16_supported()
    for start in starts:
        chosen = [planes[i] for i in order[start : start + batch_size]]
        images, truth = batch_of(chosen, size, labels, transform)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            logits = net(images)
        loss = map_loss(logits.float(), truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        total += loss.item() * len(chosen)
    return total / max(len(planes), 1)


@torch.inference_mode()
def tune_loss(net, planes, size, labels, batch_size) -> float:
    net.eval()
    total = 0.0
    for start in range(0, len(planes), batch_size):
        images, truth = batch_of(planes[start : start + batch_size], size, labels)
        total += float(map_loss(net(images), truth)) * len(images)
    return total / max(len(planes), 1)


@dataclass
class Candidates:
    """One tuning plane's objects at score threshold 0, segmented both ways."""

    truth: np.ndarray
    boxes: Boxes
    masks: np.ndarray
    agreement: np.ndarray
    tight_boxes: Boxes
    tight_masks: np.ndarray
    tight_agreement: np.ndarray


def candidates(
    prompter: BackbonePrompter, segmenter: BoxSegmenter, plane: Plane,
    pixel_thresholds: tuple[float, ...] = PIXEL_THRESHOLDS,
) -> dict[float, Candidates]:  # fmt: skip
    """Per pixel threshold, every component the map gives (score threshold 0) with its mask
    from the box and from the mask's tight box, and each mask's agreement with the map
    (``pipeline.refine``). The plane is encoded at most once."""
    maps = prompter.maps(plane.image)
    labels, encoded, out = list(prompter.labels), False, {}
    empty = np.zeros((0, *plane.labels.shape), bool)
    probabilities = maps.at(plane.labels.shape)
    for pixel in pixel_thresholds:
        boxes = boxes_from_probabilities(maps.probabilities, plane.labels.shape, labels,
                                         pixel, 0.0, prompter.min_area_fraction,
                                         prompter.size)  # fmt: skip
        if not len(boxes):
            out[pixel] = Candidates(plane.labels, boxes, empty, np.zeros(0), boxes, empty,
                                    np.zeros(0))  # fmt: skip
            continue
        if not encoded:
            segmenter.set_image(plane.image)
            encoded = True
        masks = segmenter.predict(boxes.xyxy)
        tight_masks, tight = reprompted(masks, boxes, segmenter)
        agree = agreements(masks, boxes, probabilities, maps.label_values, pixel)
        tight_agree = agreements(tight_masks, tight, probabilities, maps.label_values, pixel)
        out[pixel] = Candidates(plane.labels, boxes, masks, agree, tight, tight_masks,
                                tight_agree)  # fmt: skip
    return out


def kept(found: Candidates, settings: dict, threshold: float, labels: list[int],
         fallback: bool = False) -> np.ndarray:  # fmt: skip
    """Which of the plane's objects these settings keep (``fallback`` as in
    ``prompt.components.boxes_from_probabilities``, before the agreement filter)."""
    boxes = found.tight_boxes if settings["reprompt"] else found.boxes
    agree = found.tight_agreement if settings["reprompt"] else found.agreement
    scores = np.asarray(boxes.scores, np.float32)
    passed = scores >= threshold
    if fallback:
        for label in labels:
            mine = boxes.labels == label
            if mine.any() and not passed[mine].any():
                passed[np.flatnonzero(mine)[np.argmax(scores[mine])]] = True
    return passed & (agree >= settings["min_agreement"])


def subset_dice(found: Candidates, reprompt: bool, keep: np.ndarray, labels: list[int]) -> float:
    """Mean Dice over ``labels`` of the label map of the kept objects."""
    boxes = found.tight_boxes if reprompt else found.boxes
    masks = found.tight_masks if reprompt else found.masks
    scores = np.asarray(boxes.scores, np.float32)
    chosen = Segmentation(masks[keep], Boxes(boxes.xyxy[keep], boxes.labels[keep],
                                             scores[keep]))  # fmt: skip
    label_map = chosen.label_map() if keep.any() else np.zeros(found.truth.shape, np.uint8)
    return float(np.mean([dice(label_map == v, found.truth == v) for v in labels]))


def plane_dice(found: Candidates, settings: dict, threshold: float, labels: list[int],
               fallback: bool = False) -> float:  # fmt: skip
    """Mean Dice over ``labels`` of the plane's label map under these settings."""
    keep = kept(found, settings, threshold, labels, fallback)
    return subset_dice(found, settings["reprompt"], keep, labels)


@dataclass
class Choice:
    """The settings ``choose_settings`` picked and the tuning Dice of every combination."""

    pixel_threshold: float
    score_threshold: float
    fallback: bool
    refinement: dict
    table: dict[str, float]

    @property
    def dice(self) -> float:
        return max(self.table.values())

    @property
    def unrefined_dice(self) -> float:
        """The tuning Dice of the same thresholds and fallback without refinement."""
        return self.table[_row(self.pixel_threshold, False, 0.0, self.score_threshold,
                               self.fallback)]  # fmt: skip


def choose_settings(all_found: list[dict[float, Candidates]], labels: list[int]) -> Choice:
    """The pixel threshold, score threshold, fallback and refinement settings with the best
    mean Dice. On a tie the first in order: lower pixel threshold first, no reprompt before
    reprompt, lower agreement first, and the fallback first only when every tuning plane holds
    every label (data where an empty answer is always wrong), else last."""
    pixels = sorted(all_found[0]) if all_found else [0.5]
    everywhere = all(set(labels) <= {int(v) for v in np.unique(f[pixels[0]].truth)}
                     for f in all_found)  # fmt: skip
    table, best = {}, (-1.0, Choice(0.5, 0.5, False, {}, {}))
    memo: dict[tuple, float] = {}  # most settings keep the same objects of a plane

    def dice_of(index: int, pixel: float, settings: dict, threshold: float,
                fallback: bool) -> float:  # fmt: skip
        found = all_found[index][pixel]
        keep = kept(found, settings, threshold, labels, fallback)
        key = (index, pixel, settings["reprompt"], keep.tobytes())
        if key not in memo:
            memo[key] = subset_dice(found, settings["reprompt"], keep, labels)
        return memo[key]

    for pixel in pixels:
        for reprompt in (False, True):
            for agreement in AGREEMENTS:
                settings = {"reprompt": reprompt, "min_agreement": agreement}
                for threshold in THRESHOLDS:
                    for fallback in (True, False) if everywhere else (False, True):
                        score = float(np.mean([dice_of(i, pixel, settings, float(threshold),
                                                       fallback)
                                               for i in range(len(all_found))]))  # fmt: skip
                        table[_row(pixel, reprompt, agreement, threshold, fallback)] = score
                        if score > best[0] + 1e-9:
                            choice = Choice(pixel, float(threshold), fallback, settings, table)
                            best = (score, choice)
    return best[1]


def _row(pixel: float, reprompt: bool, agreement: float, threshold: float,
         fallback: bool) -> str:  # fmt: skip
    return (f"pixel {pixel}, reprompt {reprompt}, agreement {agreement}, score {threshold}, "
            f"fallback {fallback}")


@dataclass
class Member:
    """One member's training: its best weights, their tuning loss, and the seconds it took
    (over every run that trained it, when resumed)."""

    net: BackboneNet
    size: int
    tune_loss: float
    seconds: float


def train_member(
    size: int, fit: list[SizedPlane], tune: list[SizedPlane], labels: list[int], transform,
    last: Path, log: TrainLog, *, epochs: int, batch_size: int, learning_rate: float, seed: int,
    resume: bool, progress: bool, backbone: str = "mobilenet_v2",
) -> Member:  # fmt: skip
    """Train one member on ``backbone`` from its ImageNet weights (or resume from ``last``);
    the epoch with the lowest tuning loss wins."""
    started = time.perf_counter()
    torch.set_flush_denormal(True)  # tiny values in black backgrounds slow the CPU many-fold
    torch.manual_seed(seed * 1000 + size)  # the decoder's initial weights: a rerun repeats them
    net = build_net({"backbone": backbone, "num_classes": len(labels)}, pretrained=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps = epochs * -(-len(fit) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps,
                                                   pct_start=0.15)  # fmt: skip
    first, best_loss, best_state, earlier = 1, float("inf"), None, 0.0
    if resume and last.is_file():
        saved = read_training_state(last)
        if saved.get("epochs") != epochs:
            raise InputError(f"cannot resume: this run was started for {saved.get('epochs')} "
                             f"epochs, not {epochs} (the learning-rate schedule spans them); "
                             "resume with the same --epochs", last)  # fmt: skip
        try:
            net.load_state_dict(saved["net"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
        except (KeyError, RuntimeError, ValueError):
            raise InputError("cannot resume: this checkpoint is for another network, labels or "
                             "number of epochs (use another output folder, or train without "
                             "--resume)", last) from None  # fmt: skip
        first, best_loss, best_state = saved["epoch"] + 1, saved["best_loss"], saved["best"]
        earlier = float(saved.get("seconds", 0.0))
        log(f"{size} px: resumed after epoch {saved['epoch']}")
    for epoch in range(first, epochs + 1):
        rng = np.random.default_rng(seed * 1000 + epoch)
        desc = f"{size} px, epoch {epoch}/{epochs}" if progress else None
        loss = train_epoch(net, optimizer, schedule, fit, size, labels, batch_size, rng,
                           transform, desc)  # fmt: skip
        held = tune_loss(net, tune, size, labels, batch_size)
        if held < best_loss:
            best_loss = held
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        seconds = earlier + time.perf_counter() - started
        torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "epoch": epoch, "epochs": epochs,
                    "best_loss": best_loss, "best": best_state, "seconds": seconds},
                   last)  # fmt: skip
        log(f"{size} px: epoch {epoch}/{epochs} train loss {loss:.4f} tune loss {held:.4f} "
            f"({seconds:.0f} s)")  # fmt: skip
    net.load_state_dict(best_state)
    return Member(net.eval(), size, best_loss, earlier + time.perf_counter() - started)


def train_backbone(
    data: str | Path,
    out: str | Path,
    segmenter: BoxSegmenter,
    *,
    sizes: tuple[int, ...] = (320,),
    backbones: str | tuple[str, ...] = "mobilenet_v2",
    flip: bool = True,
    val_fraction: float = 0.2,
    tune_fraction: float = 0.15,
    epochs: int | tuple[int, ...] = 16,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    resume: bool = False,
    channel: int = 0,
    empty_fraction: float = 0.1,
    task: str | None = None,
    seed: int = 0,
    label_choice: LabelChoice | None = None,
    limit: int | None = None,
    progress: bool = True,
    segmenter_record: dict | None = None,
) -> Path:
    """Train a backbone prompter on a data set; returns the path of its card (JSON).

    One member per entry of ``sizes`` (the longest side its images are resized to), each
    trained in turn for ``epochs`` (one number, or one per member) on ``backbones`` (one of
    ``prompt.pretrained.BACKBONES``, or one per member); ``flip`` makes the prompter also read
    the mirrored image. ``segmenter`` is what the boxes will prompt (the task's
    LiteMedSAM, with its delta): the pixel and score thresholds, fallback and refinement are
    chosen on its Dice; ``segmenter_record`` is what the card says about it. With
    ``resume``, training continues from ``out/last_<size>.pt``.
    """
    started = time.perf_counter()
    label_choice = label_choice or LabelChoice()
    sizes = tuple(int(size) for size in sizes)
    if not sizes or len(set(sizes)) != len(sizes) or min(sizes) < 32:
        raise InputError(f"member sizes must be distinct and at least 32 pixels, not {sizes}")
    member_epochs = (epochs,) * len(sizes) if isinstance(epochs, int) else tuple(epochs)
    if len(member_epochs) != len(sizes):
        raise InputError(f"{len(member_epochs)} epoch counts for {len(sizes)} members")
    member_backbones = (backbones,) * len(sizes) if isinstance(backbones, str) else backbones
    if len(member_backbones) != len(sizes):
        raise InputError(f"{len(member_backbones)} backbones for {len(sizes)} members")
    if unknown := set(member_backbones) - set(BACKBONES):
        raise InputError(f"unknown backbone(s) {sorted(unknown)} (known: {', '.join(BACKBONES)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = TrainLog(out / "train.log")
    split = split_data(data, out, val_fraction=val_fraction, seed=seed, limit=limit)
    fit_ids, tune_ids = split_cases(split.train_ids, tune_fraction, seed)
    io.write_text(out / "tune_cases.txt", "\n".join(tune_ids) + "\n")
    log(f"{len(fit_ids)} training, {len(tune_ids)} tuning, {len(split.val_ids)} validation cases "
        f"(validation untouched); members: "
        + ", ".join(f"{b} at {z} px" for b, z in zip(member_backbones, sizes, strict=True)))

    def planes(ids: list[str], offset: int) -> list[Plane]:
        return list(iter_planes(split.dataset, ids, channel, empty_fraction, seed + offset,
                                label_choice))  # fmt: skip

    def fit_at(size: int) -> list[SizedPlane]:  # read again per member: full planes not kept
        return [sized(p, size) for p in planes(fit_ids, 0)]

    first_fit, tune_planes = fit_at(sizes[0]), planes(tune_ids, 1)
    labels = sorted(set().union(*({int(v) for v in np.unique(p.labels)} for p in first_fit))
                    - {0})  # fmt: skip
    if not labels:
        raise InputError("no foreground in any training mask: nothing to learn", data)
    present = set().union(*({int(v) for v in np.unique(p.labels)} for p in tune_planes))
    if missing := set(labels) - present:
        raise InputError(f"label(s) {sorted(missing)} never appear in the tuning cases; use "
                         "more data or another --seed", data)  # fmt: skip
    colour = any(p.image.ndim == 3 for p in tune_planes)
    transform = augmentation(colour)
    members, training_now = [], 0.0  # the members' seconds in this run (not resumed ones)
    for i, (size, count, backbone) in enumerate(zip(sizes, member_epochs, member_backbones,
                                                    strict=True)):  # fmt: skip
        fit = first_fit if i == 0 else fit_at(size)
        tune = [sized(p, size) for p in tune_planes]
        begun = time.perf_counter()
        members.append(train_member(
            size, fit, tune, labels, transform, out / f"last_{size}.pt", log, epochs=count,
            batch_size=batch_size, learning_rate=learning_rate, seed=seed, resume=resume,
            progress=progress, backbone=backbone))  # fmt: skip
        training_now += time.perf_counter() - begun
    prompter = BackbonePrompter([m.net for m in members], {v: "" for v in labels},
                                sizes=sizes, flip=flip,
                                min_area_fraction=MIN_AREA_FRACTION)  # fmt: skip
    log(f"choosing the pixel and score thresholds, fallback and refinement on "
        f"{len(tune_planes)} tuning planes")  # fmt: skip
    tuning = tune_planes
    if progress:
        import sys

        from tqdm import tqdm

        tuning = tqdm(tune_planes, desc="tuning planes", unit="plane", file=sys.stderr,
                      leave=False)  # fmt: skip
    found = [candidates(prompter, segmenter, p) for p in tuning]
    choice = choose_settings(found, labels)
    log(f"pixel threshold {choice.pixel_threshold}, score threshold {choice.score_threshold}, "
        f"fallback {choice.fallback}, refinement {choice.refinement}: tuning Dice "
        f"{choice.dice:.4f}")  # fmt: skip
    names = class_names(split.dataset.label_names, label_choice)
    card = {
        "kind": "backbone",
        "task": task,
        "members": prompter.members(),
        "flip": flip,
        "fallback": choice.fallback,
        "labels": {str(v): names.get(v, f"label{v}") for v in labels},
        "score_threshold": choice.score_threshold,
        "pixel_threshold": choice.pixel_threshold,
        "min_area_fraction": MIN_AREA_FRACTION,
        "refinement": {"settings": choice.refinement, "tune_dice": round(choice.dice, 4),
                       "tune_dice_unrefined": round(choice.unrefined_dice, 4)},
        "pretrained": [BACKBONE_WEIGHTS[b].record() for b in dict.fromkeys(member_backbones)],
        "segmenter": segmenter_record or {"name": "LiteMedSAM"},
        "preprocessing": "automedseg.intensity.to_unit_range, longest side to each member's "
        "size, ImageNet normalisation, black padding to a multiple of 32; members' and "
        "mirrored views' probabilities averaged",
        "training": {
            **split.record(val_fraction, seed, channel, label_choice, limit),
            "tune_fraction": tune_fraction,
            "fit_cases": len(fit_ids),
            "tune_cases": len(tune_ids),
            "fit_planes": len(first_fit),
            "tune_planes": len(tune_planes),
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "schedule": "one-cycle (torch OneCycleLR, 15 % warm-up)",
            "members": [{"size": m.size, "epochs": count, "seconds": round(m.seconds, 1),
                         "tune_loss": round(m.tune_loss, 4)}
                        for m, count in zip(members, member_epochs, strict=True)],  # fmt: skip
            "seconds": round(time.perf_counter() - started - training_now
                             + sum(m.seconds for m in members), 1),  # fmt: skip
            "torch_threads": torch.get_num_threads(),
            "bfloat16_forward": bf16_supported(),
            "augmentation": "albumentations: flips, 90° turns, affine (scale 0.75–1.25, shift "
            "10 %, rotation 20°), brightness/contrast, gamma" + (", hue/saturation" * colour),
        },
        "tune_metrics": {"loss": [round(m.tune_loss, 4) for m in members],
                         "dice": round(choice.dice, 4)},
    }
    half = {k: v.half() if v.is_floating_point() else v for k, v in prompter.state_dict().items()}
    card_path = save_checkpoint(out / "prompter.safetensors", half, card)
    log(f"saved {card_path}")
    return card_path
