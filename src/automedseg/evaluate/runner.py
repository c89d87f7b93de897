"""The evaluation loop: every case of a data set, per prompt mode, metrics and cost.

Costs are measured per **plane** (a 2D image, or one slice of a volume that gets boxes):
prompter, image encoder and mask decoder in milliseconds; reading and intensity scaling per
case ("io"). Medians and p90 skip the first ``WARMUP_PLANES`` planes. Peak RSS is the
process's high-water mark (``getrusage``), so it covers everything run before it too.
"""

from __future__ import annotations

import csv
import math
import platform
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from automedseg.checkpoints import read_card
from automedseg.data.datasets import (
    Case,
    DataSet,
    LabelChoice,
    find_cases,
    load_case,
    load_prediction,
)
from automedseg.errors import AutomedsegError
from automedseg.evaluate.metrics import (
    detection_scores,
    label_metrics,
    match_detections,
    plane_dice,
)
from automedseg.evaluate.report import write_report
from automedseg.intensity import to_unit_range
from automedseg.pipeline import segment_plane
from automedseg.pipeline.propagate import Propagation, settings_of
from automedseg.pipeline.qc import Assessment, DomainModel, assess
from automedseg.prompt.base import Prompter
from automedseg.prompt.oracle import FixedBoxes, oracle_boxes
from automedseg.tasks import Models, load_models
from automedseg.types import Boxes, Image, Result

WARMUP_PLANES = 2
STAGES = ("prompter", "encoder", "decoder")
CSV_FIELDS = [
    "case_id", "mode", "label", "dice", "iou", "hd95_mm", "nsd", "dice_per_plane", "gt_voxels",
    "pred_voxels",
    "n_boxes", "n_planes", "det_tp", "det_fp", "det_fn", "ms_io", "ms_prompter", "ms_encoder",
    "ms_decoder", "qc_flags", "domain_distance", "error",
]  # fmt: skip


@dataclass
class PlaneTimes:
    """Milliseconds per stage for each plane where the encoder ran."""

    prompter: list[float] = field(default_factory=list)
    encoder: list[float] = field(default_factory=list)
    decoder: list[float] = field(default_factory=list)


@dataclass
class Prediction:
    labels: np.ndarray
    n_boxes: int
    n_planes: int
    """Planes prompted (oracle: those with foreground; automatic: all)."""
    ms: dict[str, float]
    detection: tuple[int, int, int]
    """(true positive, false positive, false negative) boxes at IoU >= 0.5, per label."""


def predict_case(
    image: Image,
    truth: np.ndarray,
    prompter: Prompter | None,
    predictor,
    times: PlaneTimes,
    propagate: bool = False,
) -> Prediction:
    """Prompt and segment every plane (the image, or each slice along axis 0).

    ``prompter=None`` means oracle prompts: the boxes of the plane's ground truth. With
    ``propagate`` a volume's objects are propagated from the prompter's best boxes.
    """
    unit = to_unit_range(image)
    if propagate and prompter is not None and image.spatial_dims == 3:
        return _propagated(unit, truth, prompter, predictor, times)
    if image.spatial_dims == 2:
        unit, truth_planes = unit[None], truth[None]
    else:
        truth_planes = truth
    predicted = np.zeros(truth_planes.shape, dtype=np.uint16)
    n_boxes = n_planes = tp = fp = fn = 0
    total = {"prompter": 0.0, "encoder": 0.0, "decoder": 0.0}
    for plane, truth_plane, out in zip(unit, truth_planes, predicted, strict=True):
        truth_boxes = oracle_boxes(truth_plane)
        finder = FixedBoxes(truth_boxes) if prompter is None else prompter
        if prompter is None and len(truth_boxes) == 0:
            continue
        seconds: dict[str, float] = {}
        seg = segment_plane(plane, finder, predictor, seconds)
        out[...] = seg.label_map()
        if prompter is not None:
            a, b, c = detections(seg.boxes, truth_boxes)
            tp, fp, fn = tp + a, fp + b, fn + c
        n_boxes += len(seg.boxes)
        n_planes += 1
        if seconds.get("encoder", 0.0) > 0:
            for stage, value in seconds.items():
                getattr(times, stage).append(value * 1000)
        for stage, value in seconds.items():
            total[stage] += value * 1000
    labels = predicted[0] if image.spatial_dims == 2 else predicted
    return Prediction(labels, n_boxes, n_planes, total, (tp, fp, fn))


