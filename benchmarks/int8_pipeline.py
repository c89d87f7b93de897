"""FP32 PyTorch against the ONNX Runtime models (float32 and INT8), side by side, interleaved.

    python benchmarks/int8_pipeline.py --task polyp --models runs/quant_polyp \\
        --data ../shared/datasets/kvasir_seg --split runs/head_polyp5/val_cases.txt \\
        --images 20 --repeats 3 --threads 2 --out runs/bench_int8

Every image is segmented automatically (the task's head prompter) by each runtime in turn,
``--repeats`` times, the order rotating so that no runtime always runs first. Reported per
runtime: the median per-stage and end-to-end milliseconds per image (reading the file not
included), the end-to-end speed-up against PyTorch (ratio of medians), the models' MB on disk,
and the peak RSS of a fresh ``automedseg segment`` process on one image with that runtime
(the child's VmHWM; the ONNX runtimes must not import torch, which is checked).
Writes OUT/int8_pipeline.json and OUT/int8_pipeline.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from automedseg import io
from automedseg.data.datasets import find_cases
from automedseg.intensity import to_unit_range
from automedseg.pipeline import segment_plane
from automedseg.tasks import load_models

STAGES = ("encoder", "prompter", "decoder")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
CHILD = """
import re, sys
from automedseg.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print("RESULT", code, "torch" in sys.modules, re.search(r"VmHWM:\\s+(\\d+)", status).group(1))
"""


def peak_rss(image: Path, task: str, runtime: str, models: Path, threads: int) -> dict:
    """Peak RSS (MB) and whether torch was imported, for one `automedseg segment` process."""
    with tempfile.TemporaryDirectory() as out:
        args = ["segment", str(image), "--out", out, "--task", task, "--runtime", runtime,
                "--no-progress"]  # fmt: skip
        if runtime != "torch":
            args += ["--model-set", str(models)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env
        )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise SystemExit(f"segment with --runtime {runtime} failed:\n{done.stderr[-2000:]}")
    _, code, torch_loaded, kb = line.split()
    return {"exit_code": int(code), "torch_imported": torch_loaded == "True",
            "peak_rss_mb": round(int(kb) / 1024, 1)}  # fmt: skip


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    runtimes, sizes = {}, {}
    for name in ("torch", "onnx", "int8"):
        models = load_models(
            args.task, runtime=name, model_set=args.models, threads=args.threads
        )
        runtimes[name] = (models.segmenter, models.prompter)
        sizes[name] = sum(models.sizes_mb.values())
    cases = find_cases(args.data, args.split).cases[: args.images]
    planes = [to_unit_range(io.read_image(c.images[0])) for c in cases]
    names = list(runtimes)
    seconds: dict[str, dict[str, list[float]]] = {n: {s: [] for s in (*STAGES, "total")}
                                                  for n in names}  # fmt: skip
    for repeat in range(args.repeats):
        for i, plane in enumerate(planes):
            shift = (i + repeat) % len(names)
            for name in names[shift:] + names[:shift]:
                predictor, prompter = runtimes[name]
                times: dict[str, float] = {}
                clock = time.perf_counter()
                segment_plane(plane, prompter, predictor, times)
                seconds[name]["total"].append(time.perf_counter() - clock)
                for stage in STAGES:
                    seconds[name][stage].append(times.get(stage, 0.0))
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    medians = {n: {s: round(float(np.median(v)) * 1000, 1) for s, v in st.items()}
               for n, st in seconds.items()}  # fmt: skip
    rows = {}
    for name in names:
        rows[name] = {
            **{f"{s}_ms": medians[name][s] for s in (*STAGES, "total")},
            "speedup_vs_torch": round(medians["torch"]["total"] / medians[name]["total"], 2),
            "models_mb": round(sizes[name], 1),
            **peak_rss(cases[0].images[0], args.task, name, args.models, args.threads),
        }
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "images": len(planes),
        "repeats": args.repeats,
        "runtimes": rows,
    }
    out = Path(args.out)
    io.write_json(out / "int8_pipeline.json", result)
    lines = [
        f"{len(planes)} images x {args.repeats} repeats, {args.threads} threads, medians per image",
        "",
        "| runtime | encoder ms | prompter ms | decoder ms | total ms | speed-up | MB | "
        "peak RSS MB | torch imported |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['encoder_ms']} | {row['prompter_ms']} | {row['decoder_ms']} | "
            f"{row['total_ms']} | {row['speedup_vs_torch']}x | {row['models_mb']} | "
            f"{row['peak_rss_mb']} | {row['torch_imported']} |"
        )
    io.write_text(out / "int8_pipeline.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="polyp")
    parser.add_argument("--models", type=Path, required=True, help="`automedseg quantize` output")
    parser.add_argument("--data", required=True, help="data set folder (a layout evaluate reads)")
    parser.add_argument("--split", help="case list to draw the images from")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    main(parser.parse_args())
