"""The distilled encoder's mask term: ground-truth boxes in the cache's three views, the
jittered boxes it prompts with, and training with it (a stand-in decoder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from automedseg.errors import InputError
from automedseg.train.encoder import distil_encoder
from automedseg.train.student_terms import JITTER, MAX_BOXES, pick_boxes, plane_boxes
from conftest import write_disks
from test_encoder_distillation import pooled_teacher


def square_labels() -> np.ndarray:
    labels = np.zeros((128, 128), np.uint8)
    labels[10:30, 40:90] = 1  # 50 wide, 20 high
    labels[70:120, 5:15] = 2
    return labels


def sorted_rows(boxes: np.ndarray) -> np.ndarray:
    valid = boxes[~np.isnan(boxes[:, 0])]
    return valid[np.lexsort(valid.T[::-1])]


def test_the_mirror_views_boxes_are_the_mirrored_planes_boxes():
    labels = square_labels()
    views = plane_boxes(labels)
    assert views.shape == (3, MAX_BOXES, 4)
    # model space is 256 for this 128-pixel plane: the first box at twice its pixel edges
    np.testing.assert_allclose(views[0, 0], [80, 20, 180, 60])
    assert np.isnan(views[0, 2:]).all()
    np.testing.assert_allclose(sorted_rows(views[1]), sorted_rows(plane_boxes(labels[:, ::-1])[0]))
    np.testing.assert_allclose(sorted_rows(views[2]), sorted_rows(plane_boxes(labels[::-1])[0]))


def test_a_plane_keeps_its_largest_components():
    labels = np.zeros((64, 64), np.uint8)
    for i in range(MAX_BOXES + 2):
        labels[2 + 6 * i, 2 : 4 + i] = 1  # one-pixel-high lines, ever longer
    kept = plane_boxes(labels)[0]
    assert not np.isnan(kept).any()
    widths = kept[:, 2] - kept[:, 0]
    assert widths.min() == pytest.approx(4 * 4)  # the two shortest lines (2 and 3 px) left out


def test_picked_boxes_are_jittered_ground_truth_on_rows_that_have_any():
    boxes = np.full((5, MAX_BOXES, 4), np.nan, np.float32)
    boxes[1, 0] = [100, 100, 200, 150]
    boxes[3, :2] = [[10, 10, 50, 50], [0, 0, 20, 20]]
    rows, picked = pick_boxes(boxes, np.random.default_rng(0), most=4)
    assert rows.tolist() == [1, 3]
    size = np.array([100, 50, 100, 50])
    assert (np.abs(picked[0] - boxes[1, 0]) <= JITTER * size + 1e-4).all()
    assert (picked >= 0).all() and (picked <= 256).all()
    rows, picked = pick_boxes(boxes, np.random.default_rng(0), most=1)
    assert len(rows) == 1 and picked.shape == (1, 4)
    rows, picked = pick_boxes(boxes[[0, 2]], np.random.default_rng(0), most=4)
    assert len(rows) == 0 and picked.shape == (0, 4)


class StandInDecoder:
    """Masks from the embedding's channel mean inside the box; records the boxes it gets."""

    def __init__(self) -> None:
        self.boxes: list[torch.Tensor] = []

    def decode(self, embedding: torch.Tensor, boxes_256: torch.Tensor) -> torch.Tensor:
        assert len(embedding) == len(boxes_256)
        self.boxes.append(boxes_256)
        grid = torch.arange(256, dtype=torch.float32)
        inside = ((grid[None, None, :] >= boxes_256[:, None, 0:1])
                  & (grid[None, None, :] <= boxes_256[:, None, 2:3])).float()  # fmt: skip
        upsampled = torch.nn.functional.interpolate(embedding.mean(1, keepdim=True), size=256)
        return upsampled.float() * 10 * inside[:, None]


