"""``run_batch``: a cohort through a task's models, resumable, locally or on Dask.

    <out>/cases/<case id>/   each finished case's outputs and case.json, written whole
    <out>/manifest.csv       one row per case: ok / failed / skipped, error, seconds, objects,
                             QC flags (rows are added as cases finish, then sorted at the end)
    <out>/statistics.csv     per case and label: voxels, volume (mL) or area (mm²) when the
                             spacing is known, mean and std intensity inside the label
    <out>/predictions_coco.json   with ``coco`` in the formats: the 2D cases' objects

A rerun skips each case whose folder holds a record made from the same input bytes and the
same models (``tasks.models_sha256``); ``force`` redoes them. Ctrl-C stops after removing the
case in progress; the cases finished so far stay done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from automedseg import io
from automedseg.api import DEFAULT_FORMATS, FORMATS
from automedseg.batch.case import CASES, case_folder, done_before
from automedseg.batch.engines import ENGINES, Job, ModelSpec, run_local
from automedseg.batch.record import (
    CASE_FILE,
    MANIFEST_COLUMNS,
    STATISTICS_COLUMNS,
    CaseRecord,
)
from automedseg.errors import AutomedsegError
from automedseg.runtime.model_set import choose_runtime
from automedseg.tasks import Models, models_sha256, resolve_task

MANIFEST = "manifest.csv"
STATISTICS = "statistics.csv"
COCO = "predictions_coco.json"


@dataclass
class BatchSummary:
    out: Path
    records: list[CaseRecord] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(f.strip() for f in formats if f.strip()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise AutomedsegError(f"unknown output format(s) {unknown or chosen}; choose from "
                              f"{', '.join(FORMATS)}")  # fmt: skip
    return chosen


def run_batch(
    inputs: str | Path,
    out: str | Path,
    task: str | None = None,
    prompter: str | Path | None = None,
    *,
    engine: str = "local",
    scheduler: str | None = None,
    workers: int = 2,
    threads: int = 1,
    runtime: str | None = None,
    model_set: str | Path | None = None,
    formats: Iterable[str] = DEFAULT_FORMATS,
    force: bool = False,
    models: Models | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Segment every case of ``inputs`` (a folder searched recursively, or a CSV list; see
    ``io.discover``) with a shipped ``task`` or a ``prompter`` card, into ``out``.

    ``engine`` ``local`` runs the cases here with ``models`` (or the task's, loaded once);
    ``dask`` runs them on ``workers`` local worker processes, or on the cluster at
    ``scheduler``. ``threads`` is each worker's CPU threads. Returns what happened per case."""
    started = time.perf_counter()
    say = say or (lambda message: None)
    formats = check_formats(formats)
    if engine not in ENGINES:
        raise AutomedsegError(f"unknown engine {engine!r}; choose one of {ENGINES}")
    if workers < 1 or threads < 1:
        raise AutomedsegError("--workers and --threads must be at least 1")
    if engine == "dask" and models is not None:
        raise AutomedsegError("the Dask engine loads the models on its workers; pass a task")
    spec = ModelSpec(task, None if prompter is None else str(prompter), runtime,
                     None if model_set is None else str(model_set), threads)  # fmt: skip
    resolved = models.task if models is not None else resolve_task(task, prompter)
    if resolved is None or resolved.prompter is None and models is None:
        raise AutomedsegError("batch needs automatic prompts: pass --task NAME or --prompter CARD")
    used_runtime = models.runtime if models is not None else choose_runtime(
        runtime, Path(model_set) if model_set else resolved.model_set)  # fmt: skip
    fingerprint = models_sha256(resolved, used_runtime)
    video = "video" in str(resolved.about.get("modality", "")) if resolved else False
    sources = io.find_sources(inputs, frames=video)
    out = Path(out)
    (out / CASES).mkdir(parents=True, exist_ok=True)
    if removed := io.remove_temp_folders(out / CASES):
        say(f"removed {removed} unfinished case folder(s) of an interrupted run")
    summary = BatchSummary(out)
    manifest = io.CsvLog(out / MANIFEST, MANIFEST_COLUMNS)
    jobs = []
    for source in _progress(sources, "hashing inputs", progress and len(sources) > 1):
        try:
            sha = io.content_sha256(source)
        except AutomedsegError as error:
            _add(summary, manifest, CaseRecord(source.case_id, str(source.path), "failed",
                                               str(error)))  # fmt: skip
            continue
        earlier = None if force else done_before(out, source.case_id, sha, fingerprint)
        if earlier is not None:
            earlier.status, earlier.seconds = "skipped", 0.0
            _add(summary, manifest, earlier)
        else:
            jobs.append(Job(source, sha))
    say(f"{len(sources)} case(s): {len(jobs)} to segment, {summary.count('skipped')} done before"
        f"{', ' + str(summary.count('failed')) + ' unreadable' if summary.count('failed') else ''}")
    try:
        for record in _progress(_records(jobs, engine, spec, models, out, formats, fingerprint,
                                         scheduler, workers, say), "segment",
                                progress, total=len(jobs)):  # fmt: skip
            _add(summary, manifest, record)
    except KeyboardInterrupt:
        summary.interrupted = True
    finish(summary, formats, resolved.labels if resolved else {})
    summary.seconds = time.perf_counter() - started
    return summary


def _records(jobs, engine, spec, models, out, formats, fingerprint, scheduler, workers,
             say) -> Iterator[CaseRecord]:  # fmt: skip
    if not jobs:
        return iter(())
    if engine == "dask":
        from automedseg.batch.on_dask import run_dask  # distributed: imported when used

        return run_dask(jobs, spec, out, formats, fingerprint, scheduler=scheduler,
                        workers=workers, on_start=say)  # fmt: skip
    return run_local(jobs, models or spec.load(), out, formats, fingerprint)


def _add(summary: BatchSummary, manifest: io.CsvLog, record: CaseRecord) -> None:
    summary.records.append(record)
    manifest.add(record.row())


def finish(summary: BatchSummary, formats: Collection[str], labels: dict[int, str]) -> None:
    """The sorted manifest, statistics.csv from every finished case (this run's and earlier
    ones'), and the COCO file."""
    out = summary.out
    records = sorted(summary.records, key=lambda r: r.case_id)
    io.write_csv(out / MANIFEST, [r.row() for r in records], MANIFEST_COLUMNS)
    finished = [r for r in records if r.status != "failed"]
    rows = [row for r in finished for row in r.statistics_rows()]
    io.write_csv(out / STATISTICS, rows, STATISTICS_COLUMNS)
    if "coco" in formats:
        images = [(r.coco["file_name"], tuple(r.coco["size"]), r.coco["annotations"])
                  for r in finished if r.coco is not None]  # fmt: skip
        io.write_coco(out / COCO, images, labels)


def stored_record(out: Path, case_id: str) -> CaseRecord | None:
    """A finished case's record, read back from its folder."""
    stored = io.read_json_or_none(case_folder(out, case_id) / CASE_FILE)
    return None if stored is None else CaseRecord.from_json(stored)


def _progress(items, desc: str, enabled: bool, total: int | None = None):
    if not enabled:
        return items
    return tqdm(items, desc=desc, unit="case", total=total, file=sys.stderr)
