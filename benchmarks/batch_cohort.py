"""A cohort through ``automedseg batch``: kill and resume, a worker killed mid-run, throughput.

    python benchmarks/batch_cohort.py --task polyp --images 180 --volumes 20 \
        --datasets ../shared/datasets --work runs/batch_cohort \
        --out benchmarks/records/batch_cohort.json

1. A CSV of the cases: the first ``--images`` Kvasir-SEG images and ``--volumes`` MSD
   hippocampus volumes (mixed 2D and 3D; one task runs them all).
2. ``reference``: the whole cohort with ``--engine dask --workers 2``, uninterrupted.
3. ``killed``: the same command, its whole process group killed (SIGKILL) once half the cases
   are in its manifest, then rerun; during the rerun one Dask worker process is killed too.
   Checked: every case is in the final manifest, the cases the rerun segmented are exactly the
   ones the first run had not finished (each case segmented once), and every output file
   equals the reference's (SHA-256), except files that hold fresh UIDs (DICOM).
4. Throughput: the first ``--throughput`` images with 1 worker × 1 thread and with 2 workers ×
   1 thread, alternated ``--repeats`` times in this run; medians of the wall times of the
   whole command (starting the cluster and loading the models included).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent / "automedseg"


def cohort_csv(datasets: Path, images: int, volumes: int, path: Path) -> int:
    kvasir = sorted((datasets / "kvasir_seg" / "images").glob("*.jpg"))[:images]
    hippocampus = sorted((datasets / "msd_task04_hippocampus" / "imagesTr").glob("*.nii.gz"))
    rows = [str(p.resolve()) for p in kvasir] + [str(p.resolve()) for p in hippocampus[:volumes]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path\n" + "\n".join(rows) + "\n")
    return len(rows)


def command(listing: Path, out: Path, task: str, workers: int) -> list[str]:
    return [str(BIN), "batch", str(listing), "--out", str(out), "--task", task, "--engine",
            "dask", "--workers", str(workers), "--threads", "1", "--no-progress"]  # fmt: skip


def manifest(out: Path) -> list[dict]:
    path = out / "manifest.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def outputs(out: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every case output (case.json, with its timings, left out)."""
    found = {}
    for path in sorted((out / "cases").rglob("*")):
        if path.is_file() and path.name != "case.json" and path.suffix != ".dcm":
            found[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def finished(out: Path) -> set[str]:
    """The cases whose folder was written whole (it holds case.json)."""
    return {p.parent.name for p in (out / "cases").glob("*/case.json")}


def worker_pids(root: int) -> list[int]:
    """Dask worker processes below ``root`` (the nanny's children running the worker)."""
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c.pid for c in children if "spawn_main" in " ".join(c.cmdline())]


def killed_and_resumed(listing: Path, out: Path, task: str, cases: int) -> dict:
    first = subprocess.Popen(command(listing, out, task, 2), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    while len(manifest(out)) < cases // 2 and first.poll() is None:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    in_manifest = {r["case_id"] for r in manifest(out) if r["status"] == "ok"}
    done_first = finished(out)  # a case may finish after the last row written before the kill
    second = subprocess.Popen(command(listing, out, task, 2), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    killed_worker = None
    while second.poll() is None:
        rows = manifest(out)
        if killed_worker is None and sum(r["status"] == "ok" for r in rows) >= 3:
            pids = worker_pids(second.pid)
            if pids:
                killed_worker = pids[0]
                os.kill(killed_worker, signal.SIGKILL)
        time.sleep(0.5)
    rows = manifest(out)
    segmented_second = {r["case_id"] for r in rows if r["status"] == "ok"}
    skipped_second = {r["case_id"] for r in rows if r["status"] == "skipped"}
    return {
        "cases_in_manifest": len(rows),
        "ok_first_run": len(done_first),
        "ok_first_run_in_its_manifest": len(in_manifest),
        "ok_second_run": len(segmented_second),
        "skipped_second_run": len(skipped_second),
        "failed": [r["case_id"] for r in rows if r["status"] == "failed"],
        "each_case_once": not (segmented_second & done_first) and skipped_second == done_first,
        "worker_killed": killed_worker is not None,
        "exit_code_second_run": second.returncode,
    }


def resume_check(args: argparse.Namespace) -> dict:
    """Steps 1 to 3 of the module's docstring."""
    listing = args.work / "cohort.csv"
    cases = cohort_csv(args.datasets, args.images, args.volumes, listing)
    reference = args.work / "reference"
    seconds_reference = run(command(listing, reference, args.task, 2))
    resumed = args.work / "killed"
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "task": args.task,
              "cases": cases, "images": args.images, "volumes": args.volumes,
              "reference_seconds": round(seconds_reference, 1),
              "reference_ok": sum(r["status"] == "ok" for r in manifest(reference))}  # fmt: skip
    record["killed_and_resumed"] = killed_and_resumed(listing, resumed, args.task, cases)
    a, b = outputs(reference), outputs(resumed)
    record["outputs_equal"] = {"files": len(a), "equal": a == b,
                               "differing": sorted(k for k in a.keys() | b.keys()
                                                   if a.get(k) != b.get(k))[:20]}  # fmt: skip
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="polyp")
    parser.add_argument("--images", type=int, default=180)
    parser.add_argument("--volumes", type=int, default=20)
    parser.add_argument("--throughput", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--work", type=Path, default=Path("runs/batch_cohort"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--throughput-only", action="store_true",
                        help="measure the throughput again, keep the rest of --out")  # fmt: skip
    args = parser.parse_args()
    if args.throughput_only:
        record = json.loads(args.out.read_text())
    else:
        record = resume_check(args)
    small = args.work / "throughput.csv"
    cohort_csv(args.datasets, args.throughput, 0, small)
    times: dict[str, list[float]] = {"1 worker x 1 thread": [], "2 workers x 1 thread": []}
    for repeat in range(args.repeats):
        for workers, key in ((1, "1 worker x 1 thread"), (2, "2 workers x 1 thread")):
            out = args.work / f"throughput_{workers}_{repeat}"
            shutil.rmtree(out, ignore_errors=True)
            times[key].append(run(command(small, out, args.task, workers)))
    medians = {k: statistics.median(v) for k, v in times.items()}
    record["throughput"] = {
        "cases": args.throughput,
        "seconds": {k: [round(t, 1) for t in v] for k, v in times.items()},
        "median_seconds": {k: round(v, 1) for k, v in medians.items()},
        "speed_up": round(medians["1 worker x 1 thread"] / medians["2 workers x 1 thread"], 2),
        "note": "wall time of the whole command (cluster start and model loading included)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
