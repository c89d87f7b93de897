"""A student cut from the teacher: LiteMedSAM's image encoder with transformer blocks removed.

TinyViT's transformer stages 1, 2 and 3 hold 2, 6 and 2 blocks; keeping block 0 of stage 1,
blocks 0 and 3 of stage 2 and none of stage 3 leaves 16.3 of its 37.5 GMAC (80 ms against
152 ms on OpenVINO, ``benchmarks/encoder_pruning.py``). The kept blocks start from the
teacher's weights, so distilling (``train.encoder``, ``--keep-blocks``) only has to mend what
the removed blocks did, where an ImageNet student must learn the embedding from nothing. The
patch embedding and the convolutional stage 0 are the teacher's exactly and stay frozen, and
every batch norm keeps the teacher's statistics (batches of a few planes would only add noise).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from automedseg.errors import InputError

BLOCKS = {1: 2, 2: 6, 3: 2}
"""Transformer blocks per stage of LiteMedSAM's TinyViT."""


def parse_kept(items: Sequence[str]) -> dict[int, list[int]]:
    """``["1=0", "2=0,3", "3="]`` → {1: [0], 2: [0, 3], 3: []} (a stage not named keeps all its
    blocks); ``InputError`` for anything else."""
    kept: dict[int, list[int]] = {}
    for item in items:
        stage, sep, blocks = item.partition("=")
        try:
            number = int(stage)
            indices = [int(b) for b in blocks.split(",") if b.strip()]
        except ValueError:
            number, indices = -1, []
        if sep != "=" or number not in BLOCKS or number in kept:
            raise InputError(f"--keep-blocks {item!r}: write STAGE=BLOCKS, a stage of "
                             f"{sorted(BLOCKS)} once, e.g. 2=0,3 (3= keeps none)")  # fmt: skip
        if sorted(set(indices)) != indices or any(not 0 <= i < BLOCKS[number] for i in indices):
            raise InputError(f"--keep-blocks {item!r}: stage {number}'s blocks are "
                             f"0..{BLOCKS[number] - 1}, each once, in order")  # fmt: skip
        kept[number] = indices
    return kept


class PrunedEncoder(nn.Module):
    """(B, 3, 256, 256) LiteMedSAM input → (B, 256, 64, 64) embedding: ``encoder`` (a
    LiteMedSAM image encoder, copied) with only the ``kept`` blocks of the stages it names."""

    def __init__(self, encoder: nn.Module, kept: dict[int, list[int]]) -> None:
        super().__init__()
        self.kept = {int(k): [int(i) for i in v] for k, v in kept.items()}
        self.encoder = copy.deepcopy(encoder)
        for stage, blocks in self.kept.items():
            layer = self.encoder.layers[stage]
            layer.blocks = nn.ModuleList(layer.blocks[i] for i in blocks)
        for part in (self.encoder.patch_embed, self.encoder.layers[0]):
            part.requires_grad_(False)
        self.train(False)

    def forward(self, image):
        return self.encoder(image)

    def train(self, mode: bool = True) -> PrunedEncoder:
        super().train(mode)
        for module in self.modules():  # the teacher's statistics, whatever the mode
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def architecture(self) -> dict:
        """The card's ``architecture``: what ``build_pruned`` rebuilds it from."""
        return {"pruned_from": "LiteMedSAM image encoder",
                "blocks_kept": {str(k): v for k, v in sorted(self.kept.items())}}  # fmt: skip


def build_pruned(architecture: dict, encoder: nn.Module) -> PrunedEncoder:
    """The pruned student an ``architecture`` record describes, cut from ``encoder``."""
    kept = {int(k): [int(i) for i in v] for k, v in architecture["blocks_kept"].items()}
    return PrunedEncoder(encoder, kept)