def _propagated(unit, truth, prompter, predictor, times: PlaneTimes) -> Prediction:
    """Propagation over a volume; detection is scored on the connected components per plane."""
    propagation = Propagation(prompter, predictor, **settings_of(prompter))
    labels, objects = propagation.run(unit)
    depth = len(unit)
    for stage, seconds in propagation.times.items():  # one average figure per plane
        getattr(times, stage).extend([seconds * 1000 / depth] * depth)
    tp = fp = fn = 0
    for found, wanted in zip(labels, truth, strict=True):
        a, b, c = detections(oracle_boxes(found), oracle_boxes(wanted))
        tp, fp, fn = tp + a, fp + b, fn + c
    ms = {stage: seconds * 1000 for stage, seconds in propagation.times.items()}
    ms = {stage: ms.get(stage, 0.0) for stage in STAGES}
    return Prediction(labels, len(objects), depth, ms, (tp, fp, fn))


def _external(case: Case, folder: Path, truth: np.ndarray, choice) -> Prediction:
    """Another tool's label map for the case; detection scored on its connected components."""
    labels = load_prediction(case, folder, truth.shape, choice)
    planes = (labels[None], truth[None]) if labels.ndim == 2 else (labels, truth)
    tp = fp = fn = 0
    for found, wanted in zip(*planes, strict=True):
        a, b, c = detections(oracle_boxes(found), oracle_boxes(wanted))
        tp, fp, fn = tp + a, fp + b, fn + c
    return Prediction(labels, 0, len(planes[0]), dict.fromkeys(STAGES, 0.0), (tp, fp, fn))


def detections(found: Boxes, truth: Boxes) -> tuple[int, int, int]:
    """(tp, fp, fn) of found boxes against the ground truth's, label by label, IoU >= 0.5."""
    tp = fp = fn = 0
    for label in np.union1d(found.labels, truth.labels):
        mine, theirs = found.labels == label, truth.labels == label
        a, b, c = match_detections(found.xyxy[mine], found.scores[mine], truth.xyxy[theirs], 0.5)
        tp, fp, fn = tp + a, fp + b, fn + c
    return tp, fp, fn


def iterate_cases(data: DataSet, limit: int | None, progress: bool) -> Iterator[Case]:
    cases = data.cases[:limit] if limit else data.cases
    if not progress:
        return iter(cases)
    return iter(tqdm(cases, desc="evaluate", unit="case", file=sys.stderr))


