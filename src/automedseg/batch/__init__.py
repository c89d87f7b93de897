"""Cohorts: every case of a folder or CSV list through a task's models, resumable, locally or
on Dask distributed (``run_batch``)."""

from automedseg.batch.engines import ENGINES, ModelSpec
from automedseg.batch.run import BatchSummary, run_batch

__all__ = ["ENGINES", "BatchSummary", "ModelSpec", "run_batch"]
