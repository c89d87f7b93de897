"""One case of a batch: read, segment, write its outputs into a temporary folder, then move
the folder into place (``<out>/cases/<case id>``) with its ``case.json``. Any failure is a
``failed`` record, never an exception: one bad case does not stop a cohort."""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

from automedseg import io
from automedseg.api import segment_loaded, write_result
from automedseg.batch.record import CASE_FILE, CaseRecord
from automedseg.batch.statistics import label_statistics
from automedseg.errors import AutomedsegError
from automedseg.io import Source
from automedseg.tasks import Models

CASES = "cases"


def case_folder(out: Path, case_id: str) -> Path:
    return Path(out) / CASES / case_id


def process_case(
    source: Source,
    models: Models,
    out: Path,
    formats: Collection[str],
    models_sha256: str,
    input_sha256: str,
) -> CaseRecord:
    """Segment ``source`` with ``models`` and write its folder; returns its record."""
    started = time.perf_counter()
    record = CaseRecord(source.case_id, str(source.path), "ok", input_sha256=input_sha256,
                        models_sha256=models_sha256)  # fmt: skip
    target = case_folder(out, source.case_id)
    temp = io.temp_folder(target)
    try:
        image = io.read_source(source)
        result = segment_loaded(image, models)
        names = models.labels
        write_result(image, result, temp, source.case_id, [], names, formats,
                     models.label_codes, models.description)  # fmt: skip
        record.objects = len(result.boxes)
        record.flags = list((result.qc or {}).get("flags", []))
        record.statistics = label_statistics(image, result.label_map, names)
        if "coco" in formats and image.spatial_dims == 2 and result.instance_map is not None:
            record.coco = {
                "file_name": str(source.path),
                "size": list(image.shape),
                "annotations": io.coco_annotations(result.instance_map, result.boxes.labels,
                                                   result.boxes.scores),  # fmt: skip
            }
        record.seconds = time.perf_counter() - started
        io.write_json(temp / CASE_FILE, record.to_json())
        io.replace_folder(temp, target)
    except AutomedsegError as error:
        record.status, record.error = "failed", str(error)
    except Exception as error:  # a bug or a library failure: the case fails, the run goes on
        record.status = "failed"
        record.error = f"{source.path}: unexpected {type(error).__name__}: {error}"
    finally:
        io.remove_folder(temp)  # gone after a successful move; what is left of a failure
    record.seconds = time.perf_counter() - started
    return record


def done_before(
    out: Path, case_id: str, input_sha256: str, models_sha256: str
) -> CaseRecord | None:
    """The record of a case finished earlier with this input and these models, if any."""
    stored = io.read_json_or_none(case_folder(out, case_id) / CASE_FILE)
    record = None if stored is None else CaseRecord.from_json(stored)
    if record is None or record.status != "ok":
        return None
    if (record.input_sha256, record.models_sha256) != (input_sha256, models_sha256):
        return None
    return record
