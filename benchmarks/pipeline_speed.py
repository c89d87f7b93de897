"""A task's pipeline on each runtime, side by side, interleaved: 2D images and volume planes.

    python benchmarks/pipeline_speed.py --task polyp --data ../shared/datasets/kvasir_seg \\
        --split runs/validation_polyp/val_cases.txt --images 20 --repeats 3 --threads 2 \\
        --runtimes torch int8 openvino --out benchmarks/records/speed_polyp
    python benchmarks/pipeline_speed.py --task hippocampus --volumes 3 --repeats 2 \\
        --data ../shared/datasets/msd_task04_hippocampus --split .../val_cases.txt ...

2D (default): every image is segmented automatically (prompter + encoder + decoder) by each
runtime in turn, ``--repeats`` times, the order rotating so that no runtime always runs first;
medians per stage and end to end per image (reading the file not included). With
``--volumes N``: N volumes (or videos) segmented whole (prompter on every plane, propagation),
interleaved the same way; the figure is milliseconds per plane. Also per runtime: the
speed-up against the first runtime (ratio of medians), the models' MB on disk, and the peak
RSS of a fresh ``automedseg segment`` process on one input (its VmHWM; whether torch was
imported). Threads are stated. ``--model-set int8=DIR`` runs a runtime from a quantize output
instead of the task's own set. Writes OUT/pipeline_speed.json and OUT/pipeline_speed.md.
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
from automedseg.cli import limit_malloc_arenas
from automedseg.data.datasets import find_cases, load_case
from automedseg.intensity import to_unit_range
from automedseg.pipeline import segment_image, segment_plane
from automedseg.tasks import load_models

STAGES = ("prompter", "encoder", "decoder")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
CHILD = """
import re, sys
from automedseg.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print("RESULT", code, "torch" in sys.modules, re.search(r"VmHWM:\\s+(\\d+)", status).group(1))
"""


def peak_rss(path: Path, task: str, runtime: str, threads: int, model_set: str | None) -> dict:
    """Peak RSS (MB) and whether torch was imported, for one `automedseg segment` process."""
    extra = ["--model-set", model_set] if model_set else []
    with tempfile.TemporaryDirectory() as out:
        return segment_process(["segment", str(path), "--out", out, "--task", task,
                                "--runtime", runtime, "--no-progress", "--threads", str(threads),
                                *extra], threads)  # fmt: skip


def segment_process(args: list[str], threads: int) -> dict:
    """Exit code, whether torch was imported and peak RSS (MB) of a fresh ``automedseg ARGS``
    process with ``threads`` OpenMP threads."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True,
                          env=env)  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT")), None)
    if line is None:
        raise SystemExit(f"automedseg {' '.join(args[:1])} failed:\n{done.stderr[-2000:]}")
    _, code, torch_loaded, kb = line.split()
    return {"exit_code": int(code), "torch_imported": torch_loaded == "True",
            "peak_rss_mb": round(int(kb) / 1024, 1)}  # fmt: skip


class Timed:
    """A segmenter or prompter whose calls add their seconds to ``times[stage]``."""

    def __init__(self, inner, times: dict[str, float], stage: str) -> None:
        self.inner, self.times, self.stage = inner, times, stage

    def __getattr__(self, name):
        value = getattr(self.inner, name)
        if name not in ("set_image", "encode_many", "predict", "find", "find_with_maps"):
            return value

        def timed(*args, **kwargs):
            clock = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                stage = "encoder" if name in ("set_image", "encode_many") else self.stage
                self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - clock

        return timed


def run_once(unit: np.ndarray, dims: int, models) -> tuple[float, dict[str, float], int]:
    """(seconds, seconds per stage, planes) of one automatic segmentation."""
    times: dict[str, float] = {}
    clock = time.perf_counter()
    if dims == 2:
        segment_plane(unit, models.prompter, models.segmenter, times)
        return time.perf_counter() - clock, times, 1
    from automedseg.types import Image

    image = Image(unit, 3)
    segmenter = Timed(models.segmenter, times, "decoder")
    prompter = Timed(models.prompter, times, "prompter")
    segment_image(image, prompter, segmenter)
    return time.perf_counter() - clock, times, unit.shape[0]


