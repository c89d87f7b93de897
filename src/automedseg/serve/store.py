"""Durable jobs: one SQLite row per job, one folder of files per job.

    <data>/jobs.sqlite3           id, task, status, progress, error, file name, version, times
    <data>/jobs/<id>/input*       the upload as stored (``io.uploads``)
    <data>/jobs/<id>/v<N>.npz     the objects after each change: an instance map (object
                                  numbers 1..N) and each object's label, score, box, plane

A restarted server still lists every job: finished ones are served as they were; jobs still
queued are queued again; a job that was running is marked failed with the reason.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

STATUSES = ("queued", "running", "done", "failed")
_COLUMNS = ("id", "task", "status", "progress", "error", "filename", "version", "created",
            "updated")  # fmt: skip


@dataclass
class Job:
    id: str
    task: str
    status: str
    progress: float
    error: str
    filename: str
    version: int
    """The current objects are ``v<version>.npz``; 0 before the first result."""
    created: float
    updated: float

    def public(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Objects:
    """A job's objects: ``instances`` (the image's spatial shape, 0 = none, n = object n) and
    per object its ``labels``, ``scores``, XYXY ``boxes`` and the ``planes`` they were drawn or
    found on (-1 for a 2D image)."""

    instances: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    planes: np.ndarray

    def label_map(self) -> np.ndarray:
        values = np.concatenate([[0], self.labels]).astype(np.uint16)
        labels = values[self.instances]
        return labels.astype(np.uint8) if labels.max(initial=0) < 256 else labels


class JobStore:
    """Thread-safe: the API and the worker thread share one store."""

    def __init__(self, data: str | Path) -> None:
        self.root = Path(data)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, task TEXT, status TEXT, "
            "progress REAL, error TEXT, filename TEXT, version INTEGER, created REAL, "
            "updated REAL)"
        )
        self._db.commit()

    def folder(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def new_id(self) -> str:
        return secrets.token_hex(8)

    def add(self, job_id: str, task: str, filename: str) -> Job:
        now = time.time()
        job = Job(job_id, task, "queued", 0.0, "", filename, 0, now, now)
        with self._lock:
            self._db.execute(f"INSERT INTO jobs VALUES ({','.join('?' * len(_COLUMNS))})",
                             tuple(asdict(job).values()))  # fmt: skip
            self._db.commit()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM jobs WHERE id = ?",
                                   (job_id,)).fetchone()  # fmt: skip
        return None if row is None else Job(*row)

    def all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {','.join(_COLUMNS)} FROM jobs ORDER BY created"
            ).fetchall()
        return [Job(*row) for row in rows]

    def update(self, job_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        names = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {names} WHERE id = ?", (*fields.values(), job_id))
            self._db.commit()

    def recover(self) -> list[str]:
        """After a restart: running jobs are failed (with the reason), queued ones returned to
        be queued again (oldest first)."""
        for job in self.all():
            if job.status == "running":
                reason = "the server stopped while this job was running; upload it again"
                self.update(job.id, status="failed", error=reason)
        return [job.id for job in self.all() if job.status == "queued"]

    def input_path(self, job_id: str) -> Path | None:
        found = sorted(self.folder(job_id).glob("input*"))
        return found[0] if found else None

    def save_objects(self, job_id: str, objects: Objects) -> int:
        """Store ``objects`` as the job's next version; returns its number."""
        job = self.get(job_id)
        version = (job.version if job else 0) + 1
        path = self.folder(job_id) / f"v{version}.npz"
        temp = path.with_suffix(".tmp.npz")
        np.savez_compressed(temp, **asdict(objects))
        temp.replace(path)
        self.update(job_id, version=version)
        return version

    def objects(self, job_id: str, version: int | None = None) -> Objects | None:
        job = self.get(job_id)
        version = job.version if version is None and job else version
        path = self.folder(job_id) / f"v{version}.npz"
        if not version or not path.is_file():
            return None
        with np.load(path) as stored:
            return Objects(**{k: stored[k] for k in Objects.__dataclass_fields__})

    def save_qc(self, job_id: str, qc: dict) -> None:
        """The automatic run's quality control (``pipeline.qc``)."""
        (self.folder(job_id) / "qc.json").write_text(json.dumps(qc))

    def qc(self, job_id: str) -> dict | None:
        path = self.folder(job_id) / "qc.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def undo(self, job_id: str) -> bool:
        """Back to the previous version; False when there is none."""
        job = self.get(job_id)
        if job is None or job.version <= 1:
            return False
        (self.folder(job_id) / f"v{job.version}.npz").unlink(missing_ok=True)
        self.update(job_id, version=job.version - 1)
        return True
