"""Can a small network stand in for LiteMedSAM's image encoder? Distilled on one task's planes.

    python benchmarks/encoder_distillation.py --data ../shared/datasets/kvasir_seg \\
        --split runs/validation_polyp/val_cases.txt --out runs/distil_polyp --epochs 30
    python benchmarks/encoder_distillation.py --data ../shared/datasets/kvasir_seg \\
        --split runs/validation_polyp/val_cases.txt --out runs/distil_polyp --evaluate \\
        --record benchmarks/records/encoder_distillation.json

The encoder is 37.5 GMAC and 150 ms of the 2D pipeline's 204 ms (``encoder_profile.py``);
dropping its blocks cannot reach the speed targets (``encoder_pruning.py``). This tries a
student of another shape: the ImageNet MobileNetV2 of the backbone prompter with an FPN
decoder to stride 4 and a 256-channel head, the embedding's (256, 64, 64) shape, so that it
drops in before the same prompt encoder and mask decoder. It learns the teacher's embedding
(mean squared error) on the training cases only (``--split`` names the validation cases, which
are left out): each plane as LiteMedSAM reads it and its left-right and up-down mirror images,
the teacher's embeddings computed once (OpenVINO, bfloat16 where the CPU has it) into
``OUT/cache``. Training saves ``OUT/last.pt`` every epoch and resumes from it; ``OUT/train.log``
has the losses. ``--evaluate`` measures on the validation cases: the cosine of the student's
embedding to the teacher's, the Dice with the manual mask of LiteMedSAM's mask from each
connected component's box (oracle prompts) on either embedding, and the median ms of both
encoders on OpenVINO, timed in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from automedseg.data.datasets import find_cases, read_split
from automedseg.evaluate.metrics import dice
from automedseg.intensity import to_unit_range
from automedseg.io import read_image
from automedseg.io.read import read_label_map
from automedseg.prompt.backbone import BackboneNet, _conv, mobilenet_v2_features
from automedseg.prompt.backbone_space import IMAGENET_MEAN, IMAGENET_STD
from automedseg.prompt.oracle import oracle_boxes
from automedseg.prompt.pretrained import MOBILENET_V2
from automedseg.runtime.openvino import core, inference_precision, latency_config
from automedseg.runtime.transforms import postprocess, preprocess
from automedseg.segment.litemedsam import load_litemedsam

EMBEDDING = (256, 64, 64)
VIEWS = 3  # the plane, its left-right and its up-down mirror image


class Student(nn.Module):
    """(B, 3, 256, 256) LiteMedSAM input in [0, 1] → (B, 256, 64, 64) embedding."""

    def __init__(self, net: BackboneNet) -> None:
        super().__init__()
        self.net = net
        self.head = nn.Sequential(_conv(net.width, 256, 3), nn.Conv2d(256, 256, 1))
        self.register_buffer("mean", torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.net.decoded((image - self.mean) / self.std))


def student(width: int, pretrained: bool) -> Student:
    features = mobilenet_v2_features(MOBILENET_V2.state_dict() if pretrained else None)
    return Student(BackboneNet(features, num_classes=1, width=width))


def split_ids(data: Path, split: Path) -> tuple[list, list]:
    """(training cases, validation cases): the cases not in ``split`` and those in it."""
    held_out = read_split(split)
    cases = find_cases(data).cases
    return ([c for c in cases if c.case_id not in held_out],
            [c for c in cases if c.case_id in held_out])  # fmt: skip


def teacher(threads: int):
    """LiteMedSAM's float32 encoder on OpenVINO (bfloat16 where the CPU has it), and the model."""
    import openvino as ov

    model = load_litemedsam().eval()
    example = torch.zeros(1, 3, 256, 256)
    converted = ov.convert_model(model.image_encoder, example_input=example)
    config = latency_config(inference_precision("auto"), threads)
    return core().compile_model(converted, "CPU", config), model


def plane_input(case) -> np.ndarray:
    return preprocess(to_unit_range(read_image(case.images[0])))[0][0]