def evaluate(
    data: str | Path,
    out: str | Path,
    prompts: str = "oracle",
    limit: int | None = None,
    split: str | Path | None = None,
    channel: int = 0,
    nsd_tolerance_mm: float = 2.0,
    weights: str | Path | None = None,
    task: str | None = None,
    prompter: str | Path | None = None,
    label_choice: LabelChoice | None = None,
    propagate: bool = True,
    progress: bool = True,
    runtime: str | None = None,
    model_set: str | Path | None = None,
    predictions: str | Path | None = None,
    segmenter_weights: str | Path | None = None,
    models: Models | None = None,
    threads: int = 2,
) -> dict:
    """Evaluate LiteMedSAM on a data set; write per_case.csv, summary.json, report.md, plots.

    ``prompts`` is "oracle" (boxes from the ground truth), "auto" (boxes from the prompter
    of ``task`` or of the ``prompter`` card) or "both". ``label_choice`` scores only some labels,
    or every label as one foreground. Volumes and sequences in automatic mode are propagated
    slice to slice (``propagate``) or prompted slice by slice. ``runtime`` "onnx"/"int8" runs
    the ONNX models of ``model_set`` (or of the task) on ONNX Runtime; the models are
    assembled by ``tasks.load_models``, or passed in ready as ``models``. ``predictions``
    instead scores another tool's label maps, one file per case named like the data set's
    masks (see ``datasets.load_prediction``), with the same metrics (mode "predictions").
    ``segmenter_weights`` is the card of a fine-tuned LiteMedSAM part (``automedseg train
    segmenter``; torch runtime). Returns the summary.
    """
    modes = {"oracle": ["oracle"], "auto": ["auto"], "both": ["oracle", "auto"]}.get(prompts)
    if modes is None:
        raise AutomedsegError(f"--prompts must be oracle, auto or both, not {prompts!r}")
    dataset = find_cases(data, split)
    if predictions is not None:
        predictions = Path(predictions)
        if not predictions.is_dir():
            raise AutomedsegError(f"predictions folder {predictions} does not exist")
        modes, loaded = ["predictions"], Models(None, None, "none")
    elif models is not None:
        loaded = models
    else:
        if "auto" in modes and not (task or prompter):
            raise AutomedsegError(
                "automatic prompts need a prompter: pass --task NAME or --prompter CARD.json"
            )
        loaded = load_models(
            task, card=prompter, runtime=runtime, prompter="auto" in modes, weights=weights,
            segmenter_weights=segmenter_weights, model_set=model_set, threads=threads,
        )  # fmt: skip
    if "auto" in modes and loaded.prompter is None:
        raise AutomedsegError("automatic prompts need a prompter: the models have none")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = Evaluation(
        loaded.segmenter, loaded.prompter, modes, dataset.layout, channel, nsd_tolerance_mm,
        label_choice, propagate, predictions, domain=loaded.domain,
    )  # fmt: skip
    rows: list[dict] = []
    interrupted = False
    csv_path = out / "per_case.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        try:
            for case in iterate_cases(dataset, limit, progress):
                for row in run.case_rows(case):
                    writer.writerow(row)
                    rows.append(row)
                handle.flush()
        except KeyboardInterrupt:
            interrupted = True
    summary = summarise(rows, modes, run.times, run.io_ms)
    summary.update(
        data=str(dataset.root),
        layout=dataset.layout,
        label_names={str(k): v for k, v in dataset.label_names.items()},
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=f"{platform.machine()} {platform.processor() or ''}".strip(),
        threads=_threads(loaded),
        runtime=loaded.runtime,
        segmenter=(
            f"predictions in {predictions}"
            if predictions is not None
            else "LiteMedSAM" + (f" + delta {loaded.delta}" if loaded.delta else "")
        ),  # fmt: skip
        nsd_tolerance_mm=nsd_tolerance_mm,
        **(label_choice or LabelChoice()).as_dict(),
        propagate=propagate,
        models_mb=loaded.sizes_mb,
        prompter=_prompter_card(loaded, "auto" in modes),
        **_prompter_identity(loaded, "auto" in modes),
        interrupted=interrupted,
        command=" ".join(sys.argv) if sys.argv and "automedseg" in sys.argv[0] else None,
    )
    write_report(out, summary, rows)
    if interrupted:
        raise KeyboardInterrupt
    return summary


