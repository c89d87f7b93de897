"""Write each shipped task's validation figures into its task.json, from the run records.

    python scripts/task_about.py [--check] [--table OUT.md]

Reads benchmarks/records/validation_<task>/summary.json (written by
benchmarks/task_validation.py, copied by ``make records``) and sets ``validation`` in
src/automedseg/models/<task>/task.json: mean Dice with automatic prompts and with oracle
boxes, the number of validation cases, the runtime and the record's name. ``--check`` exits
1 when a task.json differs from what the records give (``make test`` runs it); ``--table``
writes the tasks' tables for docs/results.md (``make compare``): the shipped tasks, and each
task's shipped prompter next to the earlier ones still on record
(``validation_<task>_<kind>``, e.g. the embedding heads the backbone prompters replaced).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "benchmarks" / "records"
MODELS = ROOT / "src" / "automedseg" / "models"
UNITS = {"2d": "images", "nnunet": "volumes", "sequences": "videos"}


def validation(task: str) -> dict | None:
    record = RECORDS / f"validation_{task}" / "summary.json"
    if not record.is_file():
        return None
    summary = json.loads(record.read_text())
    modes = summary["modes"]
    return {
        "auto_dice": modes["auto"]["dice_mean"],
        "oracle_dice": modes["oracle"]["dice_mean"],
        "cases": modes["auto"]["n_cases"],
        "unit": UNITS.get(summary["layout"], "cases"),
        "runtime": summary["runtime"],
        "record": f"benchmarks/records/validation_{task}",
    }


def table(abouts: dict[str, dict]) -> str:
    lines = [
        "## Shipped tasks: validation Dice, automatic prompts and oracle boxes",
        "",
        "`benchmarks/task_validation.py --task NAME` on the validation split the task's prompter"
        " was not trained on, the task's default runtime (each record states its threads).",
        "",
        "| task | modality | labels | validation cases | Dice, automatic | Dice, oracle boxes "
        "| runtime | record |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, about in abouts.items():
        labels = ", ".join(f"{v} {n}" for v, n in about["labels"].items())
        v = about.get("validation")
        figures = (
            f"{v['cases']} {v['unit']} | {v['auto_dice']:.3f} | {v['oracle_dice']:.3f} | "
            f"{v['runtime']} | `{v['record']}`"
            if v
            else "not measured | | | |"
        )
        lines.append(f"| `{name}` | {about['modality']} | {labels} | {figures} |")
    return "\n".join(lines) + "\n"


def prompter_rows(task: str, shipped_kind: str) -> list[str]:
    """Table rows of ``task``'s validation records: the shipped prompter's, then earlier ones."""
    rows = []
    records = [(f"{shipped_kind} (shipped)", RECORDS / f"validation_{task}")]
    records += [(path.name.removeprefix(f"validation_{task}_"), path)
                for path in sorted(RECORDS.glob(f"validation_{task}_*"))]  # fmt: skip
    for kind, folder in records:
        if not (folder / "summary.json").is_file():
            continue
        summary = json.loads((folder / "summary.json").read_text())
        auto, oracle = summary["modes"]["auto"], summary["modes"]["oracle"]
        found = auto.get("detection") or {}
        detection = " / ".join(f"{found[k]:.2f}" for k in ("precision", "recall", "f1")) or "–"
        per_label = summary.get("per_label", {}).get("auto", {})
        labels = ", ".join(f"{v}: {d['dice_mean']:.3f}" for v, d in per_label.items())
        gap = oracle["dice_mean"] - auto["dice_mean"]
        record = folder.relative_to(ROOT)
        rows.append(f"| `{task}` | {kind} | {auto['dice_mean']:.3f} | {labels} | "
                    f"{auto['dice_per_plane_mean']:.3f} | {detection} | {oracle['dice_mean']:.3f} "
                    f"| {gap:.3f} | {summary['runtime']} | `{record}` |")  # fmt: skip
    return rows


def prompters_table(abouts: dict[str, dict]) -> str:
    lines = [
        "## Prompters: the shipped one next to the earlier ones, same validation split",
        "",
        "Same command and split as above; an earlier prompter's record is kept under "
        "`validation_<task>_<kind>`. Detection: precision / recall / F1 at box IoU ≥ 0.5.",
        "",
        "| task | prompter | Dice, automatic | per label | per plane | detection P / R / F1 "
        "| Dice, oracle boxes | gap | runtime | record |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, about in abouts.items():
        lines += prompter_rows(name, about.get("prompter_kind", "?"))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--table", type=Path, help="write the tasks' Markdown table here")
    args = parser.parse_args()
    stale, abouts = [], {}
    for path in sorted(MODELS.glob("*/task.json")):
        about = json.loads(path.read_text())
        figures = validation(path.parent.name)
        kind = json.loads((path.parent / "prompter.json").read_text()).get("kind")
        abouts[path.parent.name] = {**about, "validation": figures, "prompter_kind": kind}
        if about.get("validation") == figures:
            continue
        stale.append(path.parent.name)
        if not args.check:
            about["validation"] = figures
            path.write_text(json.dumps(about, indent=2) + "\n")
    if args.table:
        args.table.write_text(table(abouts) + "\n" + prompters_table(abouts))
    if args.check and stale:
        print(f"task.json out of date for {', '.join(stale)}: run scripts/task_about.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
