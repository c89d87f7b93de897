"""What can honestly be measured of FastSAM and MobileSAM on this CPU without their weights.

    python benchmarks/baselines.py --threads 2 --repeats 5 --rounds 2 --out runs/bench_baselines

Their pretrained weights cannot be downloaded here, so accuracy is not measurable. Their
architectures can be built (randomly initialised) from the ``ultralytics`` package (optional:
``pip install --no-deps ultralytics==8.4.190 ultralytics-thop==2.2.3 psutil``): FastSAM-s and
FastSAM-x are YOLOv8s-seg and YOLOv8x-seg at 1024×1024, MobileSAM is TinyViT-5M + SAM's prompt
encoder and mask decoder at 1024. For each model and for LiteMedSAM (256, the baseline of the
ratio, measured in the same run), a fresh process builds the model, runs one warm-up image and
``--repeats`` timed ones (a 1024×1024 RGB image; SAM-style models with one box), and reports
its parameters, float32 size, median ms per image and peak RSS (VmHWM). The models take turns
for ``--rounds`` rounds; the median is over all timed runs. Writes OUT/baselines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODELS = ("litemedsam", "mobilesam", "fastsam-s", "fastsam-x")
CHILD = r"""
import json, re, sys, time
import numpy as np, torch
name, repeats = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
if name == "litemedsam":
    from automedseg.segment.litemedsam import build_litemedsam
    model, size = build_litemedsam().eval(), 256
elif name == "mobilesam":
    from ultralytics.models.sam.build import build_mobile_sam
    model, size = build_mobile_sam(checkpoint=None).eval(), 1024
else:
    from ultralytics.nn.tasks import SegmentationModel
    scale = {"fastsam-s": "s", "fastsam-x": "x"}[name]
    model, size = SegmentationModel(f"yolov8{scale}-seg.yaml", verbose=False).eval(), 1024
image = torch.rand(1, 3, size, size)
box = torch.tensor([[0.3 * size, 0.3 * size, 0.6 * size, 0.6 * size]])

def once():
    with torch.inference_mode():
        if name == "litemedsam":
            model.decode(model.image_encoder(image), box)
        elif name == "mobilesam":
            embedding = model.image_encoder(image)
            sparse, dense = model.prompt_encoder(points=None, boxes=box, masks=None)
            model.mask_decoder(image_embeddings=embedding,
                               image_pe=model.prompt_encoder.get_dense_pe(),
                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                               multimask_output=False)
        else:
            model(image)

once()
times = []
for _ in range(repeats):
    start = time.perf_counter(); once(); times.append((time.perf_counter() - start) * 1000)
params = sum(p.numel() for p in model.parameters())
mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
rss = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024
print("RESULT " + json.dumps({"ms": times, "params": params, "mb": mb, "rss": rss, "size": size}))
"""


def run(name: str, repeats: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "YOLO_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, name, str(repeats)], env=env,
                          capture_output=True, text=True)  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"{name} failed: {done.stderr[-2000:]}")
    return json.loads(line[len("RESULT ") :])


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for name in MODELS:
            got = run(name, args.repeats, args.threads)
            entry = results.setdefault(name, {**got, "ms": [], "rss": 0.0})
            entry["ms"] += got["ms"]
            entry["rss"] = max(entry["rss"], got["rss"])
            print(f"round {round_ + 1} {name}: {np.median(got['ms']):.0f} ms", file=sys.stderr)
    base = float(np.median(results["litemedsam"]["ms"]))
    rows = {}
    for name, r in results.items():
        median = float(np.median(r["ms"]))
        rows[name] = {
            "input": f"{r['size']}x{r['size']}",
            "parameters_m": round(r["params"] / 1e6, 2),
            "float32_mb": round(r["mb"], 1),
            "ms_per_image_median": round(median, 1),
            "times_litemedsam": round(median / base, 2),
            "peak_rss_mb": round(r["rss"], 1),
            "timed_runs": len(r["ms"]),
            "accuracy": "measured" if name == "litemedsam" else "not measurable: no weights",
        }
    report = {"threads": args.threads, "repeats": args.repeats, "rounds": args.rounds,
              "models": rows, "command": " ".join(sys.argv),
              "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    (out / "baselines.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", required=True)
    main(parser.parse_args())
