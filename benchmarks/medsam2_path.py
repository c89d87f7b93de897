"""Speed and memory of the MedSAM2 / SAM2.1-tiny path on synthetic data.

Runs ``automedseg.segment.medsam2.track_boxes`` (one box on the middle slice, propagated
forward and backward with SAM2's memory) on a synthetic grayscale volume and a synthetic RGB
video, R times each, and writes ``report.md`` and ``report.json`` with the median
milliseconds per slice for the image encoder and for the rest of the tracking (memory
attention, memory encoder, mask decoder), the peak resident memory, torch's thread count, the
image size and the date. Random weights unless ``--checkpoint`` is given (the speed does not
depend on the weights; the masks do).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/medsam2_path.py --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from automedseg.segment.medsam2 import build_sam2, track_boxes
from automedseg.types import Boxes


def synthetic_volume(slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Y, X) float32 in [0, 1]: an ellipsoid on noise, and its box on the middle slice."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:slices, :size, :size]
    inside = ((z - slices / 2) / (slices / 3)) ** 2 + ((y - size / 2) / (size / 5)) ** 2
    inside = inside + ((x - size / 2) / (size / 4)) ** 2 <= 1
    volume = (0.2 + 0.6 * inside + 0.05 * rng.standard_normal(inside.shape)).clip(0, 1)
    return volume.astype(np.float32), _box(inside[slices // 2])


def synthetic_video(frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W, 3) float32 in [0, 1]: a disc moving right on a textured background."""
    rng = np.random.default_rng(1)
    y, x = np.ogrid[:size, :size]
    background = rng.random((size, size, 3)).astype(np.float32) * 0.3
    video = np.repeat(background[None], frames, axis=0)
    masks = []
    for t in range(frames):
        centre = size / 4 + t * (size / 2) / max(1, frames - 1)
        disc = (y - size / 2) ** 2 + (x - centre) ** 2 <= (size / 8) ** 2
        video[t][disc] = (0.9, 0.5, 0.4)
        masks.append(disc)
    return video, _box(masks[frames // 2])


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], np.float32)


def run_case(model: torch.nn.Module, frames: np.ndarray, box: np.ndarray, repeats: int) -> dict:
    depth = len(frames)
    seeds = {depth // 2: Boxes(box, np.array([1]), 1.0)}
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        tracking = track_boxes(model, frames, seeds)
        wall = time.perf_counter() - start
        runs.append(
            {
                "total_ms_per_slice": 1000 * wall / depth,
                "encoder_ms_per_slice": 1000 * tracking.times["sam2_encoder"] / depth,
                "tracking_ms_per_slice": 1000 * tracking.times["sam2_tracking"] / depth,
                "encoder_ms_per_call": 1000
                * tracking.times["sam2_encoder"]
                / max(1, tracking.encoded_frames),
                "encoded_frames": tracking.encoded_frames,
                "foreground_slices": int(tracking.label_map.reshape(depth, -1).any(1).sum()),
            }
        )
    median = {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}
    return {"shape": list(frames.shape), "median": median, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=32, help="volume slices (default 32)")
    parser.add_argument("--frames", type=int, default=16, help="video frames (default 16)")
    parser.add_argument("--size", type=int, default=256, help="slice/frame side (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--image-size", type=int, choices=(512, 1024), default=512)
    parser.add_argument("--checkpoint", type=Path, help="MedSAM2/SAM2.1-tiny checkpoint")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_medsam2"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    start = time.perf_counter()
    model = build_sam2(args.image_size, args.checkpoint)
    build_s = time.perf_counter() - start
    cases = {
        "volume": run_case(model, *synthetic_volume(args.slices, args.size), args.repeats),
        "video": run_case(model, *synthetic_video(args.frames, args.size), args.repeats),
    }
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": "SAM2.1-tiny video predictor (sam2 package)",
        "weights": str(args.checkpoint) if args.checkpoint else "random (speed only)",
        "image_size": args.image_size,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sam2": version("sam2"),
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "repeats": args.repeats,
        "build_and_load_s": round(build_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cases": cases,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# MedSAM2 path: speed and memory",
        "",
        f"{report['date']} · {report['model']} · image size {report['image_size']} · "
        f"weights: {report['weights']} · torch {report['torch']}, sam2 {report['sam2']} · "
        f"{report['torch_threads']} torch thread(s) · {report['cpu']} · load average at end "
        f"{report['load_average_at_end']}",
        "",
        f"Medians of {report['repeats']} runs; one box on the middle slice, tracked forward "
        "and backward. Encoder = SAM2's image encoder; tracking = everything else (seeding, "
        "memory attention, memory encoder, mask decoder).",
        "",
        "| case | shape | total ms/slice | encoder ms/slice | tracking ms/slice | "
        "encoder ms/call | encoder calls |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, case in report["cases"].items():
        m = case["median"]
        lines.append(
            f"| {name} | {'×'.join(map(str, case['shape']))} | {m['total_ms_per_slice']} | "
            f"{m['encoder_ms_per_slice']} | {m['tracking_ms_per_slice']} | "
            f"{m['encoder_ms_per_call']} | {int(m['encoded_frames'])} |"
        )
    lines += [
        "",
        f"Model build + weight load: {report['build_and_load_s']} s. "
        f"Peak RSS (ru_maxrss): {report['peak_rss_mb']} MB.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
