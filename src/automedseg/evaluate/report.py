"""summary.json, report.md and plots for an evaluation run."""

from __future__ import annotations

from pathlib import Path

from automedseg import io


def write_report(out: Path, summary: dict, rows: list[dict]) -> None:
    io.write_json(out / "summary.json", summary)
    plots = write_plots(out, summary, rows)
    io.write_text(out / "report.md", markdown(summary, plots))


def markdown(summary: dict, plots: list[str]) -> str:
    lines = [
        f"# Evaluation of {summary['segmenter']} on `{summary['data']}`",
        "",
        f"- date: {summary['date']}; machine: {summary['machine']}; torch threads: "
        f"{summary['threads']}",
        f"- layout: {summary['layout']}; NSD tolerance: {summary['nsd_tolerance_mm']} mm; "
        f"models: {summary['models_mb']} MB",
    ]
    if summary.get("command"):
        lines.append(f"- command: `{summary['command']}`")
    if summary["interrupted"]:
        lines.append("- **interrupted**: the figures cover the cases finished before the stop")
    lines += [
        "",
        "Dice, IoU and NSD are means over (case, label) pairs; HD95 (mm) over pairs where it is "
        "defined (both masks non-empty). Dice per plane: the mean 2D Dice over the slices or "
        "frames where the label is in the ground truth or the prediction (= Dice for 2D). "
        "Time is per plane (a 2D image or a prompted slice): prompter + encoder + decoder, "
        "median after warm-up; reading is per case.",
        "",
        "| prompts | cases | failed | Dice mean | Dice median | Dice per plane | IoU mean | "
        "HD95 mm | NSD | ms/plane median | ms/plane p90 | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, m in summary["modes"].items():
        lines.append(
            f"| {mode} | {m['n_cases']} | {m['n_failed']} | {_f(m['dice_mean'])} | "
            f"{_f(m['dice_median'])} | {_f(m['dice_per_plane_mean'])} | {_f(m['iou_mean'])} | "
            f"{_f(m['hd95_mean'], 2)} | "
            f"{_f(m['nsd_mean'])} | {_f(m['ms_per_image_median'], 1)} | "
            f"{_f(m['ms_per_image_p90'], 1)} | {m['peak_rss_mb']} |"
        )
    for mode, m in summary["modes"].items():
        if m.get("qc_flags"):
            counts = ", ".join(f"{flag} {n}" for flag, n in m["qc_flags"].items())
            lines += ["", f"QC flags ({mode} prompts; cases of {m['n_cases']}, see the "
                          f"`qc_flags` column of `per_case.csv`): {counts}"]  # fmt: skip
    lines += ["", "## Per label", "", "| prompts | label | name | cases | Dice | IoU | NSD |"]
    lines.append("|---|---|---|---|---|---|---|")
    names = summary.get("label_names", {})
    for mode, labels in summary["per_label"].items():
        for label, m in labels.items():
            lines.append(
                f"| {mode} | {label} | {names.get(label, '')} | {m['n_cases']} | "
                f"{_f(m['dice_mean'])} | {_f(m['iou_mean'])} | {_f(m['nsd_mean'])} |"
            )
    lines += ["", "## Time per stage (ms, median)", "", "| prompts | stage | ms |", "|---|---|---|"]
    for mode, m in summary["modes"].items():
        for stage, value in m["stages_ms_median"].items():
            lines.append(f"| {mode} | {stage} | {_f(value, 1)} |")
    if summary["failed_cases"]:
        lines += ["", f"Failed cases (see `per_case.csv`): {', '.join(summary['failed_cases'])}"]
    lines += [""] + [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def write_plots(out: Path, summary: dict, rows: list[dict]) -> list[str]:
    """Dice distribution per mode and time per stage, as PNG; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary["modes"])
    dice = [[r["dice"] for r in rows if r["mode"] == m and not r["error"]] for m in modes]
    if not any(dice):
        return []
    fig, axis = plt.subplots(figsize=(5, 3.5))
    axis.boxplot(dice, tick_labels=modes, showmeans=True)
    axis.set_ylabel("Dice per (case, label)")
    axis.set_ylim(0, 1.02)
    axis.set_title("Dice distribution")
    io.write_figure(out / "dice.png", fig)
    plt.close(fig)
    fig, axis = plt.subplots(figsize=(5, 3.5))
    stages = ["prompter", "encoder", "decoder"]
    for i, mode in enumerate(modes):
        values = [summary["modes"][mode]["stages_ms_median"][s] or 0 for s in stages]
        axis.bar([x + i * 0.8 / len(modes) for x in range(3)], values, 0.8 / len(modes), label=mode)
    axis.set_xticks(range(3), stages)
    axis.set_ylabel("ms per plane (median)")
    axis.legend()
    axis.set_title("Time per stage")
    io.write_figure(out / "speed.png", fig)
    plt.close(fig)
    return ["dice.png", "speed.png"]


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
