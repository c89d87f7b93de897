"""Bottleneck adapters in LiteMedSAM's TinyViT image encoder (Medical SAM Adapter style).

Each adapted transformer block gets two adapters, as in Med-SA: one after the attention (its
output ``a`` becomes ``a + adapter(a)``, inside the block's residual branch) and one parallel
to the MLP (the MLP's output ``m`` becomes ``m + adapter(norm(x))`` on the MLP's own
normalised input ``x``). An adapter is Linear(dim → width) → GELU → Linear(width → dim) with
the up-projection zero-initialised, so a freshly adapted encoder computes exactly what the
frozen one does.

The adapters are submodules of their block (``block.adapter_attn``, ``block.adapter_mlp``)
called from forward hooks on ``block.attn`` and ``block.mlp``: the base weights keep their
names, the adapters get their own (``image_encoder.layers.2.blocks.0.adapter_attn.down.weight``)
and a state_dict of the base still loads with ``strict=True`` before the adapters are added.
The hooks are bound methods of the adapters, so ``copy.deepcopy`` of the model stays wired.

Which blocks: the transformer stages of TinyViT are 1 (128×128 tokens, dim 128, 2 blocks),
2 (64×64, dim 160, 6 blocks) and 3 (64×64, dim 320, 2 blocks); stage 0 is convolutional.
``AdapterConfig.stages`` chooses; the default is stages 2 and 3, the blocks at the resolution
of the embedding the mask decoder reads. Measured on this machine (one thread, a 256×256
plane, 3 boxes): a training step takes 3.6 s with adapters in stages 2-3 (362 k parameters,
3.6 % of the segmenter) and 4.3 s in stages 1-3 (396 k, 3.9 %), since the backward pass then
also runs through the 128×128 stage; a forward pass of the frozen encoder takes 2.2 s, of
which 0.9 s is the convolutional stem and stage 0 that no gradient reaches either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ATTENTION, MLP = "adapter_attn", "adapter_mlp"


@dataclass(frozen=True)
class AdapterConfig:
    """Where the adapters go and how wide they are (recorded in a delta's card)."""

    ratio: float = 0.25
    """Bottleneck width as a share of the block's dim (Med-SA's 0.25: 32, 40 and 80)."""
    stages: tuple[int, ...] = (2, 3)
    """TinyViT stages whose blocks are adapted (transformer stages are 1, 2 and 3)."""

    def width(self, dim: int) -> int:
        return max(1, round(dim * self.ratio))

    def as_dict(self) -> dict:
        return {"ratio": self.ratio, "stages": list(self.stages)}

    @classmethod
    def from_dict(cls, record: dict) -> AdapterConfig:
        """The config a card recorded; ``ValueError`` when it is not one."""
        try:
            ratio, stages = float(record["ratio"]), tuple(int(s) for s in record["stages"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"not an adapter configuration: {record!r}") from None
        if not 0.0 < ratio <= 4.0 or not stages:
            raise ValueError(f"not an adapter configuration: {record!r}")
        return cls(ratio, stages)


class Adapter(nn.Module):
    """x → up(GELU(down(x))) over the last axis; starts at zero output."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, width)
        self.act = nn.GELU()
        self.up = nn.Linear(width, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))

    def after(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook for the attention: its output plus the adapter of it."""
        return output + self(output)

    def beside(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        """Forward hook for the MLP: its output plus the adapter of its normalised input."""
        return output + self(module.norm(args[0]))


def adapted_blocks(image_encoder: nn.Module, stages: tuple[int, ...]) -> list[nn.Module]:
    """The TinyViT transformer blocks of ``stages`` (``ValueError`` for a stage without any)."""
    blocks = []
    for stage in stages:
        if not 0 <= stage < len(image_encoder.layers):
            raise ValueError(f"TinyViT has no stage {stage}")
        found = [b for b in image_encoder.layers[stage].blocks if hasattr(b, "attn")]
        if not found:
            raise ValueError(f"stage {stage} of TinyViT has no transformer blocks")
        blocks += found
    return blocks


def insert_adapters(image_encoder: nn.Module, config: AdapterConfig) -> list[nn.Parameter]:
    """Give each block of ``config.stages`` its two adapters (zero output at first); returns
    the adapters' parameters. Blocks that already have adapters of these widths keep them;
    adapters of another width are a ``ValueError``."""
    parameters: list[nn.Parameter] = []
    for block in adapted_blocks(image_encoder, config.stages):
        width = config.width(block.dim)
        for name, target, hook in ((ATTENTION, block.attn, "after"), (MLP, block.mlp, "beside")):
            adapter = getattr(block, name, None)
            if adapter is None:
                adapter = Adapter(block.dim, width)
                block.add_module(name, adapter)
                target.register_forward_hook(getattr(adapter, hook))
            elif adapter.down.out_features != width:
                raise ValueError(
                    f"this encoder already has adapters of width {adapter.down.out_features}, "
                    f"not {width}"
                )
            parameters += list(adapter.parameters())
    return parameters


def is_adapter_tensor(name: str) -> bool:
    """Whether a state_dict name belongs to an adapter."""
    return f".{ATTENTION}." in name or f".{MLP}." in name
