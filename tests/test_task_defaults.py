"""A shipped task may bring a tuned-segmenter delta; it is used unless another is given."""

from __future__ import annotations

import automedseg.prompt as prompt
from automedseg.checkpoints import read_card
from automedseg.segment.litemedsam import PACKAGED_WEIGHTS_SHA256


def test_task_delta_is_found_beside_the_prompter_card(tmp_path, monkeypatch):
    layout = {"tuned": ["prompter.json", "segmenter.json"], "plain": ["prompter.json"]}
    for task, files in layout.items():
        (tmp_path / task).mkdir()
        for name in files:
            (tmp_path / task / name).write_text("{}")
    monkeypatch.setattr(prompt, "MODELS_DIR", tmp_path)
    assert prompt.task_segmenter_weights("tuned") == tmp_path / "tuned" / "segmenter.json"
    assert prompt.task_segmenter_weights("plain") is None
    assert prompt.task_segmenter_weights(None) is None


def test_the_shipped_hippocampus_delta_is_for_the_packaged_weights_and_its_head():
    card = read_card(prompt.task_segmenter_weights("hippocampus"))
    assert card["kind"] == "segmenter_delta" and card["method"] == "adapter"
    assert card["base"]["sha256"] == PACKAGED_WEIGHTS_SHA256
    assert card["val_metrics"]["oracle_dice_tuned"] > card["val_metrics"]["oracle_dice_frozen"]
    # the adapters change the embedding: the task's head was trained on theirs
    assert prompt.embedding_mismatch(read_card(prompt.task_card("hippocampus")), card) is None
    assert prompt.task_segmenter_weights("polyp") is None  # tuning did not help there
