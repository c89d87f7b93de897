"""Peak memory of segmenting one large volume: a fresh `automedseg segment` process per runtime.

    BRATS=../shared/datasets/brats2013_in_brats2015_deepmedic6/imagesTr
    python benchmarks/volume_memory.py --task brain-tumour \\
        --source $BRATS/brats_2013_pat0001_1_0000.nii.gz \\
        --shape 512 512 300 --runtimes torch openvino --threads 2 \\
        --out benchmarks/records/volume_memory.json

The source volume is resampled (linear) to ``--shape`` voxels and stored as int16 NIfTI (the
spacing scaled so the field of view stays), a stand-in for a large CT/MR series of real
content. Each runtime then segments it automatically in a fresh process (``--task``, the
default settings, ``--threads``); the record gives the process's peak RSS (VmHWM), its exit
code and wall time.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from pipeline_speed import peak_rss
from scipy import ndimage

from automedseg import io


def large_volume(source: Path, shape: tuple[int, int, int], out: Path) -> Path:
    """``source`` resampled to ``shape`` voxels, int16, spacing scaled to keep the extent."""
    image = nib.load(source)
    data = np.asarray(image.dataobj, dtype=np.float32)
    factors = [s / d for s, d in zip(shape, data.shape[:3], strict=True)]
    resized = ndimage.zoom(data, factors, order=1)
    affine = image.affine.copy()
    affine[:3, :3] = affine[:3, :3] / np.asarray(factors)[None, :]
    path = out / "large.nii.gz"
    nib.save(nib.Nifti1Image(np.clip(resized, -32768, 32767).astype(np.int16), affine), path)
    return path


def main(args: argparse.Namespace) -> None:
    shape = tuple(args.shape)
    rows = {}
    with tempfile.TemporaryDirectory() as temp:
        volume = large_volume(Path(args.source), shape, Path(temp))
        print(f"{volume.name}: {shape} int16, {volume.stat().st_size / 1e6:.1f} MB on disk",
              file=sys.stderr)  # fmt: skip
        for name in args.runtimes:
            clock = time.perf_counter()
            row = peak_rss(volume, args.task, name, args.threads)
            row["seconds"] = round(time.perf_counter() - clock, 1)
            rows[name] = row
            print(f"{name}: {row}", file=sys.stderr)
    record = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "task": args.task,
        "source": Path(args.source).name,
        "shape": list(shape),
        "dtype": "int16",
        "volume_mb": round(int(np.prod(shape)) * 2 / 1e6, 1),
        "runtimes": rows,
    }
    io.write_json(Path(args.out), record)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--source", required=True, help="a NIfTI volume of the task's kind")
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    parser.add_argument("--runtimes", nargs="+", default=["torch", "openvino"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    main(parser.parse_args())
