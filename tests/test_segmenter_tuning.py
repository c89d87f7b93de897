"""Fine-tuning LiteMedSAM (mask decoder, encoder adapters): tiny runs, deltas, resume, bases."""

from __future__ import annotations

import json

import pytest
import torch

from automedseg.errors import InputError, WeightsError
from automedseg.segment.adapter import AdapterConfig, insert_adapters
from automedseg.segment.delta import (
    apply_delta,
    save_delta,
    trainable,
    trained_state,
    tuned_litemedsam,
)
from automedseg.segment.litemedsam import PACKAGED_WEIGHTS_SHA256, load_litemedsam
from test_head import write_disks  # noqa: I001


def test_decoder_tuning_saves_a_delta_that_loads_resumes_and_checks_its_base(tmp_path):
    from automedseg.train.segmenter import train_segmenter

    write_disks(tmp_path / "data", n=6)
    out = tmp_path / "tuned"
    model = load_litemedsam()
    before = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}
    card = train_segmenter(tmp_path / "data", out, epochs=1, val_fraction=0.34,
                           boxes_per_plane=1, learning_rate=1e-3, progress=False,
                           model=model)  # fmt: skip
    info = json.loads(card.read_text())
    assert info["kind"] == "segmenter_delta" and info["method"] == "decoder"
    assert info["base"]["sha256"] == PACKAGED_WEIGHTS_SHA256
    assert 0.0 < info["share_of_segmenter"] < 0.5
    assert set(info["val_metrics"]) == {
        "oracle_dice_frozen", "oracle_dice_tuned", "jittered_box_dice_frozen",
        "jittered_box_dice_tuned", "selected_on",
    }  # fmt: skip

    loaded = tuned_litemedsam(card)
    tuned = loaded.mask_decoder.state_dict()
    if info["val_metrics"]["oracle_dice_tuned"] > info["val_metrics"]["oracle_dice_frozen"]:
        assert any(not torch.equal(tuned[k], before[k]) for k in before)
    assert all(torch.equal(tuned[k], v) for k, v in model.mask_decoder.state_dict().items())

    train_segmenter(tmp_path / "data", out, epochs=2, val_fraction=0.34, boxes_per_plane=1,
                    resume=True, progress=False, model=load_litemedsam())  # fmt: skip
    log = (out / "train.log").read_text()
    assert "resumed after epoch 1" in log and "epoch 2/2" in log

    with pytest.raises(WeightsError, match="other LiteMedSAM weights"):
        apply_delta(load_litemedsam(), card, "0" * 64)
    with pytest.raises(InputError, match="not from a --method adapter run"):
        train_segmenter(tmp_path / "data", out, method="adapter", epochs=3, resume=True,
                        progress=False, model=load_litemedsam())  # fmt: skip
    (out / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot resume"):
        train_segmenter(tmp_path / "data", out, epochs=3, resume=True, progress=False,
                        model=load_litemedsam())  # fmt: skip


def test_a_delta_with_tensors_that_do_not_fit_is_refused(tmp_path):
    from automedseg.checkpoints import save_checkpoint

    state = {"mask_decoder.iou_token.weight": torch.zeros(2, 7)}
    card = {"kind": "segmenter_delta", "method": "decoder",
            "base": {"sha256": PACKAGED_WEIGHTS_SHA256}}  # fmt: skip
    path = save_checkpoint(tmp_path / "bad.safetensors", state, card)
    with pytest.raises(WeightsError, match="has shape"):
        tuned_litemedsam(path)
    state = {"mask_decoder.iou_token.weight": torch.zeros(1, 256)}
    path = save_checkpoint(tmp_path / "part.safetensors", state, card)
    with pytest.raises(WeightsError, match="lacks mask_decoder"):
        tuned_litemedsam(path)


def test_adapters_start_as_the_frozen_model_and_their_delta_loads_on_its_base_only(tmp_path):
    model = load_litemedsam()
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        frozen = model.image_encoder(image)
    base_names = set(model.state_dict())
    parameters = trainable(model, "adapter")
    assert set(model.state_dict()) - base_names == set(trained_state(model, "adapter"))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trained == sum(p.numel() for p in parameters)
    assert trained / sum(p.numel() for p in model.parameters()) <= 0.05
    with torch.inference_mode():
        assert torch.equal(model.image_encoder(image), frozen)  # zero-initialised: no change

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in parameters:
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.02)
        adapted = model.image_encoder(image)
    assert (adapted - frozen).abs().max() > 0.01
    card = save_delta(tmp_path / "a.safetensors", model, "adapter", {}, {})
    info = json.loads(card.read_text())
    assert info["adapter"] == AdapterConfig().as_dict() and info["changes_image_embedding"]
    assert info["parameters"] == trained and info["share_of_segmenter"] <= 0.05

    loaded = tuned_litemedsam(card)
    with torch.inference_mode():
        assert torch.allclose(loaded.image_encoder(image), adapted, atol=1e-6)
    with pytest.raises(WeightsError, match="other LiteMedSAM weights"):
        apply_delta(load_litemedsam(), card, "0" * 64)
    info["adapter"]["ratio"] = 0.5  # the card now promises wider adapters than the tensors
    card.write_text(json.dumps(info))
    with pytest.raises(WeightsError, match="has shape"):
        tuned_litemedsam(card)
    info["adapter"] = {"ratio": 0.25, "stages": [3]}  # fewer blocks than the tensors
    card.write_text(json.dumps(info))
    with pytest.raises(WeightsError, match="which LiteMedSAM does not have"):
        tuned_litemedsam(card)
    with pytest.raises(ValueError, match="no transformer blocks"):
        insert_adapters(load_litemedsam().image_encoder, AdapterConfig(stages=(0,)))


