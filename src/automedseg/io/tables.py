"""CSV tables: written whole (atomically), or appended to row by row as results arrive."""

from __future__ import annotations

import csv
import io as text_io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from automedseg.io._common import atomic_open


def _text(rows: Iterable[Mapping[str, object]], columns: Sequence[str], header: bool) -> str:
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")  # fmt: skip
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, object]], columns: Sequence[str]
) -> Path:
    """Write ``rows`` (dicts; keys outside ``columns`` are left out) as a CSV with a header."""
    path = Path(path)
    with atomic_open(path) as f:
        f.write(_text(rows, columns, header=True).encode("utf-8"))
    return path


class CsvLog:
    """A CSV file that grows by one flushed row per ``add``: a run's rows survive it being
    killed. Starts anew (header only) when opened."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.path, self.columns = Path(path), list(columns)
        write_csv(self.path, [], self.columns)

    def add(self, row: Mapping[str, object]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(_text([row], self.columns, header=False))
            f.flush()
            os.fsync(f.fileno())
