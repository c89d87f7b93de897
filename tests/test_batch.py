"""Cohorts (``automedseg batch``): discovery, resume, manifest, statistics, RTSTRUCT, COCO."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

from automedseg import io
from automedseg.batch import run_batch
from automedseg.cli import main
from automedseg.prompt.oracle import FixedBoxes
from automedseg.tasks import Models, Task
from automedseg.types import Boxes
from conftest import EXAMPLES, BoxFiller
from test_dicom_seg import ct_series  # noqa: I001
from test_io import write_ct_series  # noqa: I001

LABELS = {1: "lesion"}


def stand_in_models(box=(2, 1, 5, 3)) -> Models:
    task = Task("lesion", None, about={"labels": {"1": "lesion"}})
    return Models(FixedBoxes(Boxes.from_list([box]), LABELS), BoxFiller(), "torch", task)


def png(path: Path, shape=(8, 10), value=100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full(shape, value, np.uint8)
    pixels[0, 0] = 0  # not constant
    PILImage.fromarray(pixels).save(path)
    return path


def nifti(path: Path, shape=(3, 8, 10), spacing=(2.0, 0.5, 0.5)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    affine = np.diag([*reversed(spacing), 1.0])
    nib.save(nib.Nifti1Image(np.transpose(data, (2, 1, 0)), affine), path)
    return path


def cohort(root: Path) -> Path:
    png(root / "site_a" / "p1.png")
    png(root / "site_a" / "p2.png", value=50)
    nifti(root / "site_b" / "scan.nii.gz")
    (root / "site_b" / "notes.txt").write_text("not an image")
    (root / "bad").mkdir()
    (root / "bad" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return root


def manifest(out: Path) -> dict[str, dict]:
    with open(out / "manifest.csv", newline="") as f:
        return {row["case_id"]: row for row in csv.DictReader(f)}


def test_discovery_searches_folders_splits_dicom_series_and_reads_csv_lists(tmp_path):
    root = cohort(tmp_path / "in")
    write_ct_series(root / "site_c", n=3)  # two series in one folder
    for file in write_ct_series(tmp_path / "second", n=2).iterdir():
        file.rename(root / "site_c" / f"second_{file.name}")
    png(root / ".hidden" / "x.png")
    found = io.find_sources(root)
    ids = [s.case_id for s in found]
    assert ids[:4] == ["bad__broken", "site_a__p1", "site_a__p2", "site_b__scan"]
    series = [s for s in found if s.kind == "dicom"]
    assert sorted(len(s.files) for s in series) == [2, 3] and len(found) == 6
    assert all(s.case_id.startswith("site_c__series") for s in series)
    assert [s.kind for s in io.find_sources(root / "site_a", frames=True)] == ["frames"]

    listing = tmp_path / "list.csv"
    listing.write_text("path,case_id\nin/site_a/p1.png,first\nin/site_b/scan.nii.gz,\n")
    listed = io.find_sources(listing)
    assert [s.case_id for s in listed] == ["first", "site_b__scan"]
    assert listed[0].path == tmp_path / "in" / "site_a" / "p1.png"


def test_a_cohort_runs_resumes_and_records_every_case(tmp_path):
    root, out = cohort(tmp_path / "in"), tmp_path / "out"
    summary = run_batch(root, out, models=stand_in_models(), progress=False)
    rows = manifest(out)
    statuses = {k: r["status"] for k, r in rows.items()}
    assert statuses == {"bad__broken": "failed", "site_a__p1": "ok", "site_a__p2": "ok",
                        "site_b__scan": "ok"}  # fmt: skip
    assert "broken.nii.gz" in rows["bad__broken"]["error"]
    assert not (out / "cases" / "bad__broken").exists()  # nothing half-written
    assert (out / "cases" / "site_b__scan" / "site_b__scan_seg.nii.gz").is_file()
    assert summary.count("ok") == 3 and not summary.interrupted

    again = run_batch(root, out, models=stand_in_models(), progress=False)
    assert [r.status for r in again.records].count("skipped") == 3
    png(root / "site_a" / "p2.png", value=51)  # new content: done again
    third = run_batch(root, out, models=stand_in_models(), progress=False)
    assert {r.case_id: r.status for r in third.records}["site_a__p2"] == "ok"
    assert [r.status for r in third.records].count("skipped") == 2
    other_models = stand_in_models()
    other_models.runtime = "openvino"  # other models: every case is done again
    other = run_batch(root, out, models=other_models, progress=False)
    assert [r.status for r in other.records].count("ok") == 3
    forced = run_batch(root, out, models=stand_in_models(), force=True, progress=False)
    assert [r.status for r in forced.records].count("ok") == 3


def test_statistics_equal_the_label_maps_written(tmp_path):
    root, out = cohort(tmp_path / "in"), tmp_path / "out"
    run_batch(root, out, models=stand_in_models(), progress=False)
    with open(out / "statistics.csv", newline="") as f:
        rows = {r["case_id"]: r for r in csv.DictReader(f)}
    volume = nib.load(out / "cases" / "site_b__scan" / "site_b__scan_seg.nii.gz")
    labels = np.asarray(volume.dataobj)
    image = np.asarray(nib.load(root / "site_b" / "scan.nii.gz").dataobj)
    scan = rows["site_b__scan"]
    assert int(scan["voxels"]) == int((labels == 1).sum()) == 3 * 4 * 3
    assert float(scan["volume_ml"]) == pytest.approx((labels == 1).sum() * 0.5 * 0.5 * 2 / 1000)
    assert float(scan["mean_intensity"]) == pytest.approx(image[labels == 1].mean(), abs=1e-3)
    assert float(scan["std_intensity"]) == pytest.approx(image[labels == 1].std(ddof=1), abs=1e-3)
    assert scan["label_name"] == "lesion"
    mask = np.asarray(PILImage.open(out / "cases" / "site_a__p1" / "site_a__p1_mask.png"))
    p1 = rows["site_a__p1"]
    assert int(p1["voxels"]) == int(mask.sum()) and p1["area_mm2"] == ""  # PNG: no pixel size


class StopsAfter(BoxFiller):
    """A stand-in segmenter: Ctrl-C on the ``n``-th image."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.seen = n, 0

    def set_image(self, image: np.ndarray) -> None:
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt
        super().set_image(image)


