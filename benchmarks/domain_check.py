"""How often each shipped task's input-domain check flags its own validation cases and the
images of the other data sets.

    python benchmarks/domain_check.py --datasets ../shared/datasets --per-set 40 \
        --out benchmarks/records/domain_check.json

For every shipped task with a domain model (``automedseg train domain``): the share of its own
validation cases flagged ``out_of_domain`` (the split its prompter was trained without; the
threshold was calibrated to flag at most about 5 % of them), and the share of up to
``--per-set`` cases of every other data set flagged (these should all be). Each case is read
as ``automedseg segment`` reads it and measured as ``pipeline.qc.assess`` does (a volume: the
median over evenly spaced planes), on the task's default runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from automedseg.checkpoints import read_card
from automedseg.data.datasets import find_cases, load_case
from automedseg.data.planes import split_usable
from automedseg.pipeline.qc import plane_features, unit_planes
from automedseg.tasks import load_models, shipped_tasks

DATASETS = {"kvasir_seg": 0, "jsrt_scr": 0, "msd_task04_hippocampus": 0,
            "laryngeal_vocalfolds": 0, "brats2013_in_brats2015_deepmedic6": 0}  # fmt: skip
"""Data set → the image channel read."""


def distances(models, dataset, ids: list[str], channel: int) -> list[float]:
    chosen = set(ids)
    out = []
    for case in dataset.cases:
        if case.case_id in chosen and not case.problem:
            image, _ = load_case(case, channel, dataset.layout)
            planes = unit_planes(image)
            feats = plane_features(planes, models.segmenter)
            out.append(float(np.median([models.domain.distance(f) for f in feats])))
    return out


def spread(ids: list[str], count: int) -> list[str]:
    if len(ids) <= count:
        return ids
    return [ids[int(i)] for i in np.linspace(0, len(ids) - 1, count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--per-set", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "threads": args.threads,
              "per_set": args.per_set, "tasks": {}}  # fmt: skip
    for name, task in shipped_tasks().items():
        if "domain" not in task.about:
            continue
        models = load_models(task, threads=args.threads)
        training = read_card(task.prompter)["training"]
        own = Path(training["data"]).name
        row = {"threshold": models.domain.threshold, "runtime": models.runtime, "sets": {}}
        for data, channel in DATASETS.items():
            dataset = find_cases(args.datasets / data)
            usable = [c.case_id for c in dataset.cases if not c.problem]
            if data == own:
                _, ids = split_usable(usable, training["val_fraction"], training["seed"],
                                      training.get("case_limit"))  # fmt: skip
            else:
                ids = spread(usable, args.per_set)
            found = distances(models, dataset, ids, channel)
            flagged = float(np.mean(np.asarray(found) > models.domain.threshold))
            row["sets"][data] = {"own_validation": data == own, "cases": len(found),
                                 "flagged": round(flagged, 4),
                                 "median_distance": round(float(np.median(found)), 3)}  # fmt: skip
            print(f"{name} on {data}: {flagged:.1%} of {len(found)} flagged", file=sys.stderr)
        record["tasks"][name] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
