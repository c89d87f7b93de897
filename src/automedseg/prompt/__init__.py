"""Image → boxes: oracle boxes from a ground-truth mask, and trained prompters.

Trained prompters are stored as a model card (JSON) beside their weights; ``load_prompter``
reads the card's ``kind`` and builds the matching prompter. Shipped tasks live in
``automedseg/models/<task>/prompter.json``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from automedseg.errors import AutomedsegError, AutomedsegWarning, WeightsError
from automedseg.prompt.base import Prompter

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def available_tasks() -> dict[str, Path]:
    """Shipped task name → its prompter card."""
    if not MODELS_DIR.is_dir():
        return {}
    return {p.parent.name: p for p in sorted(MODELS_DIR.glob("*/prompter.json"))}


def task_card(task: str) -> Path:
    tasks = available_tasks()
    if task not in tasks:
        names = ", ".join(tasks) or "none"
        raise AutomedsegError(f"unknown task {task!r}; shipped tasks: {names}")
    return tasks[task]


def task_segmenter_weights(task: str | None, given: str | Path | None = None) -> Path | None:
    """The tuned-segmenter delta in use: ``given`` (``--segmenter-weights``) if any, else a
    shipped task's own (``segmenter.json`` beside its prompter card), used with the PyTorch
    runtime; None when neither exists (or no task is named)."""
    if given:
        return Path(given)
    if task is None:
        return None
    path = task_card(task).parent / "segmenter.json"
    return path if path.is_file() else None


def embedding_mismatch(prompter_card: dict, delta_card: dict | None) -> str | None:
    """Why a head prompter would read another image embedding than the one it was trained on,
    or None. A head reads the segmenter's embedding, which an ``adapter`` delta changes (its
    card says ``changes_image_embedding``); the head's card records the delta it was trained
    with (``segmenter.delta``, from ``train prompter --segmenter-weights``), if any."""
    if prompter_card.get("kind") != "head":
        return None
    trained = prompter_card.get("segmenter", {}).get("delta") or {}
    trained_sha = trained.get("sha256") if trained.get("changes_image_embedding") else None
    used = delta_card or {}
    used_sha = used.get("sha256") if used.get("changes_image_embedding") else None
    if trained_sha == used_sha:
        return None

    def encoder(sha: str | None) -> str:
        return "the frozen encoder" if sha is None else f"the encoder with adapters {sha[:12]}…"

    return (
        f"the head prompter was trained on the embedding of {encoder(trained_sha)} but runs on "
        f"that of {encoder(used_sha)}; its boxes may be worse (train a prompter with "
        "--segmenter-weights to match)"
    )


def check_embedding(card_path: Path | None, delta: Path | None) -> None:
    """Warn (``AutomedsegWarning``) when the prompter of ``card_path`` would read another image
    embedding than the one it was trained on, with the segmenter delta ``delta`` (or none)."""
    from automedseg.checkpoints import read_card

    if card_path is None:
        return
    note = embedding_mismatch(read_card(card_path), None if delta is None else read_card(delta))
    if note:
        warnings.warn(note, AutomedsegWarning, stacklevel=3)


def load_prompter(task: str | None = None, card: str | Path | None = None) -> Prompter:
    """The prompter of a shipped ``task`` or of a trained ``card`` (JSON beside the weights)."""
    from automedseg.checkpoints import read_card

    path = task_card(task) if task else Path(card)
    kind = read_card(path).get("kind")
    if kind == "head":
        from automedseg.prompt.head import load_head_prompter

        return load_head_prompter(path)
    if kind == "yolonas":
        from automedseg.prompt.yolonas import load_yolonas_prompter

        return load_yolonas_prompter(path)
    raise WeightsError(f"unknown prompter kind {kind!r} (expected 'head' or 'yolonas')", path)
