"""A fine-tuned part of LiteMedSAM kept as a delta: only the trained tensors, plus a card.

The card (kind ``segmenter_delta``) names the method (and, for ``adapter``, where the adapters
sit and how wide they are), the SHA-256 of the base weights the delta was trained on, how many
parameters the method trains and their share of the tuned segmenter, the training data and the
validation Dice of the frozen and the tuned model. ``apply_delta`` refuses a delta made for
other base weights, with tensors that do not fit, or without all the tensors its method trains.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from automedseg.checkpoints import file_sha256, load_checkpoint, save_checkpoint
from automedseg.errors import WeightsError
from automedseg.segment import TUNING_METHODS
from automedseg.segment.adapter import AdapterConfig, insert_adapters, is_adapter_tensor
from automedseg.segment.litemedsam import PACKAGED_WEIGHTS_SHA256, LiteMedSAM, load_litemedsam

KIND = "segmenter_delta"
METHODS = TUNING_METHODS


def trainable(
    model: nn.Module, method: str, adapter: AdapterConfig | None = None
) -> list[nn.Parameter]:
    """Freeze everything but the part ``method`` tunes; returns that part's parameters.

    For ``adapter`` the adapters of ``adapter`` (default ``AdapterConfig()``) are inserted
    first, zero-initialised, unless the model already has them."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if method == "decoder":
        chosen = list(model.mask_decoder.parameters())
    else:
        chosen = insert_adapters(model.image_encoder, adapter or AdapterConfig())
    for parameter in chosen:
        parameter.requires_grad_(True)
    return chosen


def trained_state(model: nn.Module, method: str) -> dict[str, torch.Tensor]:
    """The tensors ``method`` trains, named as in the whole model's state_dict."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    state = model.state_dict()
    if method == "decoder":
        return {k: v for k, v in state.items() if k.startswith("mask_decoder.")}
    return {k: v for k, v in state.items() if is_adapter_tensor(k)}


def save_delta(
    path: str | Path,
    model: nn.Module,
    method: str,
    training: dict,
    val_metrics: dict,
    base_sha256: str | None = None,
    adapter: AdapterConfig | None = None,
) -> Path:
    """Write the tensors ``method`` trained in ``model`` as safetensors + card; returns the
    card's path.

    ``base_sha256`` is the SHA-256 of the weights the model started from (default: the
    packaged LiteMedSAM weights); ``adapter`` the adapters' configuration (method
    ``adapter``; default ``AdapterConfig()``)."""
    state = trained_state(model, method)
    if not state:
        raise ValueError(f"the model has no {method} tensors to save")
    count = sum(v.numel() for v in state.values())
    total = sum(p.numel() for p in model.parameters())
    card = {
        "kind": KIND,
        "method": method,
        **({"adapter": (adapter or AdapterConfig()).as_dict()} if method == "adapter" else {}),
        "base": {"name": "LiteMedSAM", "sha256": base_sha256 or PACKAGED_WEIGHTS_SHA256},
        "parameters": count,
        "share_of_segmenter": round(count / total, 4),
        "changes_image_embedding": method == "adapter",
        "training": training,
        "val_metrics": val_metrics,
    }
    return save_checkpoint(path, state, card)


def load_trained(model: nn.Module, method: str, state: dict[str, torch.Tensor]) -> None:
    """Load the tensors of ``method`` into ``model``; ``ValueError`` naming the first tensor
    that the model does not have, has in another shape, or that ``state`` lacks."""
    own = model.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise ValueError(f"holds {name}, which LiteMedSAM does not have")
        if own[name].shape != tensor.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} here but "
                f"{tuple(own[name].shape)} in LiteMedSAM"
            )
    missing = sorted(set(trained_state(model, method)) - set(state))
    if missing:
        raise ValueError(f"lacks {missing[0]} (and {len(missing) - 1} more {method} tensors)")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)


def apply_delta(
    model: nn.Module, card_path: str | Path, base_sha256: str = PACKAGED_WEIGHTS_SHA256
) -> dict:
    """Load a delta onto ``model`` (built from weights with SHA-256 ``base_sha256``, default
    the packaged weights'); returns
    the delta's card. An ``adapter`` delta first inserts its adapters. Raises ``WeightsError``
    for another kind of card or method, other base weights, or tensors that are not the
    model's, do not fit it, or are missing."""
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
    method = card.get("method")
    if method not in METHODS:
        raise WeightsError(f"unknown tuning method {method!r} (known: {METHODS})", card_path)
    try:
        if method == "adapter":
            insert_adapters(model.image_encoder, AdapterConfig.from_dict(card.get("adapter")))
        load_trained(model, method, state)
    except ValueError as error:
        raise WeightsError(f"the delta {error}", card_path) from None
    return card


def tuned_litemedsam(delta: str | Path, weights: Path | None = None) -> LiteMedSAM:
    """LiteMedSAM (the packaged weights, or ``weights``) with the delta of card ``delta`` on
    top, in eval mode."""
    model = load_litemedsam(weights)
    base = PACKAGED_WEIGHTS_SHA256 if weights is None else file_sha256(Path(weights))
    apply_delta(model, delta, base)
    return model.eval()
