"""docs/results.md's tables of the speed, cohort, review-app, domain and fuzzing records.

    python scripts/records_tables.py --out runs/results_records.md

Reads the JSON records the benchmarks wrote into benchmarks/records (``speed_<task>/``,
``encoder_profile.json``, ``encoder_pruning.json``, ``encoder_distillation.json``,
``quantize_<task>_student*.json`` and the shipped sets' ``quantization.json``,
``volume_memory/``, ``batch_cohort.json``, ``cpu_scaling.json``, ``serve_load.json``,
``domain_check.json``, ``fuzz_readers.json``) and writes one Markdown section per record that
exists; ``make compare`` appends it to docs/results.md. Nothing here is typed in: every
figure is read from a record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "benchmarks" / "records"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def speed() -> list[str]:
    lines = []
    for path in sorted(RECORDS.glob("speed_*/pipeline_speed.json")):
        record = _load(path)
        unit = record["unit"]
        lines += [
            f"### Speed: `{record['task']}`, {record['inputs']} "
            f"{'volumes' if unit == 'plane' else 'images'}, {record['threads']} threads",
            "",
            f"`{record['command']}` ({record['date']}; runtimes interleaved, {record['repeats']} "
            f"repeats, medians per {unit}; peak RSS of a fresh `automedseg segment` process on "
            "one input).",
            "",
            f"| runtime | prompter ms | encoder ms | decoder ms | total ms per {unit} | speed-up "
            "| models MB | peak RSS MB | torch imported |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, row in record["runtimes"].items():
            speedup = next(v for k, v in row.items() if k.startswith("speedup_vs_"))
            lines.append(f"| {name} | {row['prompter_ms']} | {row['encoder_ms']} | "
                         f"{row['decoder_ms']} | {row['total_ms']} | {speedup}x | "
                         f"{row['models_mb']} | {row['peak_rss_mb']} | "
                         f"{row['torch_imported']} |")  # fmt: skip
        lines.append("")
    return lines


def volume_memory() -> list[str]:
    record = _load(RECORDS / "volume_memory" / "volume_memory.json")
    if record is None:
        return []
    shape = "×".join(map(str, record["shape_xyz"]))
    lines = [
        f"### Peak memory: one {shape} {record['dtype']} volume",
        "",
        f"`{record['command']}` ({record['date']}, {record['threads']} threads): a synthetic "
        "volume (noise and a bright ellipsoid), one box on its middle slice, propagated through "
        "the volume by a fresh `automedseg segment` process per runtime.",
        "",
        "| runtime | peak RSS MB | seconds (whole process) | Dice against the ellipsoid |",
        "|---|---|---|---|",
    ]
    for name, row in record["runtimes"].items():
        lines.append(f"| {name} | {row['peak_rss_mb']} | {row['seconds']} | {row['dice']} |")
    return [*lines, ""]


def encoder_profile() -> list[str]:
    record = _load(RECORDS / "encoder_profile.json")
    if record is None:
        return []
    ov, gmacs = record["openvino"], record["gmacs"]
    lines = [
        f"### Where the image encoder's time goes ({record['threads']} threads)",
        "",
        f"`{record['command']}` ({record['date']}): LiteMedSAM's TinyViT encoder on one "
        f"{record['input']} input is {gmacs['total']} GMAC; the shipped OpenVINO encoder "
        f"({ov['recipe']}, {ov['precision']}) takes {ov['median_ms']} ms (median), "
        f"{record['sustained_gmacs_per_s']} GMAC/s.",
        "",
        "| part | GMAC |",
        "|---|---|",
        *(f"| {part} | {value} |" for part, value in gmacs.items() if part != "total"),
        "",
        f"| OpenVINO layer type (kernel as OpenVINO names it; one inference with counters, "
        f"{ov['counted_ms']} ms) | ms |",
        "|---|---|",
        *(f"| {kind} | {ms} |" for kind, ms in ov["ms_by_layer_type"].items()),
    ]
    return [*lines, ""]


def encoder_pruning() -> list[str]:
    record = _load(RECORDS / "encoder_pruning.json")
    if record is None:
        return []
    lines = [
        f"### A pruned encoder: how fast, how far from the original ({record['threads']} threads)",
        "",
        f"`{record['command']}` ({record['date']}): TinyViT with transformer blocks removed, "
        f"converted to OpenVINO ({record['precision']}), all variants timed in turn; the cosine "
        "of each embedding to the unpruned one before any fine-tuning.",
        "",
        "| blocks kept | GMAC | median ms | cosine (mean, min) |",
        "|---|---|---|---|",
        *(f"| {name} | {row['gmacs']} | {row['median_ms']} | {row['cosine_mean']}, "
          f"{row['cosine_min']} |" for name, row in record["variants"].items()),
    ]
    return [*lines, ""]


def encoder_distillation() -> list[str]:
    record = _load(RECORDS / "encoder_distillation.json")
    if record is None:
        return []
    training, ms = record["student"]["training"], record["encoder_median_ms"]
    lines = [
        f"### A distilled encoder: LiteMedSAM's embedding from a MobileNetV2 "
        f"({record['threads']} threads)",
        "",
        f"`{record['command']}` ({record['date']}): the student of `automedseg train encoder` "
        f"({training['planes']} training planes of `{Path(training['data']).name}` × "
        f"{training['views']} views, {training['epochs']} epochs) on the "
        f"{record['validation_cases']} validation cases it never saw; Dice of LiteMedSAM's "
        "masks from the manual masks' boxes on either embedding; both encoders on OpenVINO, "
        "timed in turn.",
        "",
        "| encoder | embedding cosine to LiteMedSAM's | oracle-box Dice | median ms |",
        "|---|---|---|---|",
        f"| LiteMedSAM (TinyViT) | 1.0 | {record['oracle_dice_teacher']} | {ms['teacher']} |",
        f"| distilled (MobileNetV2 + FPN) | {record['embedding_cosine_mean']} | "
        f"{record['oracle_dice_student']} | {ms['student']} |",
    ]
    return [*lines, ""]


def student_verdicts() -> list[str]:
    """Every distilled encoder ``quantize --student`` judged: the shipped sets' reports and the
    reports of refused ones kept as ``quantize_<task>_student*.json``."""
    reports = sorted(ROOT.glob("src/automedseg/models/*/quantization.json"))
    reports += sorted(RECORDS.glob("quantize_*_student*.json"))
    rows = []
    for path in reports:
        report = _load(path)
        tried = [c for c in report.get("candidates", []) if c["recipe"].endswith("student")]
        if not tried:
            continue
        student, budget = tried[-1], report["budget"]  # the last pass: the others chosen
        within = max(student["truth_drop"], student["same_box_truth_drop"]) <= budget
        rows.append(
            f"| `{report['task']}` | {student['truth_drop']:+.4f} | "
            f"{student['same_box_truth_drop']:+.4f} | {student['embedding_cosine']} | "
            f"{student['encoder_ms']:.1f} | {student['total_ms']:.1f} | {budget} | "
            f"{'yes' if within else 'no'} | `{path.relative_to(ROOT)}` |"
        )
    if not rows:
        return []
    return [
        "### Distilled encoders judged by `quantize --student`",
        "",
        "Dice lost against the manual masks on the held-out calibration planes (training "
        "split), with the task's prompter (automatic) and with the float32 pipeline's boxes "
        "(same boxes), next to the float32 PyTorch pipeline; a student is a candidate only "
        "when both are within the budget, and is shipped only when the validation split "
        "agrees (the `openvino-student` rows of the validation table). Times as the quantize "
        "run measured them.",
        "",
        "| task | automatic drop | same-box drop | embedding cosine ≥ | encoder ms | pipeline ms "
        "| budget | within | report |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def cohort() -> list[str]:
    record = _load(RECORDS / "batch_cohort.json")
    if record is None:
        return []
    killed = record["killed_and_resumed"]
    throughput = record["throughput"]
    equal = record["outputs_equal"]
    lines = [
        "### Cohorts: `automedseg batch --engine dask`",
        "",
        f"`benchmarks/batch_cohort.py` ({record['date']}), task `{record['task']}`, "
        f"{record['cases']} cases ({record['images']} Kvasir-SEG images, {record['volumes']} "
        "MSD hippocampus volumes), 2 local workers × 1 thread.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| uninterrupted run: cases ok | {record['reference_ok']} of {record['cases']} in "
        f"{record['reference_seconds']} s |",
        f"| run killed (SIGKILL) halfway: cases ok before the kill | {killed['ok_first_run']} |",
        f"| rerun (a worker killed during it): segmented / skipped | {killed['ok_second_run']} / "
        f"{killed['skipped_second_run']} |",
        f"| every case in the final manifest | {killed['cases_in_manifest']} of "
        f"{record['cases']} |",
        f"| each case segmented once | {killed['each_case_once']} |",
        f"| a worker was killed during the rerun | {killed['worker_killed']} |",
        f"| outputs equal the uninterrupted run's (SHA-256 of {equal['files']} files) | "
        f"{equal['equal']} |",
        f"| throughput, {throughput['cases']} cases: 1 worker × 1 thread / 2 workers × 1 thread "
        f"(median s; measured {throughput.get('date', record['date'])[:16]}) | "
        f"{throughput['median_seconds']['1 worker x 1 thread']} / "
        f"{throughput['median_seconds']['2 workers x 1 thread']} |",
        f"| speed-up of 2 workers | {throughput['speed_up']}x ({throughput['note']}) |",
        "",
    ]
    scaling = _load(RECORDS / "cpu_scaling.json")
    if scaling is not None:
        lines += [
            "The machine's own ceiling for two one-thread jobs at once, "
            f"`benchmarks/cpu_scaling.py` ({scaling['date']}, {scaling['logical_cpus']} logical "
            "CPUs; medians of "
            f"{scaling['repeats']}):",
            "",
            "| workload | one job alone s | each of two side by side s | throughput ratio |",
            "|---|---|---|---|",
        ]
        for name, row in scaling["workloads"].items():
            lines.append(f"| {name} | {row['alone_s']} | {row['side_by_side_s']} | "
                         f"{row['throughput_ratio']}x |")  # fmt: skip
        lines.append("")
    return lines


def serve() -> list[str]:
    record = _load(RECORDS / "serve_load.json")
    if record is None:
        return []
    kill = record["at_the_kill"]
    return [
        "### The review app under load, restarted mid-queue",
        "",
        f"`benchmarks/serve_load.py` ({record['date']}), task `{record['task']}`.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| jobs submitted at once | {record['submitted']} (in {record['submit_seconds']} s) |",
        f"| at the kill: queued / running / done | {kill['queued']} / {kill['running']} / "
        f"{kill['done']} |",
        f"| listed after the restart | {record['listed_after_restart']} |",
        f"| finally done / failed | {record['final']['done']} / {record['final']['failed']} |",
        f"| queued at the kill, resumed and done | {record['queued_at_kill_resumed_done']} of "
        f"{record['queued_at_kill']} |",
        f"| failed with the reason | {'; '.join(record['failed_reasons']) or '–'} |",
        f"| results finished before the kill still served | "
        f"{record['finished_before_kill_still_served']} |",
        "",
    ]


def domain() -> list[str]:
    record = _load(RECORDS / "domain_check.json")
    if record is None:
        return []
    sets = sorted({s for row in record["tasks"].values() for s in row["sets"]})
    lines = [
        "### Input-domain check: share of cases flagged `out_of_domain`",
        "",
        f"`benchmarks/domain_check.py` ({record['date']}): each task's own validation cases "
        f"(bold; should be ≤ 5 %) and up to {record['per_set']} cases of each other data set "
        "(should be flagged).",
        "",
        "| task | threshold | " + " | ".join(sets) + " |",
        "|---|---|" + "---|" * len(sets),
    ]
    for task, row in record["tasks"].items():
        cells = []
        for name in sets:
            found = row["sets"].get(name)
            text = "–" if found is None else f"{found['flagged']:.0%} of {found['cases']}"
            cells.append(f"**{text}**" if found and found["own_validation"] else text)
        lines.append(f"| `{task}` | {row['threshold']} | " + " | ".join(cells) + " |")
    return lines + [""]


def fuzz() -> list[str]:
    record = _load(RECORDS / "fuzz_readers.json")
    if record is None:
        return []
    lines = [
        "### Fuzzing the readers",
        "",
        "`benchmarks/fuzz_readers.py FAMILY --seconds S --out benchmarks/records/fuzz_readers.json`"
        " (atheris, one process per family; a crash stops that family's run).",
        "",
        "| reader family | date | seconds | executions | crashes | exceptions |",
        "|---|---|---|---|---|---|",
    ]
    for family, row in record["families"].items():
        errors = "; ".join(e if len(e) < 100 else e[:97] + "…" for e in row["exceptions"]) or "–"
        date = row.get("date", record.get("date", "?"))[:10]
        lines.append(f"| {family} | {date} | {row['seconds']} | {row['executions']} | "
                     f"{len(row['crashes'])} | {errors} |")  # fmt: skip
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    lines = ["## Speed, cohorts, the review app, trust", ""]
    lines += speed() + encoder_profile() + encoder_pruning() + encoder_distillation()
    lines += student_verdicts()
    lines += volume_memory()
    lines += cohort() + serve() + domain() + fuzz()
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
