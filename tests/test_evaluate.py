"""Data set layouts and the evaluation run, on tiny folders built in tmp_path."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image as PILImage

from automedseg import io
from automedseg.data.datasets import (
    LabelChoice,
    class_names,
    find_cases,
    load_case,
    parse_label_values,
)
from automedseg.errors import InputError
from automedseg.types import Geometry
from conftest import EXAMPLES  # noqa: I001


def touch_png(path, value=1, shape=(4, 5)):
    io.write_label_png(path, np.full(shape, value, np.uint8))


def test_2d_layout_pairs_by_stem_and_records_orphans(tmp_path):
    for name in ("a.png", "b.jpg", "c.png"):
        (tmp_path / "images").mkdir(exist_ok=True)
        touch_png(tmp_path / "images" / name)
    (tmp_path / "masks").mkdir()
    touch_png(tmp_path / "masks" / "a.png")
    touch_png(tmp_path / "masks" / "b.png")
    touch_png(tmp_path / "masks" / "d.png")
    data = find_cases(tmp_path)
    assert data.layout == "2d"
    problems = {c.case_id: c.problem for c in data.cases}
    assert problems == {"a": None, "b": None, "c": "no mask", "d": "mask without image"}


def test_nnunet_layout_groups_channels_and_reads_dataset_json(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for name in ("case1_0000.nii.gz", "case1_0001.nii.gz", "case2_0000.nii.gz"):
        (tmp_path / "imagesTr" / name).write_bytes(b"x")
    for name in ("case1.nii.gz", "case2.nii.gz"):
        (tmp_path / "labelsTr" / name).write_bytes(b"x")
    meta = {"channel_names": {"0": "FLAIR", "1": "T1c"}, "labels": {"background": 0, "tumour": 1}}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    data = find_cases(tmp_path)
    assert data.layout == "nnunet"
    assert [c.case_id for c in data.cases] == ["case1", "case2"]
    assert [p.name for p in data.cases[0].images] == ["case1_0000.nii.gz", "case1_0001.nii.gz"]
    assert data.channel_names == ["FLAIR", "T1c"]
    assert data.label_names == {0: "background", 1: "tumour"}


def test_split_files_select_cases(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in "abc":
        touch_png(tmp_path / "images" / f"{name}.png")
        touch_png(tmp_path / "masks" / f"{name}.png")
    (tmp_path / "val.txt").write_text("# validation\na\nc\n")
    (tmp_path / "val.json").write_text('["b"]')
    assert [c.case_id for c in find_cases(tmp_path, tmp_path / "val.txt").cases] == ["a", "c"]
    assert [c.case_id for c in find_cases(tmp_path, tmp_path / "val.json").cases] == ["b"]


def test_unknown_layout_and_empty_data_set_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no known data layout"):
        find_cases(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(InputError, match="no cases found"):
        find_cases(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        find_cases(tmp_path / "nowhere")


def test_sequence_layout_stacks_frames_in_name_order(tmp_path):
    for stem in ["0003", "0001", "0002"]:
        (tmp_path / "frames" / "seq1").mkdir(parents=True, exist_ok=True)
        (tmp_path / "masks" / "seq1").mkdir(parents=True, exist_ok=True)
        frame = np.full((6, 8, 3), int(stem) * 50, np.uint8)
        PILImage.fromarray(frame).save(tmp_path / "frames" / "seq1" / f"{stem}.png")
        touch_png(tmp_path / "masks" / "seq1" / f"{stem}.png", value=int(stem), shape=(6, 8))
    data = find_cases(tmp_path)
    assert data.layout == "sequences"
    image, truth = load_case(data.cases[0], layout="sequences")
    assert image.shape == (3, 6, 8) and image.channels == 3
    assert image.array[:, 0, 0, 0].tolist() == [50, 100, 150]
    assert truth[:, 0, 0].tolist() == [1, 2, 3]


def test_mismatched_volume_and_label_shapes_are_reported(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    io.write_nifti(
        tmp_path / "imagesTr" / "c_0000.nii.gz", np.ones((3, 4, 5), np.uint8), Geometry()
    )
    io.write_nifti(tmp_path / "labelsTr" / "c.nii.gz", np.ones((3, 4, 6), np.uint8), Geometry())
    case = find_cases(tmp_path).cases[0]
    with pytest.raises(InputError, match="does not match"):
        load_case(case, layout="nnunet")


def test_evaluate_scores_good_cases_and_reports_bad_ones(tmp_path):
    from automedseg.evaluate.runner import evaluate

    data = tmp_path / "data"
    shutil.copytree(EXAMPLES / "kvasir_seg", data)
    touch_png(data / "images" / "orphan.png")  # image without a mask
    touch_png(data / "images" / "small.png", shape=(10, 10))
    touch_png(data / "masks" / "small.png", shape=(12, 10))  # shape mismatch
    touch_png(data / "images" / "broken.png", shape=(10, 10))
    (data / "masks" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # corrupt mask
    summary = evaluate(data, tmp_path / "out", progress=False)
    oracle = summary["modes"]["oracle"]
    assert oracle["n_cases"] == 2 and oracle["n_failed"] == 3
    assert oracle["dice_mean"] > 0.9
    for key in ("dice_median", "iou_mean", "hd95_mean", "nsd_mean", "ms_per_image_median",
                "peak_rss_mb"):  # fmt: skip
        assert oracle[key] is not None
    assert summary["models_mb"]["litemedsam"] > 30
    with (tmp_path / "out" / "per_case.csv").open() as handle:
        rows = {r["case_id"]: r for r in csv.DictReader(handle)}
    assert rows["orphan"]["error"].endswith("no mask")
    assert "does not match" in rows["small"]["error"]
    assert "broken.png" in rows["broken"]["error"]
    assert rows["cju0tl3uz8blh0993wxvn7ly3"]["error"] == ""
    assert (tmp_path / "out" / "report.md").read_text().count("| oracle |") >= 2
    assert (tmp_path / "out" / "dice.png").is_file()


def test_merge_labels_turns_every_label_into_one_foreground(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    labels = np.array([[[0, 1], [2, 4]]], np.uint8)
    io.write_nifti(tmp_path / "imagesTr" / "c_0000.nii.gz", labels + 10, Geometry())
    io.write_nifti(tmp_path / "labelsTr" / "c.nii.gz", labels, Geometry())
    case = find_cases(tmp_path).cases[0]
    _, kept = load_case(case, layout="nnunet")
    _, merged = load_case(case, layout="nnunet", label_choice=LabelChoice(merge=True))
    assert kept.tolist() == [[[0, 1], [2, 4]]] and merged.tolist() == [[[0, 1], [1, 1]]]
    _, chosen = load_case(case, layout="nnunet", label_choice=LabelChoice(keep=(1, 4)))
    assert chosen.tolist() == [[[0, 1], [0, 4]]]
    _, both = load_case(case, layout="nnunet", label_choice=LabelChoice((2, 4), merge=True))
    assert both.tolist() == [[[0, 0], [1, 1]]]


def test_label_values_and_class_names():
    assert parse_label_values("3,1, 3") == (1, 3)
    for bad in ("", "a,b", "0,1", "-2"):
        with pytest.raises(InputError, match="--labels"):
            parse_label_values(bad)
    names = {1: "vocal folds", 2: "tissue", 3: "glottal space"}
    assert class_names(names, LabelChoice((1, 3))) == names
    assert class_names(names, LabelChoice((3,), merge=True)) == {1: "glottal space"}
    assert class_names(names, LabelChoice(merge=True)) == {1: "foreground"}


def test_automatic_volume_is_propagated_and_scored_per_plane():
    from automedseg.evaluate.runner import PlaneTimes, predict_case
    from automedseg.types import Image
    from test_propagate import OnePlaneFinder, ThresholdSegmenter, moving_disk

    volume = moving_disk()
    truth = (volume > 0.5).astype(np.uint8)
    times = PlaneTimes()
    finder = OnePlaneFinder({6: [(8, 12, 16, 20, 1, 0.9)]})
    found = predict_case(Image(volume, 3), truth, finder, ThresholdSegmenter(), times, True)
    np.testing.assert_array_equal(found.labels, truth)
    assert found.detection == (8, 0, 0)  # the disk found on each of its 8 slices
    assert len(times.encoder) == len(volume)
    finder = OnePlaneFinder({6: [(8, 12, 16, 20, 1, 0.9)]})
    alone = predict_case(Image(volume, 3), truth, finder, ThresholdSegmenter(), times, False)
    assert alone.labels.sum() == truth[6].sum()  # without propagation only slice 6 is found
    assert alone.detection == (1, 0, 7)


def test_an_interrupted_run_keeps_the_cases_done_so_far(tmp_path, litemedsam, monkeypatch):
    import automedseg.segment.litemedsam as module
    from automedseg.evaluate import runner

    monkeypatch.setattr(
        module, "load_litemedsam", lambda weights=None, sha256=None, delta=None: litemedsam
    )
    real = runner.Evaluation.case_rows
    calls = []

    def stop_at_second(self, case):
        calls.append(case.case_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, case)

    monkeypatch.setattr(runner.Evaluation, "case_rows", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        runner.evaluate(EXAMPLES / "kvasir_seg", tmp_path, progress=False)
    with (tmp_path / "per_case.csv").open() as handle:
        assert [r["case_id"] for r in csv.DictReader(handle)] == [calls[0]]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["modes"]["oracle"]["n_cases"] == 1


def test_another_tools_predictions_are_scored_with_the_same_metrics(tmp_path):
    from automedseg.evaluate.runner import evaluate

    for folder in ("images", "masks", "theirs"):
        (tmp_path / folder).mkdir()
    truth = np.zeros((20, 20), np.uint8)
    truth[5:15, 5:15] = 1
    quarter = np.zeros_like(truth)
    quarter[5:10, 5:10] = 1  # a quarter of the square: Dice 2*25/(100+25), box IoU 0.25
    for name, predicted in (("a", truth), ("b", quarter)):
        PILImage.fromarray(truth * 200).save(tmp_path / "images" / f"{name}.png")
        io.write_label_png(tmp_path / "masks" / f"{name}.png", truth)
        io.write_label_png(tmp_path / "theirs" / f"{name}.png", predicted)
    summary = evaluate(tmp_path, tmp_path / "out", predictions=tmp_path / "theirs", progress=False)
    scored = summary["modes"]["predictions"]
    assert scored["dice_mean"] == pytest.approx((1 + 50 / 125) / 2, abs=1e-4)
    assert (scored["detection"]["tp"], scored["detection"]["fp"]) == (1, 1)
    (tmp_path / "theirs" / "b.png").unlink()
    summary = evaluate(tmp_path, tmp_path / "out2", predictions=tmp_path / "theirs", progress=False)
    assert summary["failed_cases"] == ["b"]
    rows = list(csv.DictReader((tmp_path / "out2" / "per_case.csv").open()))
    assert "no prediction named b" in next(r["error"] for r in rows if r["case_id"] == "b")


def test_automatic_rows_and_the_report_carry_the_cases_qc_flags(tmp_path):
    from automedseg.evaluate.runner import evaluate
    from automedseg.prompt.oracle import FixedBoxes
    from automedseg.tasks import Models
    from automedseg.types import Boxes
    from conftest import BoxFiller

    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    truth = np.zeros((20, 20), np.uint8)
    truth[0:8, 0:8] = 1  # at the image's edge, where the box will be too
    for name in ("a", "b"):
        PILImage.fromarray(truth * 200).save(tmp_path / "images" / f"{name}.png")
        io.write_label_png(tmp_path / "masks" / f"{name}.png", truth)
    models = Models(FixedBoxes(Boxes.from_list([(0, 0, 7, 7)])), BoxFiller(), "torch")
    summary = evaluate(tmp_path, tmp_path / "out", prompts="both", models=models,
                       progress=False)  # fmt: skip
    assert summary["modes"]["auto"]["qc_flags"] == {"touches_border": 2}
    assert summary["modes"]["oracle"]["qc_flags"] == {}  # QC is for automatic results
    rows = list(csv.DictReader((tmp_path / "out" / "per_case.csv").open()))
    assert {(r["mode"], r["qc_flags"]) for r in rows} == {("auto", "touches_border"),
                                                          ("oracle", "")}  # fmt: skip
    assert "QC flags (auto prompts; cases of 2" in (tmp_path / "out" / "report.md").read_text()
