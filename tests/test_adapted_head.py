"""benchmarks/adapted_head.py: the cached stage-2 tokens and stage 3 + neck give back the
image encoder's own embedding, and mirroring keeps tokens and targets aligned."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "adapted_head.py"


@pytest.fixture(scope="module")
def adapted_head():
    spec = importlib.util.spec_from_file_location("adapted_head", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_split_reproduces_the_encoder(adapted_head, litemedsam):
    from automedseg.segment.litemedsam import preprocess

    image = np.random.default_rng(0).random((90, 120, 3)).astype(np.float32)
    tokens, resized = adapted_head.frozen_tokens(litemedsam.image_encoder, image)
    assert tokens.shape == (4096, 320) and tokens.dtype == np.float16
    assert resized == (192, 256)
    with torch.no_grad():
        whole = litemedsam.image_encoder(preprocess(image)[0])
        split = adapted_head.embed(litemedsam.image_encoder, torch.from_numpy(tokens)[None])
    assert split.shape == whole.shape == (1, 256, 64, 64)
    # float16 tokens: close to, not equal to, the float32 pass
    cosine = torch.nn.functional.cosine_similarity(split.flatten(), whole.flatten(), dim=0)
    assert cosine > 0.999


def test_mirroring_moves_tokens_with_their_targets(adapted_head):
    grid = torch.arange(64 * 64, dtype=torch.float32).view(1, 64, 64, 1).repeat(1, 1, 1, 2)
    targets = torch.zeros(1, 256, 256, dtype=torch.int64)
    targets[0, :4, :4] = 1  # top-left, where token (0, 0) is
    valid = torch.ones(1, 1, 256, 256)
    tokens, moved, _ = adapted_head.flipped(grid.view(1, 4096, 2), targets, valid, [1, 2])
    tokens = tokens.view(1, 64, 64, 2)
    assert tokens[0, 63, 63, 0] == 0  # token (0, 0) went to the bottom-right corner
    assert moved[0, 252:, 252:].all() and moved.sum() == 16  # and so did its target pixels
