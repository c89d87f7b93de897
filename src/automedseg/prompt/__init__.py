"""Image → boxes: oracle boxes from a ground-truth mask, and trained prompters.

Trained prompters are stored as a model card (JSON) beside their weights; ``load_prompter``
reads the card's ``kind`` and builds the matching prompter. Shipped tasks live in
``automedseg/models/<task>/prompter.json``.
"""

from __future__ import annotations

from pathlib import Path

from automedseg.errors import AutomedsegError, WeightsError
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


def task_segmenter_weights(task: str | None) -> Path | None:
    """A shipped task's tuned-segmenter delta (``segmenter.json`` beside its prompter card),
    used with the PyTorch runtime unless other ``--segmenter-weights`` are given; None when
    the task has none (or no task is named)."""
    if task is None:
        return None
    path = task_card(task).parent / "segmenter.json"
    return path if path.is_file() else None


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
