"""The shared-encoder head prompter: box mapping, training on a tiny data set, its card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from automedseg.errors import InputError, WeightsError
from automedseg.prompt import load_prompter
from automedseg.prompt.components import boxes_from_probabilities
from automedseg.prompt.head import EmbeddingHead, HeadPrompter
from conftest import write_disks


def test_component_boxes_map_back_to_original_pixels():
    # A 100 x 50 (H x W) image is resized to 256 x 128 (scale 2.56) and padded on the right.
    prob = np.zeros((1, 256, 256), np.float32)
    prob[0, 64:128, 32:64] = 0.9  # rows 64..127, cols 32..63 in model space
    prob[0, 10:20, 200:220] = 0.9  # in the padding: ignored
    boxes = boxes_from_probabilities(prob, (100, 50), [3])
    assert boxes.labels.tolist() == [3]
    assert boxes.scores.tolist() == pytest.approx([0.9])
    # 32 / 2.56 = 12.5 → 12; 64 / 2.56 = 25 → last column 24; rows 25 .. 49.
    assert boxes.xyxy.tolist() == [[12, 25, 24, 49]]


def test_score_and_area_thresholds_drop_weak_and_tiny_components():
    prob = np.zeros((1, 256, 256), np.float32)
    prob[0, 10:60, 10:60] = 0.7
    prob[0, 100:102, 100:102] = 0.99  # 4 pixels
    prob[0, 150:200, 150:200] = 0.55
    boxes = boxes_from_probabilities(prob, (256, 256), [1], 0.5, 0.6, min_area_fraction=0.001)
    assert len(boxes) == 1 and boxes.scores[0] == pytest.approx(0.7)


def test_head_prompter_needs_the_embedding():
    prompter = HeadPrompter(EmbeddingHead(1).eval(), {1: "polyp"})
    embedding = torch.zeros(1, 256, 64, 64)
    boxes = prompter.find(np.zeros((40, 60), np.float32), embedding)
    assert boxes.xyxy.shape[1] == 4
    with pytest.raises(ValueError, match="embedding"):
        prompter.find(np.zeros((40, 60), np.float32))


class ImageAsEmbedding:
    """A stand-in encoder: the 256x256 padded model input pooled to 64x64, on 256 channels.

    Cheap and deterministic, and it keeps where things are, so a head can learn from it."""

    def set_image(self, image):
        from automedseg.segment.litemedsam import preprocess

        tensor, _ = preprocess(image)
        pooled = torch.nn.functional.avg_pool2d(tensor[:, :1], 4)
        self.embedding = pooled.repeat(1, 256, 1, 1)


@pytest.fixture()
def predictor():
    return ImageAsEmbedding()


def test_train_head_writes_a_card_that_loads_and_resumes(tmp_path, predictor):
    from automedseg.train.head import train_head

    write_disks(tmp_path / "data")
    out = tmp_path / "head"
    card = train_head(tmp_path / "data", out, epochs=3, batch_size=4, val_fraction=0.25,
                      progress=False, predictor=predictor)  # fmt: skip
    info = json.loads(card.read_text())
    assert info["kind"] == "head" and info["labels"] == {"1": "label1"}
    assert info["training"]["train_cases"] == 6 and info["training"]["val_cases"] == 2
    assert (out / "val_cases.txt").read_text().split() == info_val_ids(out)
    prompter = load_prompter(card)
    assert isinstance(prompter, HeadPrompter) and prompter.labels == {1: "label1"}
    # epoch 3 is past the warm-up: its learning rate is in the saved optimizer state
    train_head(tmp_path / "data", out, epochs=4, batch_size=4, val_fraction=0.25,
               resume=True, progress=False, predictor=predictor)  # fmt: skip
    log = (out / "train.log").read_text()
    assert "resumed after epoch 3" in log and "epoch 4/4" in log
    assert "epoch 1/4" not in log
    (out / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot resume"):
        train_head(tmp_path / "data", out, epochs=5, resume=True, progress=False,
                   predictor=predictor)  # fmt: skip


def info_val_ids(out):
    return sorted((out / "val_cases.txt").read_text().split())


def test_no_foreground_anywhere_is_refused(tmp_path, predictor):
    from automedseg.train.head import train_head

    write_disks(tmp_path / "data", n=4, labels=(0,))
    with pytest.raises(InputError, match="no foreground"):
        train_head(tmp_path / "data", tmp_path / "o", epochs=1, progress=False,
                   predictor=predictor)  # fmt: skip


def test_a_class_missing_from_validation_is_refused(tmp_path, predictor):
    from automedseg.train.head import train_head

    write_disks(tmp_path / "data", n=4, labels=(1, 1, 1, 2))  # c03 holds the only label 2
    with pytest.raises(InputError, match=r"label\(s\) \[\d\] never appear in the validation"):
        train_head(tmp_path / "data", tmp_path / "o", epochs=1, val_fraction=0.25,
                   progress=False, predictor=predictor)  # fmt: skip


def test_cards_of_another_class_count_or_damaged_weights_are_refused(tmp_path):
    from automedseg.checkpoints import save_checkpoint
    from automedseg.prompt.head import load_head_prompter

    head = EmbeddingHead(num_classes=2)
    card = {"kind": "head", "architecture": head.architecture(), "labels": {"1": "a"},
            "score_threshold": 0.5}  # fmt: skip
    path = save_checkpoint(tmp_path / "h.safetensors", head.state_dict(), card)
    with pytest.raises(WeightsError, match="2"):
        load_head_prompter(path)
    info = json.loads(path.read_text())
    info["architecture"]["num_classes"] = 3
    path.write_text(json.dumps(info))
    with pytest.raises(WeightsError, match="do not fit"):
        load_head_prompter(path)
    (tmp_path / "h.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        load_head_prompter(path)


def test_an_embedding_cache_made_for_other_options_is_refused(tmp_path):
    from automedseg.train.embeddings import open_cache

    key = {"segmenter_sha256": "abc", "data": "/data/a", "channel": 0, "merge_labels": False}
    open_cache(tmp_path / "cache", key)
    open_cache(tmp_path / "cache", dict(key))  # the same: fine
    with pytest.raises(InputError, match="another channel, merge_labels"):
        open_cache(tmp_path / "cache", {**key, "channel": 1, "merge_labels": True})


def test_every_shipped_task_loads_with_its_checked_weights():
    from automedseg.checkpoints import read_card
    from automedseg.tasks import shipped_tasks

    tasks = shipped_tasks()
    assert {"polyp", "lungs", "hippocampus", "brain-tumour", "larynx"} <= set(tasks)
    for name, task in tasks.items():
        prompter = load_prompter(task.prompter)
        assert read_card(task.prompter)["task"] == name
        assert all(prompter.labels.values()) and 0 < prompter.score_threshold < 1


def test_augmented_copies_keep_masks_on_their_objects_and_repeat_exactly():
    from automedseg.data.planes import Plane, augmented
    from automedseg.train.embeddings import plane_key

    labels = np.zeros((40, 60), np.uint8)
    labels[5:15, 10:30] = 1
    image = np.repeat(labels[..., None].astype(np.float32), 3, axis=-1)  # the object is bright
    plane = Plane("case 1", None, image, labels)
    copies = [augmented(plane, n) for n in (1, 2, 3)]
    for copy in copies:
        assert copy.image.shape[:2] == copy.labels.shape and copy.image.dtype == np.float32
        assert np.array_equal(copy.image[..., 0] > 0, copy.labels == 1)
        assert 0.0 <= copy.image.min() and copy.image.max() <= 1.0
    assert any(not np.array_equal(c.labels, labels) for c in copies)
    again = augmented(plane, 2)
    assert np.array_equal(again.image, copies[1].image) and again.copy == 2
    assert plane_key(again) == "case_1__aug2" and plane_key(plane) == "case_1"
    gray = augmented(Plane("g", 3, labels.astype(np.float32), labels), 1)
    assert gray.image.ndim == 2 and plane_key(gray) == "g__0003__aug1"


def test_train_head_with_augmented_copies_caches_and_records_them(tmp_path, predictor):
    from automedseg.train.head import train_head

    write_disks(tmp_path / "data")
    out = tmp_path / "head"
    card = train_head(tmp_path / "data", out, epochs=1, batch_size=4, val_fraction=0.25,
                      progress=False, predictor=predictor, augment_copies=2)  # fmt: skip
    info = json.loads(card.read_text())
    assert info["training"]["augment_copies"] == 2 and info["training"]["train_planes"] == 18
    assert len(list((out / "cache").glob("*__aug2.npz"))) == 6
    with pytest.raises(InputError, match="negative"):
        train_head(tmp_path / "data", out, augment_copies=-1, progress=False, predictor=predictor)
