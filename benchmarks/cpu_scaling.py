"""How well this machine runs two single-threaded jobs at once: the ceiling of any 2-worker
speed-up (``automedseg batch`` with 2 workers × 1 thread against 1 × 1).

    python benchmarks/cpu_scaling.py --out benchmarks/records/cpu_scaling.json

Two workloads, each a fresh Python process pinned to one thread (OMP/MKL/OpenBLAS variables
and ``torch.set_num_threads(1)``): ``matmul`` (float32 1024² matrix products through PyTorch)
and ``encoder`` (the polyp task's image encoder on its default runtime, one inference thread,
on one Kvasir-SEG image). Each workload runs alone and as two copies at once, alternated
``--repeats`` times; the record gives the median seconds of one job alone and of each copy
side by side, and the throughput ratio 2 × alone / side-by-side (2.0 = two independent cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
JOBS = {
    "matmul": """
import time, torch
torch.set_num_threads(1)
a = torch.randn(1024, 1024)
start = time.perf_counter()
for _ in range({n}):
    a = torch.tanh(a @ a)
print(time.perf_counter() - start)
""",
    "encoder": """
import time
import numpy as np
from automedseg import io
from automedseg.intensity import to_unit_range
from automedseg.tasks import load_models
models = load_models("polyp", threads=1)
plane = to_unit_range(io.read_image("{image}"))
models.segmenter.set_image(plane)
start = time.perf_counter()
for _ in range({n}):
    models.segmenter.set_image(plane)
print(time.perf_counter() - start)
""",
}


def launch(code: str) -> subprocess.Popen:
    env = {**os.environ, **ONE_THREAD}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip


def timed(code: str, copies: int) -> list[float]:
    """Seconds of the timed loop in each of ``copies`` processes started together."""
    processes = [launch(code) for _ in range(copies)]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in processes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image", type=Path,
                        default=Path("examples/kvasir_seg/images/cju0sr5ghl0nd08789uzf1raf.jpg"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = {"matmul": 60, "encoder": 20}
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "cpu": platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
              "repeats": args.repeats, "workloads": {}}  # fmt: skip
    for name, template in JOBS.items():
        code = template.format(n=sizes[name], image=args.image.resolve())
        alone, together = [], []
        for _ in range(args.repeats):  # alternated, so drift hits both alike
            alone += timed(code, 1)
            together += timed(code, 2)
        row = {"iterations": sizes[name], "alone_s": round(statistics.median(alone), 3),
               "side_by_side_s": round(statistics.median(together), 3)}  # fmt: skip
        row["throughput_ratio"] = round(2 * row["alone_s"] / row["side_by_side_s"], 2)
        record["workloads"][name] = row
        print(name, row, file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
