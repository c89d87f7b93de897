"""A head prompter reads the segmenter's image embedding, which an adapter delta changes: the
head's card records the delta it was trained on, and a mismatch is a warning."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from automedseg.checkpoints import save_checkpoint
from automedseg.errors import AutomedsegWarning, InputError
from automedseg.tasks import embedding_mismatch

FROZEN_HEAD = {"kind": "head", "segmenter": {"name": "LiteMedSAM", "sha256": "base"}}
ADAPTER = {"kind": "segmenter_delta", "sha256": "a" * 64, "changes_image_embedding": True}
DECODER = {"kind": "segmenter_delta", "sha256": "d" * 64, "changes_image_embedding": False}


def test_only_a_changed_embedding_is_a_mismatch():
    assert embedding_mismatch(FROZEN_HEAD, None) is None
    assert embedding_mismatch(FROZEN_HEAD, DECODER) is None  # decoder deltas keep the embedding
    assert "frozen encoder but runs on that of the encoder with adapters aaaa" in (
        embedding_mismatch(FROZEN_HEAD, ADAPTER)
    )
    adapted_head = {**FROZEN_HEAD, "segmenter": {**FROZEN_HEAD["segmenter"], "delta": ADAPTER}}
    assert embedding_mismatch(adapted_head, ADAPTER) is None
    assert "runs on that of the frozen encoder" in embedding_mismatch(adapted_head, None)
    other = {**ADAPTER, "sha256": "b" * 64}
    assert "adapters bbbb" in embedding_mismatch(adapted_head, other)
    assert embedding_mismatch({"kind": "yolonas"}, ADAPTER) is None  # reads the image itself


def test_a_head_trained_on_a_tuned_encoder_records_it(tmp_path):
    from automedseg.train.head import train_head
    from test_head import ImageAsEmbedding, write_disks

    delta = save_checkpoint(
        tmp_path / "adapter.safetensors", {"x": torch.zeros(1)},
        {"kind": "segmenter_delta", "method": "adapter", "changes_image_embedding": True},
    )  # fmt: skip
    write_disks(tmp_path / "data")
    options = dict(epochs=1, batch_size=4, val_fraction=0.25, progress=False,
                   predictor=ImageAsEmbedding(), cache=tmp_path / "cache")  # fmt: skip
    card = train_head(tmp_path / "data", tmp_path / "head", segmenter_weights=delta, **options)
    info, delta_card = json.loads(card.read_text()), json.loads(delta.read_text())
    assert info["segmenter"]["delta"]["method"] == "adapter"
    assert embedding_mismatch(info, delta_card) is None
    assert embedding_mismatch(info, None) is not None
    with pytest.raises(InputError, match="another segmenter_delta_sha256"):
        train_head(tmp_path / "data", tmp_path / "frozen", **options)  # the cache is the tuned one


def test_the_cli_prints_our_warnings_on_one_line():
    from automedseg import cli

    ours = cli._format_warning("the head was trained on …", AutomedsegWarning, "x.py", 3)
    assert ours == "automedseg: warning: the head was trained on …\n"
    theirs = cli._format_warning("old", FutureWarning, "x.py", 3, line="")
    assert theirs == warnings.formatwarning("old", FutureWarning, "x.py", 3, line="")