def test_adapter_tuning_trains_saves_the_best_epoch_and_resumes(tmp_path):
    from automedseg.train.segmenter import train_segmenter

    write_disks(tmp_path / "data", n=5)
    out = tmp_path / "tuned"
    options = {"method": "adapter", "val_fraction": 0.2, "boxes_per_plane": 1,
               "planes_per_epoch": 1, "val_planes": 1, "learning_rate": 1e-3,
               "select": "jittered", "progress": False}  # fmt: skip
    model = load_litemedsam()
    card = train_segmenter(tmp_path / "data", out, epochs=1, model=model, **options)
    info = json.loads(card.read_text())
    assert info["method"] == "adapter" and info["share_of_segmenter"] <= 0.05
    assert info["training"]["planes_trained"] == 1 and info["training"]["val_planes"] == 1
    assert info["training"]["seconds_per_training_plane"] > 0
    assert info["val_metrics"]["selected_on"] == "jittered boxes"

    last = torch.load(out / "last.pt", weights_only=True)
    moved = {k: v for k, v in last["trained"].items() if k.endswith("up.weight")}
    assert moved and all(v.abs().max() > 0 for v in moved.values())  # one step moved them
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    loaded = tuned_litemedsam(card)
    with torch.inference_mode():
        tuned = loaded.image_encoder(image)
        assert torch.equal(tuned, model.image_encoder(image))  # the best epoch's adapters
        if info["training"]["best_epoch"] == 1:
            assert not torch.equal(tuned, load_litemedsam().image_encoder(image))

    train_segmenter(tmp_path / "data", out, epochs=2, model=load_litemedsam(), resume=True,
                    **options)  # fmt: skip
    log = (out / "train.log").read_text()
    assert "resumed after epoch 1" in log and "epoch 2/2" in log
    assert torch.load(out / "last.pt", weights_only=True)["planes"] == 2
    with pytest.raises(InputError, match="cannot resume"):
        train_segmenter(tmp_path / "data", out, epochs=3, model=load_litemedsam(), resume=True,
                        adapter=AdapterConfig(ratio=0.125), **options)  # fmt: skip