@dataclass
class Evaluation:
    """The state of one evaluation run: the model, the options and the timings so far."""

    predictor: object
    prompter: Prompter | None
    """The automatic prompter (None when only oracle prompts are evaluated)."""
    modes: list[str]
    layout: str
    channel: int = 0
    nsd_tolerance_mm: float = 2.0
    label_choice: LabelChoice | None = None
    propagate: bool = True
    predictions: Path | None = None
    """Folder of another tool's label maps, scored as mode "predictions"."""
    times: dict[str, PlaneTimes] = field(default_factory=dict)
    io_ms: list[float] = field(default_factory=list)
    domain: DomainModel | None = None
    """The task's input-domain model: automatic rows get the case's QC (``pipeline.qc``)."""

    def __post_init__(self) -> None:
        self.times = {mode: PlaneTimes() for mode in self.modes}

    def case_rows(self, case: Case) -> list[dict]:
        """CSV rows (one per mode and label) for one case, or one error row per mode."""
        t0 = time.perf_counter()
        try:
            image, truth = load_case(case, self.channel, self.layout, self.label_choice)
        except AutomedsegError as error:
            return [_error_row(case.case_id, mode, error) for mode in self.modes]
        ms_io = (time.perf_counter() - t0) * 1000
        self.io_ms.append(ms_io)
        spacing = image.geometry.spacing(image.spatial_dims)
        truth_labels = {int(v) for v in np.unique(truth) if v != 0}
        rows = []
        for mode in self.modes:
            finder = self.prompter if mode == "auto" else None
            try:
                if mode == "predictions":
                    p = _external(case, self.predictions, truth, self.label_choice)
                else:
                    p = predict_case(
                        image, truth, finder, self.predictor, self.times[mode], self.propagate
                    )
            except AutomedsegError as error:
                rows.append(_error_row(case.case_id, mode, error))
                continue
            qc = self._qc(image, p) if mode == "auto" else None
            # Automatic modes also score classes found where there are none.
            found = set(finder.labels) if finder else set()
            if mode == "predictions":
                found = {int(v) for v in np.unique(p.labels) if v != 0}
            labels = sorted(truth_labels | found)
            scores = label_metrics(p.labels, truth, labels, spacing, self.nsd_tolerance_mm)
            for label, m in scores.items():
                rows.append(
                    {
                        "case_id": case.case_id,
                        "mode": mode,
                        "label": label,
                        "dice": m["dice"],
                        "iou": m["iou"],
                        "hd95_mm": m["hd95"],
                        "nsd": m["nsd"],
                        "dice_per_plane": (
                            plane_dice(p.labels == label, truth == label)
                            if image.spatial_dims == 3
                            else m["dice"]
                        ),
                        "gt_voxels": m["gt_voxels"],
                        "pred_voxels": m["pred_voxels"],
                        "n_boxes": p.n_boxes,
                        "n_planes": p.n_planes,
                        "det_tp": p.detection[0] if mode != "oracle" else "",
                        "det_fp": p.detection[1] if mode != "oracle" else "",
                        "det_fn": p.detection[2] if mode != "oracle" else "",
                        "ms_io": round(ms_io, 2),
                        "ms_prompter": round(p.ms["prompter"], 2),
                        "ms_encoder": round(p.ms["encoder"], 2),
                        "ms_decoder": round(p.ms["decoder"], 2),
                        "qc_flags": "" if qc is None else " ".join(qc.flags),
                        "domain_distance": "" if qc is None or qc.domain_distance is None
                        else round(qc.domain_distance, 3),
                        "error": "",
                    }  # fmt: skip
                )
        return rows

    def _qc(self, image: Image, p: Prediction) -> Assessment:
        """The case's QC flags and domain distance (no per-object stability: the evaluation
        keeps no boxes); a 2D image where boxes were found is still encoded."""
        result = Result(p.labels, Boxes.from_list([]))
        encoded = image.spatial_dims == 2 and p.n_boxes > 0
        return assess(image, result, self.predictor, self.domain, encoded)


def _flag_counts(rows: list[dict]) -> dict[str, int]:
    """QC flag → cases with it (each case once, however many label rows it has)."""
    per_case = {r["case_id"]: r.get("qc_flags", "") for r in rows}
    counts = Counter(flag for flags in per_case.values() for flag in str(flags).split())
    return dict(sorted(counts.items()))


