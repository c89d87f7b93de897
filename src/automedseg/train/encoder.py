"""A small stand-in for LiteMedSAM's image encoder, distilled from it on a task's planes.

LiteMedSAM's TinyViT encoder is 37.5 GMAC per plane, about three quarters of the pipeline's
time on a CPU. The student is either the backbone prompter's network (an ImageNet MobileNetV2
or EfficientNet-Lite0 with its FPN decoder, ``prompt.backbone``, stride-4 features of
``width`` channels) and a head to the embedding's 256 channels (about 2.7 GMAC on
MobileNetV2 at width 128), or the teacher itself with transformer blocks removed
(``kept_blocks``, ``train.pruned``): (1, 3, 256, 256) LiteMedSAM input → (1, 256, 64, 64)
embedding. The same prompt encoder and mask decoder read its embedding, so it drops in where
the encoder was (``automedseg quantize --student``, which keeps it only within the Dice
budget).

Training (``distil_encoder``): the same train/validation split as every trainer (validation
cases untouched); each training plane as LiteMedSAM reads it, and its left-right and up-down
mirror images, with the teacher's embedding computed once into ``OUT/cache`` (the float32
encoder compiled by OpenVINO, bfloat16 where the CPU has it: about 0.5 s per plane and its
two mirror images on 2 threads, benchmarks/README.md); then mean squared error to those
embeddings, AdamW with a one-cycle schedule, bfloat16 autocast where the CPU has it. A
checkpoint every epoch (``OUT/last.pt``) resumes a stopped run; the cache resumes too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from automedseg import io
from automedseg.checkpoints import (
    load_checkpoint,
    read_card,
    read_training_state,
    save_checkpoint,
)
from automedseg.data.datasets import LabelChoice
from automedseg.data.planes import iter_planes
from automedseg.errors import InputError, WeightsError
from automedseg.prompt.backbone import BackboneNet, _conv, build_net
from automedseg.prompt.backbone_space import IMAGENET_MEAN, IMAGENET_STD
from automedseg.prompt.head import load_head_prompter
from automedseg.prompt.pretrained import BACKBONE_WEIGHTS
from automedseg.runtime.transforms import preprocess
from automedseg.segment.litemedsam import IMAGE_SIZE, PACKAGED_WEIGHTS_SHA256, load_litemedsam
from automedseg.tasks import shipped_tasks
from automedseg.train.embeddings import split_data
from automedseg.train.head import TrainLog
from automedseg.train.pruned import PrunedEncoder, build_pruned
from automedseg.train.student_terms import (
    VIEWS,
    Decoder,
    HeadTerm,
    MaskTerm,
    Term,
    frozen,
    read_boxes,
)

KIND = "student_encoder"
EMBEDDING = (256, 64, 64)


class StudentEncoder(nn.Module):
    """(B, 3, 256, 256) LiteMedSAM input in [0, 1] → (B, 256, 64, 64) embedding."""

    def __init__(self, net: BackboneNet) -> None:
        super().__init__()
        self.net = net
        self.head = nn.Sequential(_conv(net.width, EMBEDDING[0], 3),
                                  nn.Conv2d(EMBEDDING[0], EMBEDDING[0], 1))  # fmt: skip
        self.register_buffer("mean", torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.net.decoded((image - self.mean) / self.std))


def build_student(width: int = 128, pretrained: bool = False,
                  backbone: str = "mobilenet_v2") -> StudentEncoder:  # fmt: skip
    """The student on ``backbone`` (``prompt.pretrained.BACKBONES``); ``pretrained``: it starts
    from the backbone's ImageNet weights."""
    architecture = {"backbone": backbone, "num_classes": 1, "width": width}
    return StudentEncoder(build_net(architecture, pretrained))


Student = StudentEncoder | PrunedEncoder


def load_student(card_path: str | Path) -> tuple[Student, dict[str, Any]]:
    """A distilled student and its card (``WeightsError`` for a card of another kind)."""
    card, state = load_checkpoint(card_path)
    if card.get("kind") != KIND:
        raise WeightsError(f"not a distilled encoder card (kind {card.get('kind')!r})", card_path)
    try:
        architecture = card["architecture"]
        if "blocks_kept" in architecture:
            student: Student = build_pruned(architecture, load_litemedsam().image_encoder)
        else:
            student = build_student(int(architecture["width"]),
                                    backbone=architecture.get("backbone", "mobilenet_v2"))
        student.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        raise WeightsError(f"card and weights do not describe a distilled encoder: {detail}",
                           card_path) from None  # fmt: skip
    return student.eval(), card