def test_an_interrupted_run_leaves_whole_cases_only_and_the_rerun_does_each_once(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    for i in range(4):
        png(root / f"c{i}.png", value=40 + i)
    models = stand_in_models()
    models.segmenter = StopsAfter(3)
    first = run_batch(root, out, models=models, progress=False)
    assert first.interrupted and [r.status for r in first.records] == ["ok", "ok"]
    assert sorted(p.name for p in (out / "cases").iterdir()) == ["c0", "c1"]  # no temp left
    second = run_batch(root, out, models=stand_in_models(), progress=False)
    assert [r.status for r in second.records] == ["skipped", "skipped", "ok", "ok"]

    uninterrupted = tmp_path / "plain"
    run_batch(root, uninterrupted, models=stand_in_models(), progress=False)
    for i in range(4):
        name = f"c{i}/c{i}_mask.png"
        assert (out / "cases" / name).read_bytes() == (uninterrupted / "cases" / name).read_bytes()


def dicom_study(folder: Path) -> Path:
    """``ct_series`` with the study attributes a real CT series carries."""
    ct_series(folder)
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        ds.StudyDate, ds.StudyTime, ds.PatientName = "20260101", "120000", "Test^Patient"
        ds.save_as(file, enforce_file_format=True)
    return folder


def test_rtstruct_and_dicom_seg_name_the_tasks_labels(tmp_path):
    dicom_study(tmp_path / "in" / "ct")
    out = tmp_path / "out"
    summary = run_batch(tmp_path / "in", out, models=stand_in_models(),
                        formats=["rtstruct", "dicom-seg", "nifti"], progress=False)  # fmt: skip
    assert [r.status for r in summary.records] == ["ok"], summary.records[0].error
    case = out / "cases" / "ct"
    rt = pydicom.dcmread(case / "ct_rtstruct.dcm")
    assert rt.Modality == "RTSTRUCT"
    assert [roi.ROIName for roi in rt.StructureSetROISequence] == ["lesion"]
    assert len(rt.ROIContourSequence[0].ContourSequence) == 4  # one contour per slice
    seg = pydicom.dcmread(case / "ct_seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion"]
    assert not (case / "ct_overlay.png").exists()  # png not asked for


def test_coco_predictions_load_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    root, out = cohort(tmp_path / "in"), tmp_path / "out"
    run_batch(root, out, models=stand_in_models(), formats=["png", "coco"], progress=False)
    coco = COCO(str(out / "predictions_coco.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["lesion"]
    assert len(coco.getImgIds()) == 2  # the 2D cases only
    first = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    mask = np.asarray(PILImage.open(out / "cases" / "site_a__p1" / "site_a__p1_mask.png")) > 0
    np.testing.assert_array_equal(coco.annToMask(first).astype(bool), mask)


def test_the_cli_reports_bad_options_and_failed_cases(tmp_path, capsys):
    code = main(["batch", str(tmp_path), "--out", str(tmp_path / "o"), "--task", "polyp",
                 "--formats", "nifti,jpeg"])  # fmt: skip
    assert code == 2 and "unknown output format" in capsys.readouterr().err
    code = main(["batch", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                 "--task", "polyp"])  # fmt: skip
    assert code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_dask_local_cluster_segments_the_shipped_examples_like_the_local_engine(tmp_path):
    """Two worker processes, each loading the shipped polyp task once."""
    root = tmp_path / "in"
    shutil.copytree(EXAMPLES / "kvasir_seg" / "images", root)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dask_out, local_out = tmp_path / "dask", tmp_path / "local"
    summary = run_batch(root, dask_out, "polyp", engine="dask", workers=2, progress=False)
    assert sorted(r.status for r in summary.records) == ["failed", "ok", "ok"]
    run_batch(root, local_out, "polyp", progress=False)
    for case in (dask_out / "cases").iterdir():
        mask = f"{case.name}/{case.name}_mask.png"
        assert (case.parent / mask).read_bytes() == (local_out / "cases" / mask).read_bytes()
    record = json.loads((dask_out / "cases" / case.name / "case.json").read_text())
    assert record["status"] == "ok" and record["models_sha256"]
