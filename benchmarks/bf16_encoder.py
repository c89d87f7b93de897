"""LiteMedSAM's image encoder in PyTorch: float32 against bfloat16 autocast, interleaved.

    python benchmarks/bf16_encoder.py --threads 2 --repeats 5

The bf16/AMX path the INT8 issue asks to try: median seconds per image of each, their ratio,
and the embedding's cosine similarity to float32, on the shipped Kvasir-SEG examples.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from automedseg import io
from automedseg.intensity import to_unit_range
from automedseg.segment.litemedsam import load_litemedsam, preprocess

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "kvasir_seg" / "images"


def main(threads: int, repeats: int) -> None:
    torch.set_num_threads(threads)
    encoder = load_litemedsam().image_encoder.eval()
    images = [preprocess(to_unit_range(io.read_image(p)))[0] for p in sorted(EXAMPLES.glob("*"))]
    seconds: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    cosines = []
    with torch.inference_mode():
        for _ in range(repeats):
            for image in images:
                outputs = {}
                for name in seconds:
                    clock = time.perf_counter()
                    with torch.autocast("cpu", torch.bfloat16, enabled=name == "bfloat16"):
                        outputs[name] = encoder(image).float()
                    seconds[name].append(time.perf_counter() - clock)
                a, b = outputs["float32"].ravel(), outputs["bfloat16"].ravel()
                cosines.append(float(a @ b / a.norm() / b.norm()))
    f32, bf16 = (float(np.median(seconds[k][len(images) :])) for k in seconds)  # skip warm-up
    print(
        f"{threads} threads, {len(images)} images x {repeats}: float32 {f32:.3f} s, "
        f"bfloat16 {bf16:.3f} s (x{f32 / bf16:.2f}), embedding cosine >= {min(cosines):.4f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    main(args.threads, args.repeats)