def main(args: argparse.Namespace) -> None:
    limit_malloc_arenas()  # as `automedseg` itself runs
    torch.set_num_threads(args.threads)
    loaded, sizes = {}, {}
    model_sets = dict(entry.split("=", 1) for entry in args.model_set)
    for name in args.runtimes:
        models = load_models(args.task, runtime=name, threads=args.threads,
                             model_set=model_sets.get(name))  # fmt: skip
        loaded[name] = models
        sizes[name] = sum(models.sizes_mb.values())
    dataset = find_cases(args.data, args.split)
    cases = [c for c in dataset.cases if c.problem is None][: args.volumes or args.images]
    # a video (a folder of frames) is read whole, as evaluate reads it; segment gets the folder
    inputs = [to_unit_range(load_case(c, 0, dataset.layout)[0]) for c in cases]
    sequences = dataset.layout == "sequences"
    paths = [c.images[0].parent if sequences else c.images[0] for c in cases]
    dims = 3 if args.volumes else 2
    names = list(loaded)
    per_unit: dict[str, dict[str, list[float]]] = {n: {s: [] for s in (*STAGES, "total")}
                                                   for n in names}  # fmt: skip
    for repeat in range(args.repeats):
        for i, unit in enumerate(inputs):
            shift = (i + repeat) % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, stages, planes = run_once(unit, dims, loaded[name])
                per_unit[name]["total"].append(seconds / planes)
                for stage in STAGES:
                    per_unit[name][stage].append(stages.get(stage, 0.0) / planes)
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    medians = {n: {s: round(float(np.median(v)) * 1000, 1) for s, v in st.items()}
               for n, st in per_unit.items()}  # fmt: skip
    first = names[0]
    rows = {}
    for name in names:
        rows[name] = {
            **{f"{s}_ms": medians[name][s] for s in (*STAGES, "total")},
            f"speedup_vs_{first}": round(medians[first]["total"] / medians[name]["total"], 2),
            "models_mb": round(sizes[name], 1),
            "segmenter": loaded[name].segmenter_name,
            **peak_rss(paths[0], args.task, name, args.threads, model_sets.get(name)),
        }
    unit = "plane" if dims == 3 else "image"
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "task": args.task,
        "unit": unit,
        "inputs": len(inputs),
        "planes": int(sum(u.shape[0] for u in inputs)) if dims == 3 else len(inputs),
        "repeats": args.repeats,
        "runtimes": rows,
    }
    out = Path(args.out)
    io.write_json(out / "pipeline_speed.json", result)
    lines = [
        f"{args.task}: {len(inputs)} {'volumes' if dims == 3 else 'images'} x {args.repeats} "
        f"repeats, {args.threads} threads, medians per {unit}",
        "",
        f"| runtime | prompter ms | encoder ms | decoder ms | total ms per {unit} | speed-up | "
        "MB | peak RSS MB (one input) | torch imported |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['prompter_ms']} | {row['encoder_ms']} | {row['decoder_ms']} | "
            f"{row['total_ms']} | {row[f'speedup_vs_{first}']}x | {row['models_mb']} | "
            f"{row['peak_rss_mb']} | {row['torch_imported']} |"
        )
    io.write_text(out / "pipeline_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="polyp")
    parser.add_argument("--data", required=True, help="data set folder (a layout evaluate reads)")
    parser.add_argument("--split", help="case list to draw the inputs from")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--volumes", type=int, default=0, help="time N volumes instead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtimes", nargs="+", default=["torch", "int8", "openvino"])
    parser.add_argument(
        "--model-set", action="append", default=[], metavar="RUNTIME=DIR",
        help="a quantize output to run RUNTIME from instead of the task's own (e.g. int8=DIR)",
    )  # fmt: skip
    parser.add_argument("--out", required=True)
    main(parser.parse_args())
