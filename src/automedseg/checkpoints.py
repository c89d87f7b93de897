"""Checkpoints are data: a safetensors file of weights plus a JSON card beside it.

The card (``<name>.json``) records what is needed to rebuild and trust the model: its kind
and architecture arguments, preprocessing, classes, training data, validation metrics and the
SHA-256 of the weights file, which is checked before the weights are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from automedseg import io
from automedseg.errors import InputError, WeightsError

CARD_VERSION = 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(weights_path: str | Path, state: dict, card: dict[str, Any]) -> Path:
    """Write ``state`` (name → tensor) as safetensors and the card as JSON (both atomic).

    The card gets ``weights_file`` and ``sha256`` filled in; returns the card's path.
    """
    from safetensors.torch import save_file

    weights_path = Path(weights_path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=weights_path.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, temp)
        os.chmod(temp, 0o644)  # mkstemp makes it private; weights are shared files
        os.replace(temp, weights_path)
    finally:
        Path(temp).unlink(missing_ok=True)
    card = {
        **card,
        "card_version": CARD_VERSION,
        "weights_file": weights_path.name,
        "sha256": file_sha256(weights_path),
    }
    card_path = weights_path.with_suffix(".json")
    io.write_json(card_path, card)
    return card_path


def read_card(card_path: str | Path) -> dict[str, Any]:
    card_path = Path(card_path)
    if card_path.is_dir():
        raise WeightsError("is a folder: give the model card (.json) beside the weights", card_path)
    if card_path.suffix == ".safetensors":
        card_path = card_path.with_suffix(".json")
    if not card_path.is_file():
        raise WeightsError("model card does not exist", card_path)
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"model card is not readable JSON ({error})", card_path) from None
    if not isinstance(card, dict) or "weights_file" not in card or "sha256" not in card:
        raise WeightsError("not an automedseg model card (no weights_file/sha256)", card_path)
    for key in ("weights_file", "bin_file"):
        name = card.get(key, "w")
        if not (isinstance(name, str) and name and Path(name).name == name
                and len(name.encode()) <= 255 and "\x00" not in name):  # fmt: skip
            raise WeightsError(f"the card's {key} must be a file name beside the card, not "
                               f"{str(name)[:60]!r}", card_path)  # fmt: skip
    for key in ("sha256", "bin_sha256"):
        digest = card.get(key)
        if key in card and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise WeightsError(f"the card's {key} must be 64 hexadecimal digits, not "
                               f"{str(digest)[:70]!r}", card_path)  # fmt: skip
    card["_path"] = str(card_path)
    return card


def load_checkpoint(card_path: str | Path) -> tuple[dict[str, Any], dict]:
    """(card, state) with the weights' SHA-256 checked against the card."""
    from safetensors.torch import load_file

    card = read_card(card_path)
    weights = Path(card["_path"]).parent / card["weights_file"]
    if not weights.is_file():
        raise WeightsError("weights file named by the card does not exist", weights)
    if (actual := file_sha256(weights)) != card["sha256"]:
        raise WeightsError(
            f"SHA-256 mismatch (card says {card['sha256'][:12]}…, file has {actual[:12]}…): "
            "the weights file is corrupted or belongs to another card",
            weights,
        )
    try:
        state = load_file(weights)
    except Exception as error:  # safetensors raises its own error types
        raise WeightsError(f"not a readable safetensors file ({error})", weights) from None
    return card, state


def read_training_state(path: str | Path) -> dict:
    """A trainer's resume file (``last.pt``), loaded with ``weights_only=True``; a damaged or
    foreign file is an ``InputError`` naming it."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises pickle, zip and runtime errors alike
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise InputError(
            f"cannot resume: not a readable training checkpoint ({first})", path
        ) from None
    if not isinstance(saved, dict):
        raise InputError("cannot resume: not a training checkpoint", path)
    return saved