def teacher_encoder(threads: int, delta: str | Path | None = None) -> Any:
    """LiteMedSAM's float32 image encoder (with the fine-tuning ``delta`` card's adapters, if
    given) compiled by OpenVINO (an ``openvino.CompiledModel``)."""
    import openvino as ov

    from automedseg.runtime.openvino import core, inference_precision, latency_config

    encoder = _litemedsam(delta).image_encoder.eval()
    example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    converted = ov.convert_model(encoder, example_input=example)
    config = latency_config(inference_precision("auto"), threads)
    return core().compile_model(converted, "CPU", config)


class Cache:
    """OUT/cache: the training planes' LiteMedSAM inputs and the teacher's embeddings, float16
    arrays on disk (``inputs.npy``, ``targets.npy``), ``VIEWS`` rows per plane, in the order
    of ``planes.txt``; ``done.txt`` counts the planes written."""

    def __init__(self, folder: Path, names: list[str], teacher: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, count = folder, len(names) * VIEWS
        listed, learnt = folder / "planes.txt", folder / "teacher.txt"
        if listed.exists() and listed.read_text().split() != names:
            raise InputError("the cache holds other planes (another data set or split); "
                             "delete it or choose another --out", folder)  # fmt: skip
        if listed.exists() and learnt.exists() and learnt.read_text().strip() != teacher:
            raise InputError(f"the cache holds the embeddings of another LiteMedSAM "
                             f"({learnt.read_text().strip()}, not {teacher}); delete it or "
                             "choose another --out", folder)  # fmt: skip
        io.write_text(listed, "\n".join(names) + "\n")
        io.write_text(learnt, teacher + "\n")
        mode = "r+" if (folder / "inputs.npy").exists() else "w+"
        self.inputs = np.lib.format.open_memmap(folder / "inputs.npy", mode, np.float16,
                                                (count, 3, IMAGE_SIZE, IMAGE_SIZE))  # fmt: skip
        self.targets = np.lib.format.open_memmap(folder / "targets.npy", mode, np.float16,
                                                 (count, *EMBEDDING))  # fmt: skip

    @property
    def done(self) -> int:
        path = self.folder / "done.txt"
        return int(path.read_text()) if path.exists() else 0

    def mark(self, planes: int) -> None:
        self.inputs.flush()
        self.targets.flush()
        io.write_text(self.folder / "done.txt", str(planes))


def plane_name(plane: Any) -> str:
    return plane.case_id if plane.index is None else f"{plane.case_id}#{plane.index}"


def fill_cache(cache: Cache, planes: Iterator, count: int, teacher: Any, log: TrainLog) -> None:
    """Write the planes not yet in the cache (of ``count``, streamed in the cache's order):
    their inputs and the teacher's embeddings."""
    start = cache.done
    log(f"caching the teacher's embeddings of {count - start} planes × {VIEWS} views")
    clock = time.perf_counter()
    for index, plane in enumerate(planes):
        if index < start:
            continue
        x = preprocess(plane.image)[0][0]
        for view, array in enumerate((x, x[:, :, ::-1], x[:, ::-1, :])):
            array = np.ascontiguousarray(array)[None]
            cache.inputs[index * VIEWS + view] = array[0]
            cache.targets[index * VIEWS + view] = teacher(array)[0][0]
        if (index + 1) % 25 == 0 or index + 1 == count:
            cache.mark(index + 1)
            each = (time.perf_counter() - clock) / (index + 1 - start)
            print(f"cache: {index + 1}/{count} planes ({each:.2f} s each)",
                  file=sys.stderr, flush=True)  # fmt: skip


def train_epoch(student, optimizer, schedule, cache: Cache, batch: int, rng,
                progress: str | None = None, terms: Sequence[Term] = ()) -> float:  # fmt: skip
    """One pass over the cache in a random order; the mean loss. ``progress``: the label of
    a progress bar over the batches (none if None); ``terms``: losses added to the
    embedding's mean squared error (``train.student_terms``)."""
    student.train()
    order, losses = rng.permutation(len(cache.inputs)), []
    steps: Iterable[int] = range(len(order) // batch)
    if progress is not None:
        from tqdm import tqdm

        steps = tqdm(steps, desc=progress, unit="batch", file=sys.stderr, leave=False)
    for step in steps:
        rows = np.sort(order[step * batch : (step + 1) * batch])
        x = torch.from_numpy(cache.inputs[rows].astype(np.float32))
        y = torch.from_numpy(cache.targets[rows].astype(np.float32))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            predicted = student(x)
            extra = [term(predicted, y, rows, rng) for term in terms]
        loss = nn.functional.mse_loss(predicted.float(), y)
        for added in extra:
            if added is not None:
                loss = loss + added
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def distil_encoder(
    data: str | Path,
    out: str | Path,
    *,
    epochs: int = 25,
    batch_size: int = 8,
    learning_rate: float = 2e-3,
    width: int = 128,
    backbone: str = "mobilenet_v2",
    val_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    threads: int = 2,
    resume: bool = False,
    task: str | None = None,
    teacher: Callable[[np.ndarray], list] | None = None,
    segmenter_weights: str | Path | None = None,
    progress: bool = True,
    mask_weight: float = 0.0,
    start_from: str | Path | None = None,
    decoder: Decoder | None = None,
    head: str | Path | None = None,
    head_weight: float = 1.0,
    labels: LabelChoice | None = None,
    kept_blocks: dict[int, list[int]] | None = None,
) -> Path:
    """Distil the student on a data set's training planes; returns its card's path.
    ``teacher``: (1, 3, 256, 256) input → [its (1, 256, 64, 64) embedding]; by default
    LiteMedSAM's encoder on OpenVINO (``teacher_encoder``), compiled only if the cache needs it.
    ``segmenter_weights``: the card of the fine-tuning delta the task runs with (adapters change
    the embedding): the teacher includes it and the card records its SHA-256. ``mask_weight``
    > 0 adds the mask term (``train.student_terms``) with that weight, decoded by ``decoder``
    (by default the task's frozen LiteMedSAM). ``head``: the card of the task's head prompter,
    whose class maps from the student's embedding learn those from the teacher's (weight
    ``head_weight``). ``start_from``: the card of a student to go on training (its width;
    distilled from the same LiteMedSAM) instead of ImageNet's weights. ``labels``: the mask
    labels whose components the mask term's boxes surround (by default those the shipped
    ``task``'s prompter was trained on, else all). ``kept_blocks``: the student is the
    teacher with only these transformer blocks (``train.pruned``; ``width`` and ``backbone``
    unused), not yet with a ``segmenter_weights`` delta."""
    if kept_blocks is not None and segmenter_weights is not None:
        raise InputError("--keep-blocks does not take --segmenter-weights yet: a pruned "
                         "student is cut from the plain LiteMedSAM")  # fmt: skip
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = TrainLog(out / "train.log")
    split = split_data(data, out, val_fraction=val_fraction, seed=seed, limit=limit)
    labels = labels or task_labels(task)

    def planes() -> Iterator:  # read twice (names, then cache) rather than held in memory
        return iter_planes(split.dataset, split.train_ids, empty_fraction=0.1, seed=seed)

    names = [plane_name(p) for p in planes()]
    if not names:
        raise InputError("no training planes to distil on", data)
    delta_sha256 = (
        None if segmenter_weights is None else str(read_card(segmenter_weights)["sha256"])
    )
    student, origin = _first_student(start_from, width, delta_sha256, backbone, kept_blocks)
    head_model = None if head is None else frozen(load_head_prompter(head).head)  # before caching
    cache = Cache(out / "cache", names, f"LiteMedSAM delta {delta_sha256}")
    if cache.done < len(names):
        teacher = teacher or teacher_encoder(threads, segmenter_weights)
        fill_cache(cache, planes(), len(names), teacher, log)
    terms: list[Term] = []
    if mask_weight > 0:
        boxes = read_boxes(cache.folder, planes(), len(names), labels)
        terms.append(MaskTerm(decoder or frozen(_litemedsam(segmenter_weights)), boxes,
                              mask_weight))  # fmt: skip
    if head_model is not None:
        terms.append(HeadTerm(head_model, head_weight))
    steps = len(cache.inputs) // batch_size
    if steps == 0:
        raise InputError(f"{len(names)} planes are too few for a batch of {batch_size}", data)
    optimizer = torch.optim.AdamW(student.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, learning_rate, epochs=epochs, steps_per_epoch=steps, pct_start=0.1
    )
    first, seconds = (
        _resume(out / "last.pt", student, optimizer, schedule, log) if resume else (0, [])
    )
    for epoch in range(first, epochs):
        clock = time.perf_counter()
        loss = train_epoch(student, optimizer, schedule, cache, batch_size,
                           np.random.default_rng(seed + epoch),
                           f"epoch {epoch + 1}/{epochs}" if progress else None,
                           terms)  # fmt: skip
        seconds.append(time.perf_counter() - clock)
        log(f"epoch {epoch + 1}/{epochs}: loss {loss:.5f}, {seconds[-1]:.0f} s")
        torch.save({"student": student.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "epoch": epoch + 1, "loss": loss,
                    "epoch_seconds": seconds}, out / "last.pt")  # fmt: skip
    training = {
        **split.record(val_fraction, seed, 0, labels, limit),
        "planes": len(names), "views": VIEWS, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "loss": "mean squared error to the teacher's embedding"
        + (" + mask_weight × the mask term" if mask_weight > 0 else "")
        + (" + head_weight × the head term" if head is not None else "")
        + (" (train.student_terms)" if terms else ""),
        "mask_weight": mask_weight, "started_from_sha256": origin,
        "head_sha256": None if head is None else str(read_card(head)["sha256"]),
        "head_weight": None if head is None else head_weight,
        # every epoch's time when all were recorded (a run resumed from a checkpoint of an
        # earlier version has not), and this run's time, caching included
        "epoch_seconds": round(sum(seconds), 1) if len(seconds) == epochs else None,
        "seconds_this_run": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    path = save_checkpoint(
        out / "encoder.safetensors",
        student.state_dict(),
        _card(task, student, training, delta_sha256),
    )
    log(f"wrote {path}")
    return path


def task_labels(task: str | None) -> LabelChoice:
    """The labels a shipped task's prompter was trained on (all, for any other name)."""
    shipped = shipped_tasks().get(task or "")
    if shipped is None or shipped.prompter is None:
        return LabelChoice()
    return LabelChoice.of_record(read_card(shipped.prompter).get("training", {}))


def _litemedsam(segmenter_weights: str | Path | None) -> nn.Module:
    from automedseg.segment.delta import tuned_litemedsam

    return tuned_litemedsam(segmenter_weights) if segmenter_weights else load_litemedsam()


def _first_student(
    start_from: str | Path | None, width: int, delta_sha256: str | None,
    backbone: str = "mobilenet_v2", kept_blocks: dict[int, list[int]] | None = None,
) -> tuple[Student, str | None]:  # fmt: skip
    """The student training starts from: ``backbone`` with its ImageNet weights, the teacher
    with only ``kept_blocks``, or the student of card ``start_from`` (refused if distilled
    from another LiteMedSAM); with the SHA-256 of the card it started from."""
    if start_from is None and kept_blocks is not None:
        return PrunedEncoder(load_litemedsam().image_encoder, kept_blocks), None
    if start_from is None:
        return build_student(width, pretrained=True, backbone=backbone), None
    student, card = load_student(start_from)
    if card["teacher"]["delta_sha256"] != delta_sha256:
        raise InputError(f"this student learnt another LiteMedSAM (delta "
                         f"{card['teacher']['delta_sha256']}, not {delta_sha256}); pass the "
                         "--segmenter-weights it was distilled with", start_from)  # fmt: skip
    return student, str(card["sha256"])


def _card(task: str | None, student: Student, training: dict,
          delta_sha256: str | None) -> dict:  # fmt: skip
    if isinstance(student, PrunedEncoder):
        architecture = student.architecture()
        pretrained = {"name": "LiteMedSAM (its image encoder's kept blocks)",
                      "sha256": PACKAGED_WEIGHTS_SHA256}  # fmt: skip
    else:
        architecture = {"backbone": student.net.backbone, "width": student.net.width}
        pretrained = BACKBONE_WEIGHTS[student.net.backbone].record()
    return {
        "kind": KIND,
        "task": task,
        "architecture": architecture,
        "teacher": {
            "name": "LiteMedSAM image encoder",
            "sha256": PACKAGED_WEIGHTS_SHA256,
            "delta_sha256": delta_sha256,
        },  # fmt: skip
        "pretrained": pretrained,
        "input": "LiteMedSAM's (1, 3, 256, 256) input; output its (1, 256, 64, 64) embedding",
        "training": training,
    }


def _resume(path: Path, student, optimizer, schedule, log: TrainLog) -> tuple[int, list]:
    """Load ``path`` (if any) into the three; the number of epochs it had finished and their
    seconds (empty when its version did not record them)."""
    if not path.exists():
        return 0, []
    state = read_training_state(path)
    student.load_state_dict(state["student"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    log(f"resuming after epoch {state['epoch']}")
    return int(state["epoch"]), [float(v) for v in state.get("epoch_seconds", [])]