def test_distillation_with_the_mask_term_and_going_on_from_a_student(tmp_path):
    write_disks(tmp_path / "data", n=5)
    decoder = StandInDecoder()
    card_path = distil_encoder(tmp_path / "data", tmp_path / "out", epochs=1, width=16,
                               batch_size=2, teacher=pooled_teacher([]), progress=False,
                               mask_weight=1.0, decoder=decoder)  # fmt: skip
    training = json.loads(card_path.read_text())["training"]
    assert training["mask_weight"] == 1.0 and "mask term" in training["loss"]
    # 4 training planes × 3 views in batches of 2; each batch's 2 rows have their disk's box
    assert len(decoder.boxes) == 2 * (12 // 2)  # student and teacher, every batch
    assert all(len(b) == 2 and (b >= 0).all() and (b <= 256).all() for b in decoder.boxes)
    stored = np.load(tmp_path / "out" / "cache" / "boxes.npz")["boxes"]
    assert stored.shape == (12, MAX_BOXES, 4) and not np.isnan(stored[:, 0]).any()

    again = distil_encoder(tmp_path / "data", tmp_path / "more", epochs=1, width=8,
                           teacher=pooled_teacher([]), progress=False,
                           start_from=card_path)  # fmt: skip
    card = json.loads(again.read_text())
    assert card["architecture"]["width"] == 16  # the student's, not the argument's
    assert card["training"]["started_from_sha256"] == json.loads(card_path.read_text())["sha256"]


def test_going_on_from_a_student_of_another_litemedsam_is_refused(tmp_path):
    write_disks(tmp_path / "data", n=5)
    card_path = distil_encoder(tmp_path / "data", tmp_path / "out", epochs=1, width=16,
                               teacher=pooled_teacher([]), progress=False)  # fmt: skip
    card = json.loads(card_path.read_text())
    card["teacher"]["delta_sha256"] = "abc"
    card_path.write_text(json.dumps(card))
    with pytest.raises(InputError, match="learnt another LiteMedSAM"):
        distil_encoder(tmp_path / "data", tmp_path / "more", epochs=1, width=16,
                       teacher=pooled_teacher([]), progress=False,
                       start_from=card_path)  # fmt: skip


def test_distillation_with_the_head_term(tmp_path):
    from automedseg.checkpoints import save_checkpoint
    from automedseg.prompt.head import EmbeddingHead
    from automedseg.train.encoder import load_student

    write_disks(tmp_path / "data", n=5)
    torch.manual_seed(0)
    head = EmbeddingHead(num_classes=1, width=8, depth=1)
    card = {"kind": "head", "architecture": head.architecture(), "labels": {"1": "disk"},
            "score_threshold": 0.5}  # fmt: skip
    head_card = save_checkpoint(tmp_path / "head.safetensors", head.state_dict(), card)
    students = {}
    for name, extra in (("plain", {}), ("head", {"head": head_card, "head_weight": 50.0})):
        torch.manual_seed(0)
        card_path = distil_encoder(tmp_path / "data", tmp_path / name, epochs=1, width=16,
                                   teacher=pooled_teacher([]), progress=False,
                                   **extra)  # fmt: skip
        students[name] = load_student(card_path)[0].state_dict()
    training = json.loads(card_path.read_text())["training"]
    assert "head term" in training["loss"] and training["head_weight"] == 50.0
    assert training["head_sha256"] == json.loads(head_card.read_text())["sha256"]
    # the same seed and data: only the head's loss makes the two students differ
    assert any(not torch.equal(students["plain"][k], students["head"][k]) for k in students["head"])


def test_the_mask_terms_boxes_surround_the_chosen_labels_only(tmp_path):
    from types import SimpleNamespace

    from automedseg.data.datasets import LabelChoice
    from automedseg.train.student_terms import read_boxes

    labels = square_labels()  # label 1: 50 × 20 px, label 2: 10 × 50 px
    planes = [SimpleNamespace(labels=labels)]
    every = read_boxes(tmp_path, iter(planes), 1)
    assert (~np.isnan(every[0, :, 0])).sum() == 2
    only_2 = read_boxes(tmp_path, iter(planes), 1, LabelChoice(keep=(2,)))  # not the stored
    np.testing.assert_allclose(only_2[0, 0], [10, 140, 30, 240])
    assert np.isnan(only_2[0, 1:]).all()
    again = read_boxes(tmp_path, iter([]), 1, LabelChoice(keep=(2,)))  # stored for this choice
    np.testing.assert_array_equal(again, only_2)


def test_a_shipped_tasks_name_gives_the_labels_its_prompter_segments():
    from automedseg.data.datasets import LabelChoice
    from automedseg.train.encoder import task_labels

    assert task_labels("larynx") == LabelChoice((1, 3), False)  # not 2, "other tissue"
    assert task_labels("brain-tumour").merge
    assert task_labels("my_own_task") == task_labels(None) == LabelChoice()
