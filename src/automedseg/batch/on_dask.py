"""The Dask engine of ``batch``: cases as tasks on Dask distributed workers, each worker
loading the models once (a worker plugin), records streamed back as cases finish.

No ``scheduler`` address starts a ``LocalCluster`` of ``workers`` processes on this machine
(bound to 127.0.0.1); an address (``tcp://host:8786``) joins a running cluster, whose workers
must see the input and output folders at the same paths and have automedseg installed. A
worker that dies mid-case has its case rescheduled on another worker by the scheduler (the
dead attempt leaves only a temporary folder, removed by the next run); a case whose workers
keep dying is recorded as failed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import dask
from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from automedseg.batch.case import process_case
from automedseg.batch.engines import Job, ModelSpec
from automedseg.batch.record import CaseRecord
from automedseg.tasks import Models

PLUGIN = "automedseg-models"


def _use_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when first imported
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


class ModelsOnWorker(WorkerPlugin):
    """The worker loads the models once, when it joins."""

    name = PLUGIN

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.models: Models | None = None

    def setup(self, worker) -> None:
        _use_threads(self.spec.threads)
        self.models = self.spec.load()


def _on_worker(job: Job, out: str, formats: tuple[str, ...], models_sha256: str) -> dict:
    models = get_worker().plugins[PLUGIN].models
    record = process_case(job.source, models, Path(out), formats, models_sha256,
                          job.input_sha256)  # fmt: skip
    return record.to_json()


def run_dask(
    jobs: list[Job],
    spec: ModelSpec,
    out: Path,
    formats: Collection[str],
    models_sha256: str,
    *,
    scheduler: str | None = None,
    workers: int = 2,
    on_start: Callable[[str], None] | None = None,
) -> Iterator[CaseRecord]:
    """The records of ``jobs`` as they finish on Dask workers (any order)."""
    plugin = ModelsOnWorker(spec)
    cluster = None
    with dask.config.set({"distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS": spec.threads,
                          "distributed.scheduler.allowed-failures": 2}):  # fmt: skip
        if scheduler is None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, host="127.0.0.1")  # fmt: skip
        client = Client(scheduler or cluster)
        try:
            client.register_plugin(plugin)
            if on_start is not None:
                on_start(f"{len(client.scheduler_info()['workers'])} Dask worker(s) at "
                         f"{client.scheduler.address}")  # fmt: skip
            futures = {
                client.submit(_on_worker, job, str(out), tuple(formats), models_sha256,
                              key=f"case-{job.source.case_id}", pure=False): job
                for job in jobs
            }  # fmt: skip
            try:
                for future in as_completed(futures):
                    yield _record_of(future, futures[future])
            finally:
                client.cancel(list(futures))
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _record_of(future, job: Job) -> CaseRecord:
    error = future.exception()
    if error is None:
        return CaseRecord.from_json(future.result()) or CaseRecord(
            job.source.case_id, str(job.source.path), "failed", "the worker returned no record")
    message = f"{job.source.path}: the case failed on its Dask workers ({type(error).__name__}: "
    return CaseRecord(job.source.case_id, str(job.source.path), "failed", f"{message}{error})",
                      input_sha256=job.input_sha256)  # fmt: skip
