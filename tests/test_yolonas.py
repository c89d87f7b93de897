"""YOLO-NAS prompter and its training, on random weights and tiny synthetic data."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from automedseg.checkpoints import save_checkpoint
from automedseg.data.datasets import LabelChoice
from automedseg.errors import InputError, WeightsError
from automedseg.prompt.yolonas import (
    YoloNasPrompter,
    build_yolonas,
    letterbox,
    load_yolonas_prompter,
    to_pixel_boxes,
)
from automedseg.train.box_annotations import (
    class_order,
    read_box_annotations,
    read_coco_boxes,
    read_kvasir_boxes,
    read_yolo_boxes,
)
from automedseg.train.yolonas import learning_rate, train_yolonas
from automedseg.train.yolonas_data import as_continuous, as_inclusive, load_samples


@pytest.fixture(scope="module")
def two_class_model():
    torch.manual_seed(0)
    return build_yolonas(2)


def squares_dataset(root, n=6, size=64, empty=False):
    """n gray images with one bright square each (label 1) and its mask."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = (rng.random((size, size)) * 40).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        if not empty:
            x, y, side = rng.integers(4, 30), rng.integers(4, 30), rng.integers(14, 26)
            image[y : y + side, x : x + side] = 220
            mask[y : y + side, x : x + side] = 255
        PILImage.fromarray(image).save(root / "images" / f"case{i}.png")
        PILImage.fromarray(mask).save(root / "masks" / f"case{i}.png")
    return root


# --- prompter -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(50, 70), (40, 30, 3)])
def test_find_on_random_weights_gives_valid_boxes_inside_the_image(two_class_model, shape):
    prompter = YoloNasPrompter(
        two_class_model, {3: "a", 7: "b"}, input_size=64, score_threshold=0.0
    )
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    boxes = prompter.find(image)
    assert 0 < len(boxes) <= prompter.max_detections
    h, w = shape[:2]
    x0, y0, x1, y1 = boxes.xyxy.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w - 1).all() and (y1 <= h - 1).all()
    assert (x1 >= x0).all() and (y1 >= y0).all()
    assert np.array_equal(boxes.xyxy, np.round(boxes.xyxy))
    assert set(boxes.labels) <= {3, 7}
    assert ((boxes.scores >= 0) & (boxes.scores <= 1)).all()


def test_letterbox_pads_bottom_right_and_boxes_map_back_exactly():
    image = np.ones((50, 100), np.float32)
    canvas, (sx, sy) = letterbox(image, 64)
    assert canvas.shape == (3, 64, 64) and (sx, sy) == (0.64, 32 / 50)
    assert canvas[:, :32, :].min() > 0.999 and canvas[:, 32:, :].max() == 0.0
    # inclusive box (10, 20)-(29, 39) = continuous [10, 30) x [20, 40), scaled to input pixels
    continuous = np.array([[10 * sx, 20 * sy, 30 * sx, 40 * sy]])
    assert to_pixel_boxes(continuous, (sx, sy), (50, 100)).tolist() == [[10, 20, 29, 39]]
    # boxes beyond the image are clipped to its last pixel
    outside = np.array([[-5.0, -5.0, 80.0, 80.0]])
    assert to_pixel_boxes(outside, (sx, sy), (50, 100)).tolist() == [[0, 0, 99, 49]]


def test_find_rejects_a_four_channel_image(two_class_model):
    prompter = YoloNasPrompter(two_class_model, {1: "a", 2: "b"}, input_size=64)
    with pytest.raises(InputError, match="H, W, 3"):
        prompter.find(np.zeros((20, 20, 4), np.float32))


# --- boxes, learning rate ------------------------------------------------------------------