def build_cache(out: Path, cases: list, threads: int) -> tuple[np.memmap, np.memmap]:
    """OUT/cache/inputs.npy and targets.npy (float16): each training plane's LiteMedSAM input
    and the teacher's embedding, in ``VIEWS`` mirror images; resumes where it stopped."""
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    count = len(cases) * VIEWS
    mode = "r+" if (cache / "inputs.npy").exists() else "w+"
    inputs = np.lib.format.open_memmap(cache / "inputs.npy", mode, np.float16, (count, 3, 256, 256))
    targets = np.lib.format.open_memmap(cache / "targets.npy", mode, np.float16,
                                        (count, *EMBEDDING))  # fmt: skip
    done_file = cache / "done.txt"
    done = int(done_file.read_text()) if done_file.exists() else 0
    if done < len(cases):
        encoder, _ = teacher(threads)
        clock = time.perf_counter()
        for index in range(done, len(cases)):
            x = plane_input(cases[index])
            for view, array in enumerate((x, x[:, :, ::-1], x[:, ::-1, :])):
                array = np.ascontiguousarray(array)[None]
                inputs[index * VIEWS + view] = array[0]
                targets[index * VIEWS + view] = encoder(array)[0][0]
            if (index + 1) % 25 == 0 or index + 1 == len(cases):
                inputs.flush(), targets.flush()
                done_file.write_text(str(index + 1))
                rate = (time.perf_counter() - clock) / (index + 1 - done)
                print(f"cache: {index + 1}/{len(cases)} planes ({rate:.2f} s each)", flush=True)
    return inputs, targets


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    training, _ = split_ids(args.data, args.split)
    inputs, targets = build_cache(args.out, training, args.threads)
    net = student(args.width, pretrained=True)
    steps_per_epoch = len(inputs) // args.batch
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, epochs=args.epochs,
                                                   steps_per_epoch=steps_per_epoch, pct_start=0.1)  # fmt: skip
    first = 0
    last = args.out / "last.pt"
    if last.exists():
        state = torch.load(last, weights_only=True)
        net.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        first = int(state["epoch"])
        print(f"resuming after epoch {first}", flush=True)
    rng = np.random.default_rng(first)
    log = (args.out / "train.log").open("a")
    for epoch in range(first, args.epochs):
        net.train()
        clock, losses = time.perf_counter(), []
        order = rng.permutation(len(inputs))
        for step in range(steps_per_epoch):
            rows = np.sort(order[step * args.batch : (step + 1) * args.batch])
            x = torch.from_numpy(inputs[rows].astype(np.float32))
            y = torch.from_numpy(targets[rows].astype(np.float32))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                predicted = net(x)
            loss = nn.functional.mse_loss(predicted.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss))
        line = (f"epoch {epoch + 1}/{args.epochs}: loss {np.mean(losses):.5f}, "
                f"{time.perf_counter() - clock:.0f} s")  # fmt: skip
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()
        torch.save({"student": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "epoch": epoch + 1}, last)  # fmt: skip


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))


@torch.inference_mode()
def oracle_dice(model, embedding: np.ndarray, label_map: np.ndarray, resized, scale) -> float:
    """Dice with the manual mask of the union of LiteMedSAM's masks from the oracle boxes."""
    boxes = oracle_boxes(label_map)
    logits = model.decode(torch.from_numpy(embedding), torch.from_numpy(boxes.xyxy * scale))
    masks = postprocess(logits.numpy(), resized, label_map.shape)
    return dice(masks.any(axis=0), label_map > 0)


def evaluate(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    import openvino as ov

    state = torch.load(args.out / "last.pt", weights_only=True)
    net = student(args.width, pretrained=False)
    net.load_state_dict(state["student"])
    net.eval()
    encoder, model = teacher(args.threads)
    config = latency_config(inference_precision("auto"), args.threads)
    example = torch.zeros(1, 3, 256, 256)
    fast = core().compile_model(ov.convert_model(net, example_input=example), "CPU", config)
    _, validation = split_ids(args.data, args.split)
    rows = []
    for case in validation:
        image = to_unit_range(read_image(case.images[0]))
        x, resized = preprocess(image)
        label_map = read_label_map(case.labels[0])
        scale = 256 / max(label_map.shape)
        big, small = encoder(x)[0], fast(x)[0]
        rows.append((cosine(big, small), oracle_dice(model, big, label_map, resized, scale),
                     oracle_dice(model, small, label_map, resized, scale)))  # fmt: skip
    seconds: dict[str, list[float]] = {"teacher": [], "student": []}
    x = preprocess(to_unit_range(read_image(validation[0].images[0])))[0]
    for _ in range(args.repeats + 2):
        for name, compiled in (("teacher", encoder), ("student", fast)):
            clock = time.perf_counter()
            compiled(x)
            seconds[name].append(time.perf_counter() - clock)
    table = np.asarray(rows)
    log = (args.out / "train.log").read_text().splitlines()
    return {
        "command": "python benchmarks/encoder_distillation.py --data {} --split {} --out {} "
        "--width {} --evaluate".format(args.data, args.split, args.out, args.width),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "student": f"ImageNet MobileNetV2 + FPN (width {args.width}) + 256-channel head",
        "epochs_trained": int(state["epoch"]),
        "training_log_last": log[-1] if log else None,
        "validation_cases": len(rows),
        "embedding_cosine_mean": round(float(table[:, 0].mean()), 4),
        "oracle_dice_teacher": round(float(table[:, 1].mean()), 4),
        "oracle_dice_student": round(float(table[:, 2].mean()), 4),
        "encoder_median_ms": {k: round(1000 * float(np.median(v[2:])), 1)
                              for k, v in seconds.items()},  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True, help="the validation case ids")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--evaluate", action="store_true")
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.evaluate:
        train(args)
        return
    record = evaluate(args)
    print(json.dumps(record, indent=1))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
