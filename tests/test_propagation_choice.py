"""Per-task propagation settings: chosen on validation cases, carried by the prompter's card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from automedseg.cli import main
from automedseg.errors import WeightsError
from automedseg.pipeline.propagate import settings_of
from automedseg.prompt.base import card_propagation
from automedseg.train.propagation import ReusedEncodings, choose_propagation, label_dice
from automedseg.types import Boxes
from test_propagate import ThresholdSegmenter  # noqa: I001

FULL, TOP_HALF = (11, 11, 21, 21), (11, 11, 21, 16)


class PartialFinder:
    """Sees the whole disk on plane 4 and only its top half elsewhere: snapping to its boxes
    cuts the object in half. The plane index is read from pixel (0, 0)."""

    uses_embedding = False
    labels = {1: "thing"}
    score_threshold = 0.5

    def find(self, image, embedding=None):
        z = round(float(image[0, 0]) * 100)
        if not 1 <= z <= 8:
            return Boxes(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))
        box, score = (FULL, 0.9) if z == 4 else (TOP_HALF, 0.6)
        return Boxes(np.array([box], float), np.array([1]), np.array([score]))


def disk_case():
    volume = np.zeros((10, 32, 32), np.float32)
    yy, xx = np.mgrid[:32, :32]
    truth = np.zeros(volume.shape, np.uint8)
    for z in range(1, 9):
        truth[z][(yy - 16) ** 2 + (xx - 16) ** 2 <= 25] = 1
    volume[truth > 0] = 1.0
    volume[:, 0, 0] = np.arange(10) / 100  # the plane index, for the stand-in prompter
    return volume, truth


def test_the_setting_that_does_not_snap_to_half_boxes_is_chosen_and_planes_encode_once():
    segmenter = ThresholdSegmenter()
    entry = choose_propagation(PartialFinder(), segmenter, iter([disk_case()]))
    dice = entry["val_dice"]
    assert dice["snap_iou 0.3"] < 0.8  # the half boxes (IoU 0.39 with the carried box) win
    assert dice["snap_iou 0.5"] > 0.95 and dice["snap off"] > 0.95
    assert dice["per plane"] < 0.8  # each plane from its own (half) box
    assert entry["settings"] == {"snap": True, "snap_iou": 0.5} and entry["cases"] == 1
    assert segmenter.encodes == 10  # five candidates, each plane encoded once


def test_reused_encodings_encode_each_distinct_plane_once():
    inner = ThresholdSegmenter()
    reused = ReusedEncodings(inner)
    a, b = np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32)
    for plane in (a, b, a, b, a):
        reused.set_image(plane)
    assert inner.encodes == 2 and reused.inner.image is a


def test_label_dice_scores_only_labels_the_truth_has():
    truth = np.array([[1, 1, 0, 0]])
    assert label_dice(np.array([[1, 0, 0, 2]]), truth, [1, 2]) == [pytest.approx(2 / 3)]


def test_no_cases_is_an_error():
    with pytest.raises(ValueError, match="no validation cases"):
        choose_propagation(PartialFinder(), ThresholdSegmenter(), iter([]))


def test_card_settings_are_checked_and_reach_the_prompter(tmp_path):
    good = {"propagation": {"settings": {"snap": False}}}
    assert card_propagation(good, "c.json") == {"snap": False}
    per_plane = {"propagation": {"settings": {"follow": False}}}
    assert card_propagation(per_plane, "c.json") == {"follow": False}
    assert card_propagation({}, "c.json") == {}
    for bad in ({"snap": "no"}, {"follow": 0}, {"snap_iou": 1.5}, {"jump": True}, ["snap"]):
        with pytest.raises(WeightsError, match="propagation settings"):
            card_propagation({"propagation": {"settings": bad}}, "c.json")

    class WithSettings:
        propagation = {"snap_iou": 0.7}

    assert settings_of(WithSettings()) == {"snap_iou": 0.7} and settings_of(object()) == {}


def test_head_card_settings_load_and_the_cli_refuses_2d_data(tmp_path, capsys):
    from automedseg.checkpoints import save_checkpoint
    from automedseg.prompt.head import EmbeddingHead, load_head_prompter

    head = EmbeddingHead(num_classes=1, width=8, depth=1)
    card = {"kind": "head", "architecture": {"num_classes": 1, "width": 8, "depth": 1},
            "labels": {"1": "thing"}, "score_threshold": 0.5,
            "propagation": {"settings": {"snap": False}}}  # fmt: skip
    path = save_checkpoint(tmp_path / "prompter.safetensors", head.state_dict(), card)
    assert load_head_prompter(path).propagation == {"snap": False}

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "images" / "a.png")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(data / "masks" / "a.png")
    before = path.read_text()
    code = main(["train", "propagation", "--prompter", str(path), "--data", str(data)])
    assert code != 0 and "not 2D" in capsys.readouterr().err
    assert path.read_text() == before and json.loads(before)["propagation"]
