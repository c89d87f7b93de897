"""Image → boxes: oracle boxes from a ground-truth mask, a user's fixed boxes, and trained
prompters.

A trained prompter is a model card (JSON) beside its weights; the card's ``kind`` picks its
loader in ``PROMPTER_KINDS`` (adding a kind is one entry). Loaders import their module when
called, so that importing this package stays cheap (no torch for the ONNX runtime).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from automedseg.checkpoints import read_card
from automedseg.errors import WeightsError
from automedseg.prompt.base import Prompter


def _backbone(card: Path) -> Prompter:
    from automedseg.prompt.backbone import load_backbone_prompter  # torch, torchvision

    return load_backbone_prompter(card)


def _head(card: Path) -> Prompter:
    from automedseg.prompt.head import load_head_prompter  # torch

    return load_head_prompter(card)


def _yolonas(card: Path) -> Prompter:
    from automedseg.prompt.yolonas import load_yolonas_prompter  # torch + modern-yolonas

    return load_yolonas_prompter(card)


PROMPTER_KINDS: dict[str, Callable[[Path], Prompter]] = {
    "backbone": _backbone,
    "head": _head,
    "yolonas": _yolonas,
}
"""Card ``kind`` → the loader that builds the prompter from the card."""


def load_prompter(card: str | Path) -> Prompter:
    """The prompter of a trained ``card`` (JSON beside the weights), built by its kind."""
    kind = read_card(card).get("kind")
    if not isinstance(kind, str) or kind not in PROMPTER_KINDS:
        raise WeightsError(
            f"unknown prompter kind {kind!r} (known: {', '.join(PROMPTER_KINDS)})", card
        )
    return PROMPTER_KINDS[kind](Path(card))
