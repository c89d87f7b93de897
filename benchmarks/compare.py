"""The comparison table (issue 8) regenerated from stored runs, one table per data set.

    python benchmarks/compare.py --title "Kvasir-SEG, validation split (159 images)" \\
        --eval "automedseg (head + LiteMedSAM, PyTorch)=runs/eval_polyp_val_torch" \\
        --eval "automedseg (INT8, ONNX Runtime)=runs/eval_polyp_val_int8" \\
        --eval "nnU-Net v2 (2d)=runs/eval_polyp_val_nnunet" \\
        --timing "nnU-Net v2 (2d)=runs/nnunet/timing_501.json" \\
        --budget "nnU-Net v2 (2d)=runs/nnunet/budget_501.json" \\
        --baselines runs/bench_baselines2/baselines.json --out runs/compare_polyp.md

Every number comes from a file written by a command (``automedseg evaluate``,
``benchmarks/nnunet_baseline.py train|time``, ``benchmarks/baselines.py``); the table says
which. ``--eval`` rows: Dice / IoU of the ``auto`` mode (or ``predictions`` for another tool's
masks), Dice of the ``oracle`` mode where the same run has it, model MB, ms per case (per image
in 2D, per volume or sequence in 3D: the median of the run's per-case totals) and peak RSS of
that run. ``--oracle`` takes a row's oracle Dice from another run on the same split.
``--timing`` replaces a row's speed and size with a dedicated timing run
(nnU-Net's masks are scored from files, so its evaluate run does not time it); ``--budget``
adds its training budget. ``--baselines`` adds the models whose weights cannot be had here:
size and speed only.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

PROMPT = {
    "mobilesam": "yes (box or point)",
    "fastsam-s": "no (segments everything; a prompt picks the object)",
    "fastsam-x": "no (segments everything; a prompt picks the object)",
}
NAMES = {
    "mobilesam": "MobileSAM (random weights)",
    "fastsam-s": "FastSAM-s (random weights)",
    "fastsam-x": "FastSAM-x (random weights)",
}


def _pairs(values: list[str], what: str) -> dict[str, Path]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not Path(path).exists():
            raise SystemExit(f"error: --{what} {value!r}: want NAME=PATH to an existing file")
        out[name] = Path(path)
    return out


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def case_ms(folder: Path, mode: str) -> float | None:
    """Median over cases of the run's total ms per case (I/O, prompter, encoder, decoder): per
    image for 2D, per volume or sequence otherwise."""
    totals = {}
    with (folder / "per_case.csv").open() as handle:
        for row in csv.DictReader(handle):
            stages = [row.get(f"ms_{s}") for s in ("io", "prompter", "encoder", "decoder")]
            if row["mode"] == mode and all(stages) and row["case_id"] not in totals:
                totals[row["case_id"]] = sum(float(v) for v in stages)
    return float(np.median(list(totals.values()))) if totals else None


def eval_row(
    name: str, folder: Path, timing: Path | None, budget: Path | None, oracle_run: Path | None
) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    modes = summary["modes"]
    mode = "auto" if "auto" in modes else "predictions"
    auto = modes.get(mode)
    if auto is None:
        raise SystemExit(f"error: {folder}: no auto or predictions mode in summary.json")
    oracle = modes.get("oracle")
    if oracle_run is not None:
        oracle = json.loads((oracle_run / "summary.json").read_text())["modes"].get("oracle")
        if oracle is None:
            raise SystemExit(f"error: --oracle {oracle_run}: that run has no oracle mode")
    row = {
        "model": name,
        "dice": auto["dice_mean"],
        "iou": auto["iou_mean"],
        "oracle": oracle["dice_mean"] if oracle else None,
        "cases": auto["n_cases"],
        "mb": round(sum(summary.get("models_mb", {}).values()), 1) or None,
        "prompt": "no",
        "ms": case_ms(folder, mode),
        "rss": auto.get("peak_rss_mb"),
        "threads": summary.get("threads"),
        "source": str(folder),
        "notes": [],
    }
    if timing is not None:
        t = json.loads(timing.read_text())
        row.update(mb=t["float32_mb"], ms=t["ms_per_image_median"], rss=t["peak_rss_mb"])
        row.update(threads=t["torch_threads"])
        row["notes"].append(f"speed: {t['cases']} cases, {timing}")
    if oracle_run is not None:
        row["notes"].append(f"oracle: {oracle_run}")
    if budget is not None:
        b = json.loads(budget.read_text())
        hours = b["training_seconds"] / 3600
        row["notes"].append(
            f"trained {b['epochs_done']} of {b['epochs']} epochs × {b['iterations_per_epoch']}"
            f" steps, {hours:.1f} h on {b['torch_threads']} thread(s)"
        )
    return row


def baseline_rows(path: Path) -> list[dict]:
    bench = json.loads(path.read_text())
    rows = []
    for key, m in bench["models"].items():
        if key not in NAMES:
            continue
        rows.append({
            "model": NAMES[key], "dice": None, "iou": None, "oracle": None, "cases": None,
            "mb": m["float32_mb"], "prompt": PROMPT[key], "ms": m["ms_per_image_median"],
            "rss": m["peak_rss_mb"], "threads": bench["threads"], "source": str(path),
            "notes": [f"{m['accuracy']}; {m['times_litemedsam']}× LiteMedSAM's time in the "
                      f"same run, input {m['input']}"],
        })  # fmt: skip
    return rows


def table(title: str, rows: list[dict]) -> str:
    lines = [
        f"**{title}**",
        "",
        "| model | Dice / IoU (auto) | Dice (oracle box) | MB | manual prompt? "
        "| ms per case | peak RSS MB | threads | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        auto = "not measurable" if r["dice"] is None else f"{_f(r['dice'])} / {_f(r['iou'])}"
        lines.append(
            f"| {r['model']} | {auto} | {_f(r['oracle'])} | {_f(r['mb'], 1)} | {r['prompt']} "
            f"| {_f(r['ms'], 0)} | {_f(r['rss'], 0)} | {r['threads']} "
            f"| {'; '.join(r['notes']) or '–'} (`{r['source']}`) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--eval", action="append", default=[], help="NAME=EVALUATE_OUT_DIR")
    parser.add_argument("--timing", action="append", default=[], help="NAME=timing JSON")
    parser.add_argument("--budget", action="append", default=[], help="NAME=budget JSON")
    parser.add_argument(
        "--oracle", action="append", default=[],
        help="NAME=EVALUATE_OUT_DIR whose oracle mode (same split) gives NAME's oracle Dice",
    )  # fmt: skip
    parser.add_argument("--baselines", help="baselines.json of benchmarks/baselines.py")
    parser.add_argument("--out", help="write the table here too (Markdown)")
    args = parser.parse_args()
    evals = _pairs(args.eval, "eval")
    timing, budget = _pairs(args.timing, "timing"), _pairs(args.budget, "budget")
    oracle = _pairs(args.oracle, "oracle")
    for name in {*timing, *budget, *oracle} - set(evals):
        raise SystemExit(f"error: {name!r} has no --eval row of that name")
    rows = [eval_row(n, p, timing.get(n), budget.get(n), oracle.get(n)) for n, p in evals.items()]
    if args.baselines:
        rows += baseline_rows(Path(args.baselines))
    text = table(args.title, rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
