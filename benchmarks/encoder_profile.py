"""Where LiteMedSAM's image encoder spends its time on OpenVINO, and how much work it is.

    python benchmarks/encoder_profile.py --models src/automedseg/models/polyp --threads 2 \\
        --repeats 20 --out benchmarks/records/encoder_profile.json

Two measurements of one 256×256 input: the multiply-accumulates of each part of the TinyViT
encoder (PyTorch's ``FlopCounterMode`` on the architecture; weights do not change the count),
and the shipped OpenVINO encoder of a model set compiled exactly as ``segment`` compiles it
(``runtime.openvino.latency_config``, the card's precision) plus OpenVINO's per-layer counters:
the median milliseconds of ``--repeats`` inferences without counters, then the counters' time
per layer type (an inference with counters on, summed by type). Their ratio is the rate the
CPU sustains (GMAC/s); with the decoder and prompter times of ``pipeline_speed.py`` it bounds
how fast the pipeline can get on this encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from automedseg.checkpoints import read_card
from automedseg.runtime.openvino import core, inference_precision, latency_config
from automedseg.segment.litemedsam import IMAGE_SIZE, build_litemedsam

PARTS = ("patch_embed", "layers.0", "layers.1", "layers.2", "layers.3", "neck")


def encoder_gmacs() -> dict[str, float]:
    """Multiply-accumulates (×1e9) of each part of the encoder for one image."""
    encoder = build_litemedsam().image_encoder.eval()
    counter = FlopCounterMode(display=False, depth=None)
    with torch.inference_mode(), counter:
        encoder(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    flops = counter.get_flop_counts()
    per_part = {part: sum(flops.get(f"TinyViT.{part}", {}).values()) / 2e9 for part in PARTS}
    per_part["total"] = sum(flops["Global"].values()) / 2e9
    return {k: round(v, 3) for k, v in per_part.items()}


def openvino_times(models: Path, threads: int, repeats: int) -> dict:
    """Median ms per inference of the model set's encoder, and the counters' ms per layer type."""
    card_path = models / "openvino" / "image_encoder.json"
    card = read_card(card_path)
    requested = "f32" if card.get("inference_precision") == "f32" else "auto"
    precision = inference_precision(requested)
    xml, weights = card_path.parent / card["weights_file"], card_path.parent / card["bin_file"]
    image = np.random.default_rng(0).random((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    result: dict = {"precision": precision, "recipe": card.get("recipe")}
    for counters in (False, True):
        config = latency_config(precision, threads) | {"PERF_COUNT": counters}
        request = core().compile_model(core().read_model(xml, weights), "CPU", config)
        request = request.create_infer_request()
        seconds = []
        for _ in range(repeats + 2):  # two warm-up runs
            clock = time.perf_counter()
            request.infer([image])
            seconds.append(time.perf_counter() - clock)
        if not counters:
            result["median_ms"] = round(1000 * float(np.median(seconds[2:])), 1)
            continue
        by_type: Counter = Counter()
        for layer in request.profiling_info:
            by_type[f"{layer.node_type} ({layer.exec_type})"] += layer.real_time.total_seconds()
        result["counted_ms"] = round(1000 * sum(by_type.values()), 1)
        result["ms_by_layer_type"] = {k: round(1000 * v, 2) for k, v in by_type.most_common(12)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("src/automedseg/models/polyp"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gmacs = encoder_gmacs()
    times = openvino_times(args.models, args.threads, args.repeats)
    record = {
        "command": "python benchmarks/encoder_profile.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "input": f"1x3x{IMAGE_SIZE}x{IMAGE_SIZE}",
        "gmacs": gmacs,
        "openvino": times,
        "sustained_gmacs_per_s": round(gmacs["total"] / (times["median_ms"] / 1000), 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
