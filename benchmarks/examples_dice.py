"""Dice of the shipped tasks on the shipped examples, through the command line.

    python benchmarks/examples_dice.py --out runs/examples_dice.json [--runtime torch]

Runs ``automedseg segment --task polyp`` on examples/kvasir_seg and ``--task hippocampus`` on
examples/msd_hippocampus (automatic prompts) and with each case's oracle box for the 2D
images, then scores every output against the example's manual mask (Dice per label, all
non-zero labels merged for the polyps). Used to check that a refactor changes no result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from automedseg.evaluate.metrics import dice

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def segment(inputs: list[Path], out: Path, *options: str) -> None:
    command = [sys.executable, "-m", "automedseg.cli", "segment", *map(str, inputs),
               "--out", str(out), "--no-progress", *options]  # fmt: skip
    subprocess.run(command, check=True)


def oracle_box(mask: np.ndarray) -> list[str]:
    ys, xs = np.nonzero(mask)
    return [str(v) for v in (xs.min(), ys.min(), xs.max(), ys.max())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runtime", help="passed to automedseg segment (default: the task's)")
    args = parser.parse_args()
    extra = [] if args.runtime is None else ["--runtime", args.runtime]
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        polyps = sorted((EXAMPLES / "kvasir_seg" / "images").glob("*.jpg"))
        segment(polyps, Path(tmp) / "polyp", "--task", "polyp", *extra)
        for image in polyps:
            truth = np.asarray(Image.open(image.parent.parent / "masks" / image.name).convert("L"))
            truth = truth > 127
            found = np.asarray(Image.open(Path(tmp) / "polyp" / f"{image.stem}_mask.png")) > 0
            results[f"polyp auto {image.stem}"] = round(dice(found, truth), 4)
            out = Path(tmp) / f"oracle_{image.stem}"
            segment([image], out, "--box", *oracle_box(truth), *extra)
            found = np.asarray(Image.open(out / f"{image.stem}_mask.png")) > 0
            results[f"polyp one-box {image.stem}"] = round(dice(found, truth), 4)
        volume = EXAMPLES / "msd_hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
        segment([volume], Path(tmp) / "hippo", "--task", "hippocampus", *extra)
        labels = EXAMPLES / "msd_hippocampus" / "labelsTr" / volume.name
        truth = np.asarray(nib.load(labels).dataobj)
        found = np.asarray(nib.load(Path(tmp) / "hippo" / "hippocampus_001_seg.nii.gz").dataobj)
        for v in (1, 2):
            results[f"hippocampus auto label {v}"] = round(dice(found == v, truth == v), 4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
