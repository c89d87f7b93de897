"""Tasks, and the one place that assembles a task's models for a runtime.

A **task** is a folder (``automedseg/models/<name>/`` for the shipped ones) holding:

* ``task.json`` — what the task is for: modality, intended input, label names, training data
  and its licence, validation figures (``about``);
* ``prompter.json`` + weights — the automatic prompter's card (``prompt.load_prompter``);
* ``segmenter.json`` + weights — optionally, a fine-tuned LiteMedSAM part (a delta);
* ``quantization.json`` + ``int8/`` — optionally, a model set for ONNX Runtime.

``load_models(task, runtime=None, ...)`` turns a task (or a prompter card alone, or nothing,
for a user's boxes) into ``Models``: the prompter, the segmenter on the chosen runtime, and
what was loaded. Everything that runs models (``api.segment_files``, ``evaluate``,
``quantize``, ``train prompter``, ``train propagation``, scripts and benchmarks) calls it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automedseg import io
from automedseg.checkpoints import file_sha256, read_card
from automedseg.errors import AutomedsegError, AutomedsegWarning, WeightsError
from automedseg.pipeline.qc import DomainModel
from automedseg.prompt import load_prompter
from automedseg.prompt.base import Prompter
from automedseg.runtime.model_set import REPORT, RUNTIMES, choose_runtime, load_model_set
from automedseg.segment.base import BoxSegmenter

MODELS_DIR = Path(__file__).resolve().parent / "models"
PROMPTER_CARD = "prompter.json"
DELTA_CARD = "segmenter.json"
ABOUT = "task.json"
SEGMENTERS = ("litemedsam", "medsam2")
"""``litemedsam``: LiteMedSAM, boxes carried slice to slice; ``medsam2``: SAM2.1-tiny from a
user's checkpoint, objects followed by SAM2's memory."""


@dataclass(frozen=True)
class Task:
    """A task resolved once: its cards and what it is for."""

    name: str | None
    prompter: Path | None
    """The prompter's card (None: no automatic prompts, e.g. a user's boxes)."""
    delta: Path | None = None
    """The card of the fine-tuned LiteMedSAM part the task runs with, if any."""
    model_set: Path | None = None
    """The folder of ONNX models (``quantization.json`` + ``int8/``), if any."""
    about: dict[str, Any] = field(default_factory=dict)
    """``task.json``: modality, input, labels, training data, licence, validation figures."""
    folder: Path | None = None

    def domain(self) -> DomainModel | None:
        """The input-domain model of ``task.json``'s ``domain`` entry (its arrays in the file
        it names, SHA-256 checked), or None when the task has none."""
        entry = self.about.get("domain")
        if not entry or self.folder is None:
            return None
        path = self.folder / entry["file"]
        if not path.is_file() or file_sha256(path) != entry.get("sha256"):
            raise WeightsError("the domain model is missing or altered (SHA-256 differs from "
                               "task.json's); reinstall automedseg", path)  # fmt: skip
        arrays = io.read_arrays(path)
        return DomainModel(arrays["mean"], arrays["directions"], arrays["spreads"],
                           float(arrays["residual"]), float(entry["threshold"]))  # fmt: skip

    @property
    def labels(self) -> dict[int, str]:
        """Label value → name: ``task.json``'s, else the prompter card's."""
        names = self.about.get("labels")
        if not names and self.prompter is not None:
            names = read_card(self.prompter).get("labels", {})
        return {int(k): str(v) for k, v in (names or {}).items()}


def task_in(folder: Path, name: str | None = None) -> Task:
    """The task stored in ``folder`` (see the module's docstring)."""
    about = {}
    if (folder / ABOUT).is_file():
        about = read_json(folder / ABOUT)
    delta = folder / DELTA_CARD
    return Task(
        name=name or about.get("name") or folder.name,
        prompter=folder / PROMPTER_CARD,
        delta=delta if delta.is_file() else None,
        model_set=folder if (folder / REPORT).is_file() else None,
        about=about,
        folder=folder,
    )


def shipped_tasks() -> dict[str, Task]:
    """Name → task, for every task shipped inside the package."""
    if not MODELS_DIR.is_dir():
        return {}
    return {p.parent.name: task_in(p.parent) for p in sorted(MODELS_DIR.glob(f"*/{PROMPTER_CARD}"))}


def get_task(name: str) -> Task:
    """The shipped task ``name``; ``AutomedsegError`` naming the shipped ones otherwise."""
    tasks = shipped_tasks()
    if name not in tasks:
        names = ", ".join(tasks) or "none"
        raise AutomedsegError(f"unknown task {name!r}; shipped tasks: {names}")
    return tasks[name]


def task_of_card(card: str | Path) -> Task:
    """The task a prompter card belongs to: a shipped task's own card gives that task; any
    other card is a task of its own, run with the delta it was trained with (its
    ``segmenter.delta.card``, when that file is still there with the recorded SHA-256)."""
    card = Path(card)
    for task in shipped_tasks().values():
        if task.prompter is not None and _same_file(task.prompter, card):
            return task
    data = read_card(card)
    return Task(data.get("task"), card, delta=_recorded_delta(data, card))


def resolve_task(task: Task | str | None = None, card: str | Path | None = None) -> Task | None:
    """A ``Task`` from a task (or its name) or a prompter card; None when given neither."""
    if isinstance(task, Task):
        return task
    if task and card:
        raise AutomedsegError("give either a task or a prompter card, not both")
    if task:
        return get_task(task)
    return None if card is None else task_of_card(card)


@dataclass
class Models:
    """What ``load_models`` assembled."""

    prompter: Prompter | None
    """The automatic prompter (None: not asked for, or no task)."""
    segmenter: BoxSegmenter | None
    """LiteMedSAM on the chosen runtime (a predictor: ``set_image`` / ``predict``); None when
    SAM2 segments alone."""
    runtime: str
    task: Task | None = None
    tracker: Any = None
    """SAM2's video predictor when ``segmenter="medsam2"``, else None."""
    delta: Path | None = None
    """The card of the fine-tuned LiteMedSAM part in use, if any."""
    sizes_mb: dict[str, float] = field(default_factory=dict)
    """Megabytes on disk of each model file loaded."""
    segmenter_name: str = "LiteMedSAM"
    """How results name the segmenter (the JSON's ``segmenter``)."""
    domain: DomainModel | None = None
    """The task's input-domain model (``pipeline.qc``), if it has one."""

    @property
    def label_codes(self) -> dict[int, dict]:
        """Label value → its coded ``category`` and ``type`` (``task.json``'s ``codes``: each
        a (value, scheme, meaning) triplet) for DICOM outputs; empty when the task has none."""
        codes = {} if self.task is None else self.task.about.get("codes") or {}
        return {int(k): dict(v) for k, v in codes.items()}

    @property
    def description(self) -> str:
        """How DICOM outputs name their series: the task and the segmenter."""
        task = "" if self.task is None or not self.task.name else f" {self.task.name}"
        return f"automedseg{task} ({self.segmenter_name})"[:64]

    @property
    def labels(self) -> dict[int, str]:
        """Label value → name of what the prompter finds (the task's names first)."""
        names = dict(getattr(self.prompter, "labels", {}) or {})
        task_names = {} if self.task is None else self.task.labels
        return {value: task_names.get(value, name) for value, name in names.items()}


def load_models(
    task: Task | str | None = None,
    *,
    card: str | Path | None = None,
    runtime: str | None = None,
    prompter: bool = True,
    weights: str | Path | None = None,
    segmenter_weights: str | Path | None = None,
    model_set: str | Path | None = None,
    segmenter: str = "litemedsam",
    checkpoint: str | Path | None = None,
    image_size: int = 512,
    threads: int = 2,
) -> Models:
    """A task's models, ready to run.

    ``task`` (a ``Task`` or a shipped task's name) or ``card`` (a prompter card) gives the
    prompter (loaded unless ``prompter=False``), the segmenter delta (``segmenter_weights``
    overrides it) and the model set (``model_set`` overrides it). ``runtime`` is one of
    ``RUNTIMES``; by default ``int8`` when the model set's recorded fidelity is within its
    budget, else ``torch``; a custom segmenter (``segmenter="medsam2"``, LiteMedSAM
    ``weights`` or ``segmenter_weights``) runs on ``torch``. ``threads`` is ONNX Runtime's
    thread count.
    """
    resolved = resolve_task(task, card)
    if segmenter not in SEGMENTERS:
        raise AutomedsegError(f"unknown segmenter {segmenter!r}; choose one of {SEGMENTERS}")
    custom = segmenter != "litemedsam" or weights is not None or segmenter_weights is not None
    folder = Path(model_set) if model_set is not None else getattr(resolved, "model_set", None)
    runtime = choose_runtime(runtime or ("torch" if custom else None), folder)
    want_prompter = prompter and resolved is not None and resolved.prompter is not None
    if runtime != "torch":
        if custom:
            raise AutomedsegError(
                f"--runtime {runtime} runs the exported LiteMedSAM: it does not take "
                "--segmenter medsam2, --weights or --segmenter-weights (use --runtime torch)"
            )
        sha = str(read_card(resolved.prompter)["sha256"]) if want_prompter else None
        onnx = load_model_set(folder, runtime, sha, threads)
        parts = {"image encoder": onnx.predictor.encoder, "mask decoder": onnx.predictor.decoder}
        if onnx.prompter is not None:
            parts["prompter"] = onnx.prompter.model
        sizes = {f"{name} ({runtime})": _model_mb(m.path) for name, m in parts.items()}
        engine = "OpenVINO" if runtime == "openvino" else "ONNX Runtime"
        distilled = "distilled" in str(onnx.predictor.encoder.card.get("source", {}).get("model"))
        name = f"LiteMedSAM{' with a distilled encoder' * distilled} ({runtime}, {engine})"
        models = Models(onnx.prompter, onnx.predictor, runtime, resolved, None, None, sizes, name)
    else:
        models = _torch_models(
            resolved, want_prompter, weights, segmenter_weights, segmenter, checkpoint, image_size
        )
    if want_prompter and weights is None and segmenter_weights is None:
        models.domain = resolved.domain()  # the task's own training images, its own models
    return models


def _torch_models(
    task: Task | None,
    want_prompter: bool,
    weights: str | Path | None,
    segmenter_weights: str | Path | None,
    segmenter: str,
    checkpoint: str | Path | None,
    image_size: int,
) -> Models:
    from automedseg.segment.delta import apply_delta
    from automedseg.segment.litemedsam import (
        PACKAGED_WEIGHTS_SHA256,
        LiteMedSAMPredictor,
        load_litemedsam,
        packaged_weights_path,
    )

    sizes: dict[str, float] = {}
    finder = None
    if want_prompter:
        assert task is not None and task.prompter is not None
        finder = load_prompter(task.prompter)
        data = read_card(task.prompter)
        sizes[f"prompter ({data['kind']})"] = _mb(task.prompter.parent / data["weights_file"])
    tracker = None
    if segmenter == "medsam2":
        from automedseg.segment.medsam2 import build_sam2, import_sam2

        import_sam2()  # a missing package first: one line saying how to install it
        if checkpoint is None:
            raise AutomedsegError(
                "--segmenter medsam2 needs --checkpoint PATH (a MedSAM2 or SAM2.1-tiny "
                "checkpoint; none is shipped)"
            )
        tracker = build_sam2(image_size, Path(checkpoint))
        sizes["sam2"] = _mb(Path(checkpoint))
    predictor, delta, name = None, None, "LiteMedSAM"
    if tracker is None or getattr(finder, "uses_embedding", False):
        delta = Path(segmenter_weights) if segmenter_weights else getattr(task, "delta", None)
        weights_path = Path(weights) if weights else packaged_weights_path()
        model = load_litemedsam(None if weights is None else weights_path)
        sizes["litemedsam"] = _mb(weights_path)
        if delta is not None:
            base = PACKAGED_WEIGHTS_SHA256 if weights is None else file_sha256(weights_path)
            delta_card = apply_delta(model, delta, base)
            sizes["segmenter delta"] = _mb(delta.parent / delta_card["weights_file"])
            name = f"LiteMedSAM + delta {delta}"
        predictor = LiteMedSAMPredictor(model.eval())
        if finder is not None:
            check_embedding(task.prompter, delta)
    return Models(finder, predictor, "torch", task, tracker, delta, sizes, name)


def models_sha256(task: Task | None, runtime: str) -> str:
    """One SHA-256 naming the models a task runs with on ``runtime``: the prompter's and the
    segmenter delta's recorded weights, the model set's report for a non-torch runtime, and
    the domain model (it decides the results' QC flags). A result made with other models has
    another; ``batch`` redoes such cases."""
    parts: dict[str, Any] = {"runtime": runtime, "task": None if task is None else task.name}
    if task is not None:
        parts["domain"] = task.about.get("domain")
        for name, card in (("prompter", task.prompter), ("delta", task.delta)):
            parts[name] = None if card is None else read_card(card).get("sha256")
        if runtime != "torch" and task.model_set is not None:
            parts["model_set"] = file_sha256(task.model_set / REPORT)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


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
    if card_path is None:
        return
    note = embedding_mismatch(read_card(card_path), None if delta is None else read_card(delta))
    if note:
        warnings.warn(note, AutomedsegWarning, stacklevel=3)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise AutomedsegError(f"not readable JSON ({error})", path) from None
    if not isinstance(data, dict):
        raise AutomedsegError("not a JSON object", path)
    return data


def _recorded_delta(card: dict, card_path: Path) -> Path | None:
    recorded = (card.get("segmenter") or {}).get("delta") or {}
    path = recorded.get("card")
    if not path:
        return None
    path = Path(path) if Path(path).is_absolute() else card_path.parent / path
    if not path.is_file():
        return None
    try:
        return path if read_card(path).get("sha256") == recorded.get("sha256") else None
    except AutomedsegError:
        return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _mb(path: Path) -> float:
    return round(Path(path).stat().st_size / 1e6, 2)


def _model_mb(path: Path) -> float:
    """MB of an exported model: the ``.onnx`` file, or an OpenVINO ``.xml`` with its ``.bin``."""
    weights = Path(path).with_suffix(".bin")
    return round(_mb(path) + (_mb(weights) if Path(path).suffix == ".xml" else 0.0), 2)


__all__ = [
    "RUNTIMES",
    "SEGMENTERS",
    "Models",
    "Task",
    "get_task",
    "load_models",
    "models_sha256",
    "resolve_task",
    "shipped_tasks",
    "task_of_card",
]
