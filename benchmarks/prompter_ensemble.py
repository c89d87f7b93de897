"""Do averaged backbone maps (several trained prompters, horizontal-flip test-time
augmentation) and a top-1 fallback lift automatic Dice? An experiment before building it in.

    python benchmarks/prompter_ensemble.py --task polyp --data ../shared/datasets/kvasir_seg \
        --out benchmarks/records/prompter_ensemble_polyp.json \
        runs/bb_polyp/prompter.json runs/bb_polyp416/prompter.json

The prompters must share one split (their ``tune_cases.txt`` and ``val_cases.txt``). For each
variant (every prompter alone, all averaged, each with and without the flip) the maps of
every tuning and validation plane are averaged at the plane's resolution, boxes come from
them as in ``prompt.components``, the task's segmenter (its default runtime) segments them
(``train.backbone.candidates``), and the score threshold and fallback are chosen on the
tuning planes' Dice; validation Dice is then reported for that choice only. Also reported:
Dice of the averaged map alone (probability > 0.5).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from automedseg.data.datasets import LabelChoice, find_cases
from automedseg.data.planes import iter_planes
from automedseg.evaluate.metrics import dice
from automedseg.prompt.backbone import BackbonePrompter, load_backbone_prompter
from automedseg.prompt.components import ClassMaps
from automedseg.tasks import get_task, load_models
from automedseg.train.backbone import THRESHOLDS, candidates


@dataclass
class Averaged:
    """The members' class maps averaged at the plane's resolution (what ``candidates`` reads:
    ``maps``, ``labels``, thresholds and ``size``, here the plane's longest side)."""

    members: list[BackbonePrompter]
    flip: bool
    size: int = 0

    def __post_init__(self) -> None:
        first = self.members[0]
        self.labels = first.labels
        self.pixel_threshold, self.min_area_fraction = first.pixel_threshold, 0.0005

    def maps(self, image: np.ndarray) -> ClassMaps:
        hw = image.shape[:2]
        self.size = max(hw)
        stack = []
        for member in self.members:
            stack.append(member.maps(image).at(hw))
            if self.flip:
                flipped = np.ascontiguousarray(image[:, ::-1])
                stack.append(member.maps(flipped).at(hw)[:, :, ::-1])
        return ClassMaps(np.mean(stack, axis=0), hw, tuple(self.labels))


def plane_dice(found, threshold: float, fallback: bool) -> float:
    """Foreground Dice (label 1) of the masks kept at ``threshold``; with ``fallback``, a plane
    where no box passes keeps its best-scoring one."""
    scores = np.asarray(found.boxes.scores, np.float32)
    keep = scores >= threshold
    if fallback and len(scores) and not keep.any():
        keep = scores == scores.max()
    mask = found.masks[keep].any(axis=0) if keep.any() else np.zeros(found.truth.shape, bool)
    return dice(mask, found.truth == 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cards", nargs="+", type=Path)
    parser.add_argument("--task", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    segmenter = load_models(get_task(args.task), threads=args.threads).segmenter
    members = [load_backbone_prompter(card) for card in args.cards]
    dataset = find_cases(args.data)
    split = {name: (args.cards[0].parent / f"{name}_cases.txt").read_text().split()
             for name in ("tune", "val")}  # fmt: skip
    planes = {name: list(iter_planes(dataset, ids, 0, 0.1, 1, LabelChoice()))
              for name, ids in split.items()}  # fmt: skip
    # the first prompter as it ships, then everything averaged with the flip: the comparison
    # that matters comes first (the record is written after every variant)
    first = args.cards[0].parent.name
    variants = {first: ([members[0]], False)}
    if len(members) > 1:
        variants[f"average of {len(members)} + flip"] = (members, True)
        variants[f"average of {len(members)}"] = (members, False)
    variants[f"{first} + flip"] = ([members[0]], True)
    for card, member in zip(args.cards[1:], members[1:], strict=True):
        variants[card.parent.name] = ([member], False)
    record = {"task": args.task, "cards": [str(c) for c in args.cards], "threads": args.threads,
              "planes": {k: len(v) for k, v in planes.items()}, "variants": {}}  # fmt: skip
    for name, (chosen, flip) in variants.items():
        started = time.perf_counter()
        prompter = Averaged(chosen, flip)
        found = {k: [candidates(prompter, segmenter, p, (0.5,))[0.5] for p in v]
                 for k, v in planes.items()}  # fmt: skip
        options = [(float(t), f) for t in THRESHOLDS for f in (False, True)]
        tune = {o: float(np.mean([plane_dice(x, *o) for x in found["tune"]])) for o in options}
        best = max(options, key=lambda o: tune[o])
        val = float(np.mean([plane_dice(x, *best) for x in found["val"]]))
        map_only = {k: float(np.mean([dice(prompter.maps(p.image).probabilities[0] > 0.5,
                                           p.labels == 1) for p in v]))
                    for k, v in planes.items()}  # fmt: skip
        record["variants"][name] = {
            "score_threshold": best[0], "fallback": best[1], "tune_dice": round(tune[best], 4),
            "val_dice": round(val, 4),
            "map_only_dice": {k: round(v, 4) for k, v in map_only.items()},
            "seconds": round(time.perf_counter() - started, 1),
        }  # fmt: skip
        print(name, record["variants"][name], flush=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
