"""A distilled encoder next to LiteMedSAM's: embedding cosine, oracle-box Dice, speed.

    automedseg train encoder --data ../shared/datasets/kvasir_seg --out runs/distil_polyp \
        --task polyp
    python benchmarks/encoder_distillation.py --data ../shared/datasets/kvasir_seg \
        --student runs/distil_polyp/encoder.json --threads 2 \
        --record benchmarks/records/encoder_distillation.json

The student (``train.encoder``: ImageNet MobileNetV2 + FPN + a 256-channel head, trained on
the training cases to reproduce LiteMedSAM's embedding) is measured on the validation cases
it never saw (the card's split, rebuilt: ``val_cases.txt`` beside the card; each plane with
foreground, at most ``--per-case`` evenly spaced ones of a volume or video): the cosine of its
embedding to the teacher's, the Dice with the manual mask of LiteMedSAM's mask from each
connected component's box (oracle prompts) on either embedding, and the median ms of both
encoders on OpenVINO (bfloat16 where the CPU has it), timed in turn.
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

from automedseg.data.datasets import DataSet, find_cases
from automedseg.data.planes import Plane, iter_planes
from automedseg.evaluate.metrics import dice
from automedseg.prompt.oracle import oracle_boxes
from automedseg.runtime.openvino import core, inference_precision, latency_config
from automedseg.runtime.transforms import postprocess, preprocess
from automedseg.segment.litemedsam import load_litemedsam
from automedseg.train.encoder import load_student, teacher_encoder


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))


@torch.inference_mode()
def oracle_dice(model, embedding: np.ndarray, label_map: np.ndarray, resized, scale) -> float:
    """Dice with the manual mask of the union of LiteMedSAM's masks from the oracle boxes."""
    boxes = oracle_boxes(label_map)
    logits = model.decode(torch.from_numpy(embedding), torch.from_numpy(boxes.xyxy * scale))
    masks = postprocess(logits.numpy(), resized, label_map.shape)
    return dice(masks.any(axis=0), label_map > 0)


def validation_planes(data: DataSet, case_ids: list[str], per_case: int) -> list[Plane]:
    """The planes with foreground of each case (a 2D image is one), at most ``per_case`` of a
    volume or video, evenly spaced."""
    chosen: list[Plane] = []
    for case_id in case_ids:
        planes = list(iter_planes(data, [case_id]))
        if len(planes) > per_case:
            picks = np.linspace(0, len(planes) - 1, per_case).round().astype(int)
            planes = [planes[i] for i in picks]
        chosen += planes
    return chosen


def evaluate(args: argparse.Namespace) -> dict:
    import openvino as ov

    torch.set_num_threads(args.threads)
    student, card = load_student(args.student)
    teacher, model = teacher_encoder(args.threads), load_litemedsam().eval()
    config = latency_config(inference_precision("auto"), args.threads)
    example = torch.zeros(1, 3, 256, 256)
    fast = core().compile_model(ov.convert_model(student, example_input=example), "CPU", config)
    held_out = set((args.student.parent / "val_cases.txt").read_text().split())
    rows, cases = [], set()
    for plane in validation_planes(find_cases(args.data), sorted(held_out), args.per_case):
        x, resized = preprocess(plane.image)
        scale = 256 / max(plane.labels.shape)
        big, small = teacher(x)[0], fast(x)[0]
        rows.append((cosine(big, small), oracle_dice(model, big, plane.labels, resized, scale),
                     oracle_dice(model, small, plane.labels, resized, scale)))  # fmt: skip
        cases.add(plane.case_id)
    seconds: dict[str, list[float]] = {"teacher": [], "student": []}
    for _ in range(args.repeats + 2):  # two warm-up rounds, on the last plane's input
        for name, compiled in (("teacher", teacher), ("student", fast)):
            clock = time.perf_counter()
            compiled(x)
            seconds[name].append(time.perf_counter() - clock)
    table = np.asarray(rows)
    return {
        "command": "python benchmarks/encoder_distillation.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                   if v is not None),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "student": {
            "card": str(args.student),
            "sha256": card["sha256"],
            "architecture": card["architecture"],
            "training": card["training"],
        },
        "validation_cases": len(cases),
        "planes": len(rows),
        "embedding_cosine_mean": round(float(table[:, 0].mean()), 4),
        "oracle_dice_teacher": round(float(table[:, 1].mean()), 4),
        "oracle_dice_student": round(float(table[:, 2].mean()), 4),
        "encoder_median_ms": {k: round(1000 * float(np.median(v[2:])), 1)
                              for k, v in seconds.items()},  # fmt: skip
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--student", type=Path, required=True, help="encoder.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--per-case", type=int, default=20,
                        help="planes of a volume or video at most (evenly spaced; default 20)")
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    record = evaluate(args)
    print(json.dumps(record, indent=1))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
