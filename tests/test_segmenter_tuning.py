"""Fine-tuning LiteMedSAM's mask decoder: a tiny run, its delta, resume and wrong bases."""

from __future__ import annotations

import json

import pytest
import torch

from automedseg.errors import InputError, WeightsError
from automedseg.segment.delta import apply_delta
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
    assert set(info["val_metrics"]) == {"oracle_dice_frozen", "oracle_dice_tuned"}

    loaded = load_litemedsam(delta=card)
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
        load_litemedsam(delta=path)
