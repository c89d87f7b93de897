"""Validation Dice of a shipped task, automatic prompts next to oracle boxes, as users run it.

    python benchmarks/task_validation.py --task lungs --datasets ../shared/datasets \
        --out runs/validation_lungs [--runtime torch] [--threads 1] [--prompter CANDIDATE.json]

Rebuilds the validation split the task's prompter was trained without (from its card: data
set, seed, validation fraction, case limit, labels), then runs ``evaluate --prompts both`` on
the shipped task with its default runtime. ``make records`` copies OUT's summary.json and
per_case.csv into benchmarks/records/validation_<task>; ``scripts/task_about.py`` writes the
figures into the task's task.json, and ``make compare`` into docs/results.md.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from automedseg.checkpoints import read_card
from automedseg.data.datasets import LabelChoice, find_cases
from automedseg.data.planes import split_usable
from automedseg.evaluate.runner import evaluate
from automedseg.tasks import get_task, load_models


def validation_split(card: Path, datasets: Path, out: Path) -> tuple[Path, Path, LabelChoice]:
    """(data folder, split file written in ``out``, label choice) of a prompter's training."""
    training = read_card(card)["training"]
    data = datasets / Path(training["data"]).name
    dataset = find_cases(data)
    usable = [c.case_id for c in dataset.cases if not c.problem]
    limit = training["case_limit"]
    _, val = split_usable(usable, training["val_fraction"], training["seed"], limit)
    out.mkdir(parents=True, exist_ok=True)
    split = out / "val_cases.txt"
    split.write_text("\n".join(val) + "\n")
    return data, split, LabelChoice.of_record(training)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runtime", default=None, help="default: the task's own default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--prompter", type=Path,
        help="a candidate prompter card in place of the task's (same split rule, segmenter, "
        "delta and runtime): how a new prompter is compared before it is shipped",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = get_task(args.task)
    if args.prompter is not None:
        task = replace(task, prompter=args.prompter, model_set=None)
    data, split, choice = validation_split(task.prompter, args.datasets, args.out)
    models = load_models(task, runtime=args.runtime, threads=args.threads)
    summary = evaluate(
        data, args.out, prompts="both", split=split, task=args.task, label_choice=choice,
        models=models, progress=False,
    )  # fmt: skip
    for mode, figures in summary["modes"].items():
        print(f"{args.task} {mode}: Dice {figures['dice_mean']:.4f} on {figures['n_cases']} cases")


if __name__ == "__main__":
    main()
