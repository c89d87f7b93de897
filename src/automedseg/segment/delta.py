"""A fine-tuned part of LiteMedSAM kept as a delta: only the trained tensors, plus a card.

The card (kind ``segmenter_delta``) names the method, the SHA-256 of the base weights the
delta was trained on, how many parameters it holds and their share of the segmenter, the
training data and the validation Dice of the frozen and the tuned model. ``apply_delta``
refuses a delta made for other base weights or with tensors that do not fit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from automedseg.checkpoints import load_checkpoint, save_checkpoint
from automedseg.errors import WeightsError

KIND = "segmenter_delta"
METHODS = ("decoder",)
"""What can be tuned: ``decoder`` = the mask decoder (prompt encoder and image encoder frozen)."""


def trainable(model: nn.Module, method: str) -> list[nn.Parameter]:
    """Freeze everything but the part ``method`` tunes; returns that part's parameters."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    chosen = list(model.mask_decoder.parameters())
    for parameter in chosen:
        parameter.requires_grad_(True)
    return chosen


def save_delta(
    path: str | Path,
    model: nn.Module,
    method: str,
    training: dict,
    val_metrics: dict,
    base_sha256: str | None = None,
) -> Path:
    """Write the tuned tensors of ``model`` as safetensors + card; returns the card's path.

    ``base_sha256`` is the SHA-256 of the weights the model started from (default: the
    packaged LiteMedSAM weights)."""
    from automedseg.segment.litemedsam import PACKAGED_WEIGHTS_SHA256

    state = {f"mask_decoder.{k}": v for k, v in model.mask_decoder.state_dict().items()}
    count = sum(v.numel() for v in state.values())
    total = sum(p.numel() for p in model.parameters())
    card = {
        "kind": KIND,
        "method": method,
        "base": {"name": "LiteMedSAM", "sha256": base_sha256 or PACKAGED_WEIGHTS_SHA256},
        "parameters": count,
        "share_of_segmenter": round(count / total, 4),
        "training": training,
        "val_metrics": val_metrics,
    }
    return save_checkpoint(path, state, card)


def apply_delta(model: nn.Module, card_path: str | Path, base_sha256: str) -> dict:
    """Load a delta onto ``model`` (built from weights with SHA-256 ``base_sha256``); returns
    the delta's card. Raises ``WeightsError`` for another kind of card, other base weights, or
    tensors that are not the model's or do not fit it."""
    card, state = load_checkpoint(card_path)
    if card.get("kind") != KIND:
        raise WeightsError(f"not a segmenter delta card (kind {card.get('kind')!r})", card_path)
    made_for = str(card.get("base", {}).get("sha256"))
    if made_for != base_sha256:
        raise WeightsError(
            f"this delta was trained on other LiteMedSAM weights (SHA-256 {made_for[:12]}…, "
            f"these are {base_sha256[:12]}…)",
            card_path,
        )
    own = model.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise WeightsError(f"the delta holds {name}, which LiteMedSAM does not have", card_path)
        if own[name].shape != tensor.shape:
            raise WeightsError(
                f"{name} has shape {tuple(tensor.shape)} in the delta but "
                f"{tuple(own[name].shape)} in LiteMedSAM",
                card_path,
            )
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    return card
