"""Where the cases of a batch run: here, one after another (``local``), or on Dask
distributed workers (``dask``, in ``batch.on_dask``), each loading the models once."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from automedseg.batch.case import process_case
from automedseg.batch.record import CaseRecord
from automedseg.io import Source
from automedseg.tasks import Models, load_models

ENGINES = ("local", "dask")


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads (``tasks.load_models``): small and picklable."""

    task: str | None = None
    card: str | None = None
    runtime: str | None = None
    model_set: str | None = None
    threads: int = 1

    def load(self) -> Models:
        return load_models(self.task, card=self.card, runtime=self.runtime,
                           model_set=self.model_set, threads=self.threads)  # fmt: skip


@dataclass(frozen=True)
class Job:
    """One case to run, with what decides whether it is already done."""

    source: Source
    input_sha256: str


def run_local(
    jobs: list[Job], models: Models, out: Path, formats: Collection[str], models_sha256: str
) -> Iterator[CaseRecord]:
    for job in jobs:
        yield process_case(job.source, models, out, formats, models_sha256, job.input_sha256)


