"""How fast could a pruned LiteMedSAM encoder be? Transformer blocks dropped, timed on OpenVINO.

    python benchmarks/encoder_pruning.py --images ../shared/datasets/kvasir_seg/images \\
        --threads 2 --repeats 20 --out benchmarks/records/encoder_pruning.json

A cheaper encoder is the only way left to a faster pipeline (``encoder_profile.py``). The
cheapest student to distil is the teacher itself with blocks removed (initialised from the
kept ones). Before any such training, this measures what it could gain: for each variant (the
transformer blocks kept per TinyViT stage), its multiply-accumulates, the median ms of one
inference of the float32 model converted to OpenVINO and compiled as ``segment`` compiles the
encoder (``latency_config``, bfloat16 where the CPU has it), every variant timed in turn in the
same rounds, and the cosine of its embedding to the unpruned one on the first 8 images of
``--images`` before any fine-tuning (how much a distillation would have to recover).
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
from torch.utils.flop_counter import FlopCounterMode

from automedseg.intensity import to_unit_range
from automedseg.io import read_image
from automedseg.runtime.openvino import core, inference_precision, latency_config
from automedseg.runtime.transforms import preprocess
from automedseg.segment.litemedsam import load_litemedsam
from automedseg.train.pruned import PrunedEncoder

# blocks kept per stage (TinyViT's transformer stages 1, 2, 3 have 2, 6 and 2 blocks)
VARIANTS: dict[str, dict[int, list[int]]] = {
    "unpruned": {},
    "stage 2: 3 of 6": {2: [0, 2, 4]},
    "stage 3: 1 of 2": {3: [0]},
    "stage 2: 3 of 6, stage 3: 1 of 2": {2: [0, 2, 4], 3: [0]},
    "stages 1, 3: 1 of 2, stage 2: 3 of 6": {1: [0], 2: [0, 2, 4], 3: [0]},
    "stage 1: 1 of 2, stage 2: 2 of 6, stage 3: none": {1: [0], 2: [0, 3], 3: []},
}


def gmacs(encoder: torch.nn.Module, example: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        encoder(example)
    return round(counter.get_total_flops() / 2e9, 2)


def cosines(reference: list[np.ndarray], outputs: list[np.ndarray]) -> list[float]:
    return [float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))
            for a, b in zip(reference, outputs, strict=True)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import openvino as ov

    encoder = load_litemedsam().image_encoder.eval()
    files = sorted(p for p in args.images.iterdir() if p.is_file())[:8]
    inputs = [preprocess(to_unit_range(read_image(f)))[0] for f in files]
    precision = inference_precision("auto")
    with torch.inference_mode():
        reference = [encoder(torch.from_numpy(x)).numpy() for x in inputs]
    rows, compiled = {}, {}
    for name, keep in VARIANTS.items():
        variant = PrunedEncoder(encoder, keep)  # a copy with only the kept blocks
        with torch.inference_mode():
            found = cosines(reference, [variant(torch.from_numpy(x)).numpy() for x in inputs])
        example = torch.from_numpy(inputs[0])
        converted = ov.convert_model(variant, example_input=example)
        compiled[name] = core().compile_model(
            converted, "CPU", latency_config(precision, args.threads)
        ).create_infer_request()
        rows[name] = {
            "blocks_kept": {str(k): v for k, v in keep.items()},
            "gmacs": gmacs(variant, example),
            "cosine_min": round(min(found), 3),
            "cosine_mean": round(float(np.mean(found)), 3),
        }
        print(name, rows[name], flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in compiled}
    for repeat in range(args.repeats + 2):  # two warm-up rounds
        for name, request in compiled.items():
            clock = time.perf_counter()
            request.infer([inputs[repeat % len(inputs)]])
            seconds[name].append(time.perf_counter() - clock)
    for name, times in seconds.items():
        rows[name]["median_ms"] = round(1000 * float(np.median(times[2:])), 1)
    record = {
        "command": "python benchmarks/encoder_pruning.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "precision": precision,
        "variants": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
