"""Milliseconds per image of a backbone prompter on each runtime, interleaved, medians.

    python benchmarks/prompter_speed.py --card src/automedseg/models/polyp/prompter.json \
        --images examples/kvasir_seg/images --threads 2 --repeats 20 \
        --out benchmarks/records/prompter_speed_polyp.json

Each round runs every runtime once on every image (PyTorch float32; the float32 ONNX export
on ONNX Runtime; the same converted to OpenVINO, in bfloat16 when the CPU has it and in
float32), so the runtimes share the machine's state; the time is ``prompter.find`` on an
image already in [0, 1]: resizing, normalisation, the network and the boxes. The first
round is a warm-up and not counted. Also written: the models' sizes on disk.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from automedseg import io
from automedseg.checkpoints import read_card
from automedseg.deploy.export import export_backbone_prompter
from automedseg.deploy.openvino import convert
from automedseg.intensity import to_unit_range
from automedseg.prompt import load_prompter
from automedseg.runtime.onnx import BACKBONE, load_onnx_prompter, prompter_of
from automedseg.runtime.openvino import cpu_has_bf16, load_openvino_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = [to_unit_range(io.read_image(p)) for p in sorted(args.images.iterdir())
              if p.suffix.lower() in (".jpg", ".jpeg", ".png")]  # fmt: skip
    pytorch = load_prompter(args.card)
    with tempfile.TemporaryDirectory() as folder:
        onnx_card = export_backbone_prompter(pytorch, Path(folder) / "prompter",
                                             read_card(args.card)["sha256"]).card_path  # fmt: skip
        ov_card = convert(onnx_card, Path(folder) / "ov" / "prompter")
        runtimes = {
            "torch float32": pytorch,
            "onnxruntime float32": load_onnx_prompter(onnx_card, args.threads),
            "openvino float32": prompter_of(load_openvino_model(ov_card, BACKBONE, args.threads,
                                                                "f32")),  # fmt: skip
        }
        if cpu_has_bf16():
            runtimes["openvino bfloat16"] = prompter_of(
                load_openvino_model(ov_card, BACKBONE, args.threads, "bf16")
            )
        sizes = {"onnx_mb": round(Path(onnx_card).with_suffix(".onnx").stat().st_size / 1e6, 2),
                 "openvino_mb": round(sum(Path(ov_card).with_suffix(s).stat().st_size
                                          for s in (".xml", ".bin")) / 1e6, 2)}  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in runtimes}
        for round_ in range(args.repeats + 1):
            for name, prompter in runtimes.items():
                for image in images:
                    start = time.perf_counter()
                    prompter.find(image)
                    if round_:
                        times[name].append((time.perf_counter() - start) * 1000)
    record = {
        "card": str(args.card),
        "prompter_sha256": read_card(args.card)["sha256"],
        "size": read_card(args.card)["size"],
        "images": len(images),
        "repeats": args.repeats,
        "threads": args.threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_bf16": cpu_has_bf16(),
        "median_ms": {k: round(float(np.median(v)), 2) for k, v in times.items()},
        "p90_ms": {k: round(float(np.percentile(v, 90)), 2) for k, v in times.items()},
        "torch_safetensors_mb": round((args.card.parent / read_card(args.card)["weights_file"])
                                      .stat().st_size / 1e6, 2),  # fmt: skip
        **sizes,
    }
    io.write_json(args.out, record)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
