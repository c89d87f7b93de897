"""Ways to turn a map prompter's output into masks, scored on its tuning cases (never the
validation split): mean Dice per plane for each variant.

    python benchmarks/prompter_variants.py --card runs/bb_polyp/prompter.json \
        --data ../shared/datasets/kvasir_seg --threads 1 --out runs/variants_polyp.json

Variants: the map alone (probability > 0.5); LiteMedSAM prompted with the boxes of the map's
components at pixel thresholds 0.5 / 0.7 / 0.85 and box score thresholds 0.5 / 0.9 / 0.98;
the same masks intersected with the map (> 0.3) or joined with it (> 0.5); only the
best-scoring box. Single-class cards only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from automedseg import io
from automedseg.data.datasets import find_cases
from automedseg.data.planes import iter_planes
from automedseg.evaluate.metrics import dice
from automedseg.prompt import load_prompter
from automedseg.prompt.components import boxes_from_probabilities
from automedseg.tasks import load_models

PIXELS = (0.5, 0.7, 0.85)
SCORES = (0.5, 0.9, 0.98)


def variants(prompter, segmenter, plane) -> dict[str, float]:
    maps = prompter.maps(plane.image)
    probability = maps.at(plane.labels.shape)[0]
    truth = plane.labels > 0
    segmenter.set_image(plane.image)
    scores = {"map alone": dice(probability > 0.5, truth)}
    for pixel in PIXELS:
        boxes = boxes_from_probabilities(maps.probabilities, plane.labels.shape,
                                         list(prompter.labels), pixel, 0.0,
                                         prompter.min_area_fraction, prompter.size)  # fmt: skip
        masks = segmenter.predict(boxes.xyxy) if len(boxes) else np.zeros((0, *truth.shape), bool)
        for score in SCORES:
            mask = masks[boxes.scores >= score].any(axis=0) if len(boxes) else np.zeros_like(truth)
            scores[f"sam, pixel {pixel}, score {score}"] = dice(mask, truth)
            scores[f"sam & map, pixel {pixel}, score {score}"] = dice(mask & (probability > 0.3),
                                                                      truth)  # fmt: skip
            scores[f"sam | map, pixel {pixel}, score {score}"] = dice(mask | (probability > 0.5),
                                                                      truth)  # fmt: skip
        best = masks[np.argmax(boxes.scores)] if len(boxes) else np.zeros_like(truth)
        scores[f"best box only, pixel {pixel}"] = dice(best, truth)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompter = load_prompter(args.card)
    segmenter = load_models(runtime="torch").segmenter
    tune = (args.card.parent / "tune_cases.txt").read_text().split()
    rows = [variants(prompter, segmenter, plane)
            for plane in iter_planes(find_cases(args.data), tune)]  # fmt: skip
    means = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}
    io.write_json(args.out, {"card": str(args.card), "planes": len(rows), "mean_dice": means})
    for name, value in means.items():
        print(f"{name:40s} {value:.4f}")


if __name__ == "__main__":
    main()