def summarise(rows: list[dict], modes: list[str], times: dict, io_ms: list[float]) -> dict:
    """Per mode: means/medians over (case, label) pairs, per-label means, stage timings."""
    summary: dict = {"modes": {}, "per_label": {}, "failed_cases": []}
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for mode in modes:
        good = [r for r in rows if r["mode"] == mode and not r["error"]]
        failed = sorted({r["case_id"] for r in rows if r["mode"] == mode and r["error"]})
        summary["failed_cases"] = sorted(set(summary["failed_cases"]) | set(failed))
        t = times[mode]
        total = [sum(v) for v in zip(t.prompter, t.encoder, t.decoder, strict=False)]
        hd95 = [r["hd95_mm"] for r in good if not math.isnan(r["hd95_mm"])]
        summary["modes"][mode] = {
            "dice_mean": _mean([r["dice"] for r in good]),
            "dice_median": _median([r["dice"] for r in good]),
            "iou_mean": _mean([r["iou"] for r in good]),
            "hd95_mean": _mean(hd95),
            "hd95_undefined": len(good) - len(hd95),
            "nsd_mean": _mean([r["nsd"] for r in good]),
            "dice_per_plane_mean": _mean(
                [r["dice_per_plane"] for r in good if not math.isnan(r["dice_per_plane"])]
            ),
            "n_cases": len({r["case_id"] for r in good}),
            "n_failed": len(failed),
            "qc_flags": _flag_counts(good),
            "ms_per_image_median": _median(_warm(total)),
            "ms_per_image_p90": _percentile(_warm(total), 90),
            "stages_ms_median": {
                "io_per_case": _median(io_ms),
                **{name: _median(_warm(getattr(t, name))) for name in STAGES},
            },
            "stages_ms_p90": {
                "io_per_case": _percentile(io_ms, 90),
                **{name: _percentile(_warm(getattr(t, name)), 90) for name in STAGES},
            },
            "n_planes_timed": len(total),
            "peak_rss_mb": round(peak_rss_mb, 1),
        }
        by_label: dict[str, dict] = {}
        for label in sorted({r["label"] for r in good}):
            these = [r for r in good if r["label"] == label]
            by_label[str(label)] = {
                "dice_mean": _mean([r["dice"] for r in these]),
                "iou_mean": _mean([r["iou"] for r in these]),
                "nsd_mean": _mean([r["nsd"] for r in these]),
                "n_cases": len(these),
            }
        summary["per_label"][mode] = by_label
        if mode != "oracle":
            summary["modes"][mode]["detection"] = detection_summary(good)
    return summary


def detection_summary(rows: list[dict]) -> dict:
    """Lesion-wise precision/recall/F1 at IoU >= 0.5 and false-positive boxes per image."""
    per_case = {r["case_id"]: r for r in rows}  # detection counts repeat on each label row
    tp = sum(int(r["det_tp"]) for r in per_case.values())
    fp = sum(int(r["det_fp"]) for r in per_case.values())
    fn = sum(int(r["det_fn"]) for r in per_case.values())
    planes = sum(int(r["n_planes"]) for r in per_case.values())
    scores = detection_scores(tp, fp, fn)
    return {
        **{k: round(v, 4) for k, v in scores.items()},
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "fp_per_image": round(fp / max(planes, 1), 4),
    }


def _warm(values: list[float]) -> list[float]:
    """Timings after the warm-up planes (all of them when there are too few)."""
    return values[WARMUP_PLANES:] or values


def _error_row(case_id: str, mode: str, error: AutomedsegError) -> dict:
    row = dict.fromkeys(CSV_FIELDS, "")
    row.update(case_id=case_id, mode=mode, error=str(error))
    return row


def _threads(models: Models) -> int | None:
    """Threads of the segmenter's runtime (None when no model ran)."""
    if models.runtime == "torch":
        import torch  # only when the models are PyTorch's

        return torch.get_num_threads()
    if models.segmenter is None:
        return None
    return int(models.segmenter.encoder.threads)


def _prompter_card(models: Models, automatic: bool) -> str | None:
    task = models.task
    return str(task.prompter) if automatic and task and task.prompter else None


def _prompter_identity(models: Models, automatic: bool) -> dict[str, str | None]:
    """The prompter's kind and weights' SHA-256, from its card (the record names exactly which
    prompter was measured, wherever its card lies)."""
    card = _prompter_card(models, automatic)
    info = read_card(card) if card else {}
    return {"prompter_kind": info.get("kind"), "prompter_sha256": info.get("sha256")}


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None
