"""benchmarks/compare.py: the comparison table is built from stored run files only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "compare.py"


@pytest.fixture
def compare():
    spec = importlib.util.spec_from_file_location("compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(folder: Path, modes: dict, **extra) -> Path:
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"modes": modes, **extra}))
    rows = ["case_id,mode,label,ms_io,ms_prompter,ms_encoder,ms_decoder"]
    for case, ms in (("a", 10), ("b", 30), ("c", 1000)):  # per case, two labels each
        rows += [f"{case},auto,{label},1,2,{ms},7" for label in (1, 2)]
    rows += ["a,predictions,1,,,,"]
    (folder / "per_case.csv").write_text("\n".join(rows) + "\n")
    return folder


def mode(dice, iou=0.5, ms=100.0, rss=900.0):
    return {"dice_mean": dice, "iou_mean": iou, "n_cases": 3, "ms_per_image_median": ms,
            "peak_rss_mb": rss}  # fmt: skip


def test_rows_come_from_the_runs_and_timing_replaces_speed(compare, tmp_path, monkeypatch, capsys):
    ours = summary(tmp_path / "ours", {"auto": mode(0.81), "oracle": mode(0.93)},
                   models_mb={"a": 1.25, "b": 2.0}, threads=1)  # fmt: skip
    other = summary(tmp_path / "nn", {"predictions": mode(0.77, ms=None, rss=None)})
    timing = tmp_path / "t.json"
    speed = {"float32_mb": 118.0, "ms_per_image_median": 4321.0, "peak_rss_mb": 2000.0,
             "torch_threads": 1, "cases": 5}  # fmt: skip
    timing.write_text(json.dumps(speed))
    budget = tmp_path / "b.json"
    budget.write_text(json.dumps({"training_seconds": 7200, "epochs_done": 5, "epochs": 5,
                                  "iterations_per_epoch": 25, "torch_threads": 1}))  # fmt: skip
    out = tmp_path / "table.md"
    monkeypatch.setattr("sys.argv", ["compare.py", "--title", "T", "--eval", f"ours={ours}",
                                     "--eval", f"nn={other}", "--timing", f"nn={timing}",
                                     "--budget", f"nn={budget}", "--out", str(out)])  # fmt: skip
    compare.main()
    rows = out.read_text().splitlines()
    assert rows[4].startswith("| ours | 0.810 / 0.500 | 0.930 | 3.2 | no | 40 | 900 | 1 |")
    assert rows[5].startswith("| nn | 0.770 / 0.500 | – | 118.0 | no | 4321 | 2000 | 1 |")
    assert "trained 5 of 5 epochs × 25 steps, 2.0 h" in rows[5]


def test_a_timing_without_its_row_is_an_error(compare, tmp_path, monkeypatch):
    timing = tmp_path / "t.json"
    timing.write_text("{}")
    monkeypatch.setattr("sys.argv", ["compare.py", "--title", "T", "--timing", f"x={timing}"])
    with pytest.raises(SystemExit, match="no --eval row"):
        compare.main()
