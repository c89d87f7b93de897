"""Tasks: what a task folder holds, the shipped tasks' descriptions, and the one assembly path
(``tasks.load_models``) that every runner uses."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

import automedseg
from automedseg.api import segment_files
from automedseg.checkpoints import read_card
from automedseg.errors import AutomedsegError
from automedseg.prompt.oracle import FixedBoxes
from automedseg.tasks import (
    MODELS_DIR,
    Models,
    Task,
    embedding_mismatch,
    get_task,
    load_models,
    resolve_task,
    shipped_tasks,
    task_in,
    task_of_card,
)
from automedseg.types import Boxes
from conftest import EXAMPLES, BoxFiller  # noqa: I001

ABOUT_FIELDS = ("name", "modality", "input", "labels", "training_data", "intended_use")


def write_card(path, **fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": "head", "weights_file": "w.safetensors", **fields}))
    return path


def test_a_task_folder_gives_its_cards_delta_and_about(tmp_path):
    write_card(tmp_path / "prompter.json", labels={"1": "label1"})
    about = {"name": "liver", "labels": {"1": "liver"}}
    (tmp_path / "task.json").write_text(json.dumps(about))
    task = task_in(tmp_path)
    assert (task.name, task.delta, task.model_set) == ("liver", None, None)
    assert task.labels == {1: "liver"}  # task.json's names before the card's
    write_card(tmp_path / "segmenter.json", method="adapter")
    assert task_in(tmp_path).delta == tmp_path / "segmenter.json"


def test_every_shipped_task_says_what_it_is_for():
    tasks = shipped_tasks()
    assert {"polyp", "hippocampus", "lungs", "larynx", "brain-tumour"} <= set(tasks)
    for name, task in tasks.items():
        missing = [f for f in ABOUT_FIELDS if not task.about.get(f)]
        assert not missing, f"{name}/task.json lacks {missing}"
        card = read_card(task.prompter)
        assert set(task.labels) == {int(v) for v in card["labels"]}, name
        assert not any(n.startswith("label") for n in task.labels.values()), name
        text = (MODELS_DIR / name / "prompter.json").read_text()
        assert "/work/" not in text and "runs/" not in text and "../" not in text, name
    assert get_task("hippocampus").labels == {
        1: "anterior hippocampus", 2: "posterior hippocampus"
    }  # fmt: skip


def test_unknown_task_and_both_task_and_card_are_clear_errors(tmp_path):
    with pytest.raises(AutomedsegError, match="unknown task 'liver'.*polyp"):
        get_task("liver")
    with pytest.raises(AutomedsegError, match="either a task or a prompter card"):
        resolve_task("polyp", tmp_path / "prompter.json")
    assert resolve_task(None, None) is None


def test_a_copied_card_runs_with_the_delta_it_was_trained_with(tmp_path):
    shipped = get_task("hippocampus")
    for path in shipped.prompter.parent.iterdir():
        if path.is_file():  # the card, weights and delta; not the OpenVINO set's folder
            shutil.copy(path, tmp_path / path.name)
    task = task_of_card(tmp_path / "prompter.json")
    assert task.delta == tmp_path / "segmenter.json"
    assert task_of_card(shipped.prompter) == shipped
    # a delta whose SHA-256 is not the recorded one is not used
    card = json.loads((tmp_path / "segmenter.json").read_text())
    (tmp_path / "segmenter.json").write_text(json.dumps({**card, "sha256": "0" * 64}))
    assert task_of_card(tmp_path / "prompter.json").delta is None


def test_a_head_warns_when_it_reads_another_embedding_than_it_was_trained_on():
    task = get_task("hippocampus")
    prompter, delta = read_card(task.prompter), read_card(task.delta)
    assert embedding_mismatch(prompter, delta) is None
    assert "frozen encoder" in embedding_mismatch(prompter, None)
    assert embedding_mismatch(read_card(get_task("polyp").prompter), None) is None


def test_runtime_choices_that_cannot_work_are_refused_before_loading():
    with pytest.raises(AutomedsegError, match="unknown segmenter"):
        load_models("polyp", segmenter="sam3")
    with pytest.raises(AutomedsegError, match="does not take"):
        load_models("polyp", runtime="int8", segmenter_weights="delta.json")


def test_segment_files_runs_the_models_it_is_given_and_names_their_labels(tmp_path):
    task = Task("liver", None, about={"labels": {"1": "liver"}})
    finder = FixedBoxes(Boxes.from_list([(1, 1, 3, 2)]))
    image = tmp_path / "scan.png"
    from PIL import Image as PILImage

    PILImage.fromarray(np.arange(60, dtype=np.uint8).reshape(6, 10) * 4).save(image)
    models = Models(finder, BoxFiller(), "torch", task)
    outcomes = segment_files([image], tmp_path / "out", models=models, progress=False)
    assert [o.error for o in outcomes] == [None]
    result = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert [o["label_name"] for o in result["objects"]] == ["liver"]
    mask = np.asarray(PILImage.open(tmp_path / "out" / "scan_mask.png"))
    assert mask.sum() == 3 * 2 and mask[1:3, 1:4].all()


def test_the_package_exports_its_public_api_lazily():
    assert automedseg.load_models is load_models
    assert "segment_image" in dir(automedseg)
    with pytest.raises(AttributeError):
        automedseg.no_such_name  # noqa: B018


@pytest.mark.slow
def test_train_propagation_chooses_on_the_embedding_of_the_tasks_adapter_delta(tmp_path):
    """``train propagation`` on a hippocampus card runs LiteMedSAM with the task's adapters
    (it once ran a plain LiteMedSAM and chose on the wrong embedding)."""
    from automedseg.train.propagation import tune_card

    shipped = get_task("hippocampus")
    for path in shipped.prompter.parent.iterdir():
        if path.is_file():  # the card, weights and delta; not the OpenVINO set's folder
            shutil.copy(path, tmp_path / path.name)
    data = tmp_path / "data"
    for folder in ("imagesTr", "labelsTr"):  # 6 middle slices of the example: seconds
        source = nib.load(EXAMPLES / "msd_hippocampus" / folder / "hippocampus_001.nii.gz")
        (data / folder).mkdir(parents=True)
        nib.save(source.slicer[:, :, 14:20], data / folder / "hippocampus_001.nii.gz")
    entry = tune_card(tmp_path / "prompter.json", data, progress=False, runtime="torch")
    delta_sha = read_card(shipped.delta)["sha256"]
    assert entry["chosen_on"]["segmenter"] == f"LiteMedSAM + adapter delta {delta_sha[:12]}"
    assert read_card(tmp_path / "prompter.json")["propagation"] == entry


def test_every_shipped_task_codes_its_labels_for_dicom():
    for name, task in shipped_tasks().items():
        codes = task.about.get("codes", {})
        assert set(codes) == set(task.about["labels"]), name
        for entry in codes.values():
            for part in ("category", "type"):
                value, scheme, meaning = entry[part]
                assert value.isdigit() and scheme == "SCT" and meaning, (name, entry)
