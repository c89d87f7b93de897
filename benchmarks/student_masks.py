"""Students' masks against the teacher's on the rows they were trained on.

    python benchmarks/student_masks.py --cache runs/distil_larynx/cache \
        runs/distil_larynx/encoder.json runs/distil_larynx_mask01/encoder.json

For each student card: the task's LiteMedSAM (with ``--segmenter-weights``, the delta the
students learnt) decodes the first box
of ``--rows`` cached training rows that have a box (``OUT/cache/boxes.npz``, the mask term's
boxes for the labels chosen) on the student's embedding and on the teacher's cached one; the
binary cross-entropy of the student's mask logits against the teacher's probabilities (the
mask term's loss without jitter), the Dice of the two masks (logit > 0), and the mean cosine
of the two embeddings. Rows are drawn with a fixed seed, so students are compared on the
same rows. A check of what training did to the mask term's own objective, not a validation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from automedseg import io
from automedseg.evaluate.metrics import dice
from automedseg.segment.delta import tuned_litemedsam
from automedseg.segment.litemedsam import load_litemedsam
from automedseg.train.encoder import load_student
from automedseg.train.student_terms import frozen


def first_boxes(boxes: np.ndarray, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` random rows (sorted) that have a box, and each row's first box."""
    having = np.flatnonzero(~np.isnan(boxes[:, 0, 0]))
    chosen = np.sort(np.random.default_rng(seed).permutation(having)[:rows])
    return chosen, boxes[chosen, 0].astype(np.float32)


@torch.inference_mode()
def compare(card: Path, decoder, inputs: np.ndarray, teacher: torch.Tensor,
            boxes: torch.Tensor) -> dict:  # fmt: skip
    student, _ = load_student(card)
    wanted = decoder.decode(teacher, boxes)
    embedding = student.eval()(torch.from_numpy(inputs))
    got = decoder.decode(embedding, boxes)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(got, torch.sigmoid(wanted))
    dices = [dice(g[0].numpy() > 0, w[0].numpy() > 0) for g, w in zip(got, wanted, strict=True)]
    cosine = torch.nn.functional.cosine_similarity(embedding.flatten(1), teacher.flatten(1))
    return {"card": str(card), "bce": round(float(bce), 4), "dice": round(float(np.mean(dices)), 4),
            "cosine": round(float(cosine.mean()), 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, type=Path, help="a train encoder OUT/cache")
    parser.add_argument("--segmenter-weights", help="the delta the students learnt (its card)")
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("students", nargs="+", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, boxes = first_boxes(io.read_arrays(args.cache / "boxes.npz")["boxes"], args.rows,
                              args.seed)  # fmt: skip
    inputs = np.load(args.cache / "inputs.npy", mmap_mode="r")[rows].astype(np.float32)
    teacher = torch.from_numpy(np.load(args.cache / "targets.npy", mmap_mode="r")[rows]
                               .astype(np.float32))  # fmt: skip
    weights = args.segmenter_weights
    decoder = frozen(tuned_litemedsam(weights) if weights else load_litemedsam())
    for card in args.students:
        print(json.dumps(compare(card, decoder, inputs, teacher, torch.from_numpy(boxes))))


if __name__ == "__main__":
    main()