def test_box_conventions_round_trip():
    inclusive = np.array([[10, 20, 29, 39], [5, 5, 5, 5]])
    continuous = as_continuous(inclusive)
    assert continuous.tolist() == [[10, 20, 30, 40], [5, 5, 6, 6]]
    assert as_inclusive(continuous).tolist() == inclusive.tolist()
    # a box under one pixel (e.g. shrunk) counts as one pixel, never inverted
    assert as_inclusive(np.array([[2.0, 3.0, 2.5, 3.0]])).tolist() == [[2, 3, 2, 3]]


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert learning_rate(0, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert learning_rate(10, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert learning_rate(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)


# --- training, resuming, loading ------------------------------------------------------------


def test_train_one_epoch_resume_and_load(tmp_path):
    data = squares_dataset(tmp_path / "data")
    out = tmp_path / "run"
    lines: list[str] = []
    card_path = train_yolonas(
        data, out, epochs=1, input_size=64, batch_size=8, progress=False, log=lines.append
    )
    for name in ("yolonas.json", "yolonas.safetensors", "last.pt", "train.log"):
        assert (out / name).is_file()
    assert (out / "val_cases.txt").read_text().split() == ["case3"]
    assert len((out / "train_cases.txt").read_text().split()) == 5
    assert any(line.startswith("epoch 1/1") for line in lines)

    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    card = json.loads(card_path.read_text())
    assert card["kind"] == "yolonas"
    assert card["architecture"] == {"size": "s", "num_classes": 1, "input_size": 64}
    assert card["labels"] == {"1": "class_1"}
    assert card["training_data"]["n_train_cases"] == 5
    assert card["training_data"]["val_ids_file"] == "val_cases.txt"
    assert {"mAP50", "recall", "precision", "f1"} <= set(card["val_metrics"])
    assert 0.0 <= card["score_threshold"] <= 1.0 and card["epochs"] == 1
    assert card["training"]["merge_labels"] is False
    assert card["training"]["keep_labels"] is None

    train_yolonas(data, out, epochs=2, input_size=64, resume=True, progress=False)
    log = (out / "train.log").read_text()
    assert "resuming after epoch 1" in log and "epoch 2/2" in log
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert json.loads(card_path.read_text())["epochs"] == 2

    prompter = load_yolonas_prompter(card_path)
    assert prompter.labels == {1: "class_1"} and prompter.input_size == 64
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    image[10:30, 20:44] = 0.9
    boxes = prompter.find(image)
    assert (boxes.scores >= prompter.score_threshold).all()
    # fusing the RepVGG branches changes the speed, not the answer
    unfused = load_yolonas_prompter(card_path, fuse=False)
    batch = letterbox(image, 64)[0][None]
    with torch.inference_mode():
        a, b = unfused.model(batch), prompter.model(batch)
    assert torch.allclose(a[1], b[1], atol=1e-4) and torch.allclose(a[0], b[0], atol=1e-2)

    with pytest.raises(InputError, match="cannot resume"):
        train_yolonas(data, out, epochs=3, input_size=96, resume=True, progress=False)


def test_training_without_foreground_is_an_input_error(tmp_path):
    data = squares_dataset(tmp_path / "data", n=3, empty=True)
    with pytest.raises(InputError, match="no foreground"):
        train_yolonas(data, tmp_path / "run", epochs=1, input_size=64, progress=False)


def test_a_class_missing_from_validation_is_a_warning(tmp_path):
    data = squares_dataset(tmp_path / "data")
    for i in range(6):
        if i != 3:  # case3 is the validation case: it keeps only label 1
            mask = (np.array(PILImage.open(data / "masks" / f"case{i}.png")) > 0).astype(np.uint8)
            mask[-6:, -6:] = 2
            PILImage.fromarray(mask).save(data / "masks" / f"case{i}.png")
    lines: list[str] = []
    with pytest.warns(UserWarning, match="'class_2' .* not in the validation cases"):
        train, val, labels, train_ids, val_ids = load_samples(data, size=64, say=lines.append)
    assert labels == {1: "class_1", 2: "class_2"} and val_ids == ["case3"]
    assert sum(len(s.boxes) for s in train) == 10 and len(val[0].boxes) == 1
    # the boxes are continuous [x0, x1 + 1): a 6x6 corner at pixels 58..63 → [58, 64)
    assert [58, 58, 64, 64] in train[0].boxes.tolist()
    # merged, both labels are one class, which validation has: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, _, labels, _, _ = load_samples(
            data, size=64, label_choice=LabelChoice(merge=True), say=print
        )
    assert labels == {1: "foreground"} and sum(len(s.boxes) for s in train) == 10
    assert {int(v) for s in train for v in s.labels} == {1}


def test_training_from_a_box_file(tmp_path):
    data = squares_dataset(tmp_path / "data", n=4)
    boxes = {}
    for i in range(4):
        mask = np.array(PILImage.open(data / "masks" / f"case{i}.png")) > 0
        ys, xs = np.nonzero(mask)
        bbox = {"label": "polyp", "xmin": int(xs.min()), "ymin": int(ys.min())}
        bbox |= {"xmax": int(xs.max()), "ymax": int(ys.max())}
        boxes[f"case{i}"] = {"height": 64, "width": 64, "bbox": [bbox]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    card_path = train_yolonas(
        data,
        tmp_path / "run",
        epochs=1,
        input_size=64,
        boxes_file=tmp_path / "boxes.json",
        progress=False,
    )
    assert json.loads(card_path.read_text())["labels"] == {"1": "polyp"}


# --- weights that do not fit ----------------------------------------------------------------


def test_weights_for_another_class_count_are_a_weights_error(tmp_path):
    torch.manual_seed(0)
    state = build_yolonas(1).state_dict()
    card = {
        "kind": "yolonas",
        "architecture": {"size": "s", "num_classes": 2, "input_size": 64},
        "labels": {"1": "a", "2": "b"},
    }
    card_path = save_checkpoint(tmp_path / "two.safetensors", state, card)
    with pytest.raises(WeightsError, match="do not fit YOLO-NAS-S with 2 class") as error:
        load_yolonas_prompter(card_path)
    assert "\n" not in str(error.value)

    other = save_checkpoint(tmp_path / "other.safetensors", state, {**card, "kind": "litemedsam"})
    with pytest.raises(WeightsError, match="not a YOLO-NAS model card"):
        load_yolonas_prompter(other)

    torch.save({"net": state}, tmp_path / "plain.pth")
    assert load_yolonas_prompter(tmp_path / "plain.pth").labels == {1: "class_1"}
    with pytest.raises(WeightsError, match="another shape"):
        load_yolonas_prompter(
            tmp_path / "plain.pth", num_classes=3, labels={1: "a", 2: "b", 3: "c"}
        )
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(WeightsError, match="not a plain PyTorch state_dict"):
        load_yolonas_prompter(tmp_path / "junk.pth")


# --- box annotation files -------------------------------------------------------------------


def test_coco_boxes(tmp_path):
    coco = {
        "images": [
            {"id": 1, "file_name": "sub/a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.jpg", "width": 40, "height": 30},
        ],
        "annotations": [
            {"image_id": 1, "category_id": 5, "bbox": [10, 5, 10, 20]},
            {"image_id": 1, "category_id": 9, "bbox": [30.4, 0, 20, 5]},
        ],
        "categories": [{"id": 5, "name": "tumour"}, {"id": 9, "name": "tool"}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    boxes = read_box_annotations(path)
    assert boxes == {"a": [(10, 5, 19, 24, "tumour"), (30, 0, 39, 4, "tool")], "b": []}
    assert class_order(boxes) == ["tool", "tumour"]
    coco["annotations"][0]["bbox"] = [1, 2, 3]
    path.write_text(json.dumps(coco))
    with pytest.raises(InputError, match="annotation 0: bbox must be 4 numbers"):
        read_coco_boxes(path)


def test_yolo_boxes(tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.5 0.25\n1 0.1 0.1 0.2 0.2\n")
    (labels / "b.txt").write_text("")
    (tmp_path / "classes.txt").write_text("lung\nheart\n")
    sizes = {"a": (40, 100), "b": (10, 10)}
    boxes = read_box_annotations(labels, sizes)
    assert boxes == {"a": [(25, 15, 74, 24, "lung"), (0, 0, 19, 7, "heart")], "b": []}
    with pytest.raises(InputError, match="image sizes are needed"):
        read_yolo_boxes(labels, None)
    (labels / "b.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(InputError, match="line 1: expected 5 numbers"):
        read_yolo_boxes(labels, sizes)


def test_kvasir_boxes(tmp_path):
    path = tmp_path / "bboxes.json"
    entry = {"height": 30, "width": 40, "bbox": [{"label": "polyp", "xmin": 3, "ymin": 4}]}
    entry["bbox"][0] |= {"xmax": 40, "ymax": 10}
    path.write_text(json.dumps({"img1": entry}))
    assert read_box_annotations(path) == {"img1": [(3, 4, 39, 10, "polyp")]}
    entry["bbox"][0]["xmax"] = "wide"
    path.write_text(json.dumps({"img1": entry}))
    with pytest.raises(InputError, match="xmin, ymin, xmax, ymax"):
        read_kvasir_boxes(path)


def test_unreadable_box_files(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_box_annotations(path)
    path.write_text("[1, 2]")
    with pytest.raises(InputError, match="unknown box annotation format"):
        read_box_annotations(path)
