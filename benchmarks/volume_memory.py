"""Peak memory of segmenting a large CT-sized volume (512 x 512 x 300) from one box.

    python benchmarks/volume_memory.py --models src/automedseg/models/polyp --out runs/bench_volume
    python benchmarks/volume_memory.py --models src/automedseg/models/polyp --threads 2 \
        --runtimes openvino --out benchmarks/records/volume_memory

Writes a synthetic int16 NIfTI (noise plus a bright ellipsoid spanning about 60 slices), then
runs ``automedseg segment VOLUME --box ... --slice MIDDLE`` in a fresh process per runtime
(``--runtimes``, default openvino, the shipped sets' runtime; int8 and openvino need
``--models``) and reports the child's peak RSS (VmHWM), wall time, and the Dice of the
propagated mask against the ellipsoid. The volume and masks go to a temporary folder;
writes OUT/volume_memory.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from pipeline_speed import segment_process

from automedseg import io

SHAPE_XYZ = (512, 512, 300)


def make_volume(path: Path) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The volume (z, y, x order for the mask) and the middle slice's box (x0, y0, x1, y1)."""
    rng = np.random.default_rng(0)
    x, y, z = np.ogrid[: SHAPE_XYZ[0], : SHAPE_XYZ[1], : SHAPE_XYZ[2]]
    inside = ((x - 250) / 60.0) ** 2 + ((y - 270) / 45.0) ** 2 + ((z - 150) / 30.0) ** 2 <= 1
    data = rng.normal(40, 15, SHAPE_XYZ).astype(np.int16)
    data[inside] += 200
    affine = np.diag([0.7, 0.7, 1.5, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    mask_zyx = np.transpose(inside, (2, 1, 0))
    ys, xs = np.nonzero(mask_zyx[150])
    return mask_zyx, (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()))


def run(volume: Path, box, out: Path, runtime: str, models: Path | None, threads: int) -> dict:
    args = ["segment", str(volume), "--out", str(out), "--box", *map(str, box), "--slice", "150",
            "--no-progress", "--runtime", runtime]  # fmt: skip
    if models is not None and runtime != "torch":
        args += ["--models", str(models)]
    clock = time.perf_counter()
    row = segment_process(args, threads)
    if row["exit_code"] != 0:
        raise SystemExit(f"{runtime} failed with exit code {row['exit_code']}")
    return {"peak_rss_mb": row["peak_rss_mb"], "seconds": round(time.perf_counter() - clock, 1)}


def main(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    runtimes = args.runtimes.split(",")
    if set(runtimes) - {"torch"} and not args.models:
        raise SystemExit("--runtimes other than torch need --models")
    with tempfile.TemporaryDirectory() as temp:
        volume = Path(temp) / "volume_512x512x300.nii.gz"
        truth, box = make_volume(volume)
        for runtime in runtimes:
            result = Path(temp) / runtime
            rows[runtime] = run(volume, box, result, runtime, args.models, args.threads)
            mask = np.asarray(nib.load(str(result / "volume_512x512x300_seg.nii.gz")).dataobj)
            mask = np.transpose(mask > 0, (2, 1, 0))
            dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
            rows[runtime]["dice"] = round(float(dice), 4)
            print(runtime, rows[runtime], file=sys.stderr)
    report = {"shape_xyz": SHAPE_XYZ, "dtype": "int16", "threads": args.threads, "runtimes": rows,
              "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    io.write_json(out / "volume_memory.json", report)
    print(report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="an `automedseg quantize` output folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runtimes", default="openvino",
                        help="comma-separated: torch,int8,openvino")  # fmt: skip
    parser.add_argument("--out", required=True)
    main(parser.parse_args())
