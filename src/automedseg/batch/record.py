"""What a batch run records per case: the manifest row, its label statistics and, for 2D,
its COCO annotations. A finished case keeps its record in ``<out>/cases/<id>/case.json``; a
rerun reads it back to skip the case."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CASE_FILE = "case.json"
MANIFEST_COLUMNS = ("case_id", "input", "status", "error", "seconds", "objects", "flags",
                    "input_sha256", "models_sha256")  # fmt: skip
STATISTICS_COLUMNS = ("case_id", "label", "label_name", "voxels", "volume_ml", "area_mm2",
                      "mean_intensity", "std_intensity")  # fmt: skip
STATUSES = ("ok", "failed", "skipped")


@dataclass
class CaseRecord:
    case_id: str
    input: str
    status: str
    """``ok`` (segmented now), ``failed`` (error says why) or ``skipped`` (done before with
    the same input and models)."""
    error: str = ""
    seconds: float = 0.0
    objects: int = 0
    flags: list[str] = field(default_factory=list)
    """Quality-control flags, e.g. ``nothing_found``."""
    input_sha256: str = ""
    models_sha256: str = ""
    statistics: list[dict[str, Any]] = field(default_factory=list)
    """One row per label (``STATISTICS_COLUMNS`` without ``case_id``)."""
    coco: dict[str, Any] | None = None
    """For a 2D case: ``file_name``, ``size`` (H, W) and its COCO ``annotations``."""

    def row(self) -> dict[str, Any]:
        """Its manifest row."""
        return {**asdict(self), "flags": ";".join(self.flags), "seconds": round(self.seconds, 3)}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseRecord | None:
        """The record stored in a case's folder, or None when it is not one."""
        try:
            record = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None
        return record if record.status in STATUSES and record.case_id else None

    def statistics_rows(self) -> list[dict[str, Any]]:
        return [{"case_id": self.case_id, **row} for row in self.statistics]
