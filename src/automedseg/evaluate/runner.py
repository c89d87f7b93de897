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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from automedseg import io
from automedseg.errors import AutomedsegError, InputError
from automedseg.evaluate.datasets import Case, DataSet, find_cases
from automedseg.evaluate.metrics import label_metrics
from automedseg.prompt.oracle import oracle_boxes
from automedseg.segment.intensity import to_unit_range
from automedseg.types import Boxes, Image, Segmentation

WARMUP_PLANES = 2
STAGES = ("prompter", "encoder", "decoder")
CSV_FIELDS = [
    "case_id", "mode", "label", "dice", "iou", "hd95_mm", "nsd", "gt_voxels", "pred_voxels",
    "n_boxes", "n_planes", "ms_io", "ms_prompter", "ms_encoder", "ms_decoder", "error",
]  # fmt: skip
Prompter = Callable[[np.ndarray, np.ndarray], Boxes]
"""(plane in [0, 1], ground-truth plane) → boxes. Oracle prompters read the ground truth."""


@dataclass
class PlaneTimes:
    prompter: list[float] = field(default_factory=list)
    encoder: list[float] = field(default_factory=list)
    decoder: list[float] = field(default_factory=list)


@dataclass
class Prediction:
    labels: np.ndarray
    n_boxes: int
    n_planes: int
    ms_prompter: float
    ms_encoder: float
    ms_decoder: float


def oracle_prompter(plane: np.ndarray, truth: np.ndarray) -> Boxes:
    return oracle_boxes(truth)


def load_case(case: Case, channel: int = 0, layout: str = "2d") -> tuple[Image, np.ndarray]:
    """The case's image (one channel) and its ground-truth label map, shapes checked.

    A sequence (frames/<seq>/) becomes a stack of frames along axis 0, evaluated frame by frame.
    """
    if case.problem:
        raise InputError(case.problem, case.images[0] if case.images else case.labels[0])
    if layout == "sequences":
        return _load_sequence(case)
    if channel >= len(case.images):
        raise InputError(f"case has {len(case.images)} channel file(s), no channel {channel}")
    image = io.read_image(case.images[channel])
    truth = io.read_label_map(case.labels[0])
    if truth.shape != image.shape:
        raise InputError(
            f"image shape {image.shape} does not match mask shape {truth.shape}", case.labels[0]
        )
    return image, truth


def _load_sequence(case: Case) -> tuple[Image, np.ndarray]:
    frames, masks = [], []
    for frame_path, mask_path in zip(case.images, case.labels, strict=True):
        frame, mask = io.read_image(frame_path), io.read_label_map(mask_path)
        if frame.spatial_dims != 2 or mask.shape != frame.shape:
            raise InputError(f"frame {frame.shape} and mask {mask.shape} do not match", mask_path)
        if frames and frame.array.shape != frames[0].array.shape:
            raise InputError("frames of one sequence must all have the same size", frame_path)
        frames.append(frame)
        masks.append(mask)
    first = frames[0]
    stack = np.stack([f.array for f in frames])
    return Image(stack, 3, modality=first.modality, source=case.images[0].parent), np.stack(masks)


def predict_case(
    image: Image, truth: np.ndarray, prompter: Prompter, predictor, times: PlaneTimes
) -> Prediction:
    """Prompt and segment every plane (the image, or each slice along axis 0)."""
    unit = to_unit_range(image)
    planes = [(unit, truth)] if image.spatial_dims == 2 else list(zip(unit, truth, strict=False))
    predicted = np.zeros(truth.shape, dtype=np.uint16)
    out_planes = [predicted] if image.spatial_dims == 2 else list(predicted)
    n_boxes = n_planes = 0
    ms = {"prompter": 0.0, "encoder": 0.0, "decoder": 0.0}
    for (plane, truth_plane), out in zip(planes, out_planes, strict=False):
        t0 = time.perf_counter()
        boxes = prompter(plane, truth_plane)
        t1 = time.perf_counter()
        if len(boxes) == 0:
            continue
        predictor.set_image(plane)
        t2 = time.perf_counter()
        masks = predictor.predict(boxes.xyxy)
        t3 = time.perf_counter()
        out[...] = Segmentation(masks, boxes).label_map()
        for name, value in zip(ms, (t1 - t0, t2 - t1, t3 - t2), strict=False):
            ms[name] += value * 1000
            getattr(times, name).append(value * 1000)
        n_boxes += len(boxes)
        n_planes += 1
    return Prediction(predicted, n_boxes, n_planes, ms["prompter"], ms["encoder"], ms["decoder"])


def iterate_cases(data: DataSet, limit: int | None, progress: bool) -> Iterator[Case]:
    cases = data.cases[:limit] if limit else data.cases
    if not progress:
        return iter(cases)
    from tqdm import tqdm

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
    progress: bool = True,
) -> dict:
    """Evaluate LiteMedSAM on a data set; write per_case.csv, summary.json, report.md, plots.

    ``prompts`` is "oracle", "auto" or "both". Returns the summary.
    """
    from automedseg.evaluate.report import write_report
    from automedseg.segment.litemedsam import (
        LiteMedSAMPredictor,
        load_litemedsam,
        packaged_weights_path,
    )

    modes = {"oracle": ["oracle"], "auto": ["auto"], "both": ["oracle", "auto"]}.get(prompts)
    if modes is None:
        raise AutomedsegError(f"--prompts must be oracle, auto or both, not {prompts!r}")
    if "auto" in modes:
        raise AutomedsegError(
            "automatic prompts need a trained prompter, and none is available yet: "
            "use --prompts oracle"
        )
    dataset = find_cases(data, split)
    weights_path = Path(weights) if weights else packaged_weights_path()
    predictor = LiteMedSAMPredictor(load_litemedsam(None if weights is None else weights_path))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = Evaluation(predictor, modes, dataset.layout, channel, nsd_tolerance_mm)
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
        threads=_torch_threads(),
        segmenter="LiteMedSAM",
        nsd_tolerance_mm=nsd_tolerance_mm,
        models_mb={"litemedsam": round(weights_path.stat().st_size / 1e6, 2)},
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
    modes: list[str]
    layout: str
    channel: int = 0
    nsd_tolerance_mm: float = 2.0
    times: dict[str, PlaneTimes] = field(default_factory=dict)
    io_ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.times = {mode: PlaneTimes() for mode in self.modes}

    def case_rows(self, case: Case) -> list[dict]:
        """CSV rows (one per mode and label) for one case, or one error row per mode."""
        t0 = time.perf_counter()
        try:
            image, truth = load_case(case, self.channel, self.layout)
        except AutomedsegError as error:
            return [_error_row(case.case_id, mode, error) for mode in self.modes]
        ms_io = (time.perf_counter() - t0) * 1000
        self.io_ms.append(ms_io)
        spacing = image.geometry.spacing(image.spatial_dims)
        labels = [int(v) for v in np.unique(truth) if v != 0]
        rows = []
        for mode in self.modes:
            try:
                p = predict_case(image, truth, oracle_prompter, self.predictor, self.times[mode])
            except AutomedsegError as error:
                rows.append(_error_row(case.case_id, mode, error))
                continue
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
                        "gt_voxels": m["gt_voxels"],
                        "pred_voxels": m["pred_voxels"],
                        "n_boxes": p.n_boxes,
                        "n_planes": p.n_planes,
                        "ms_io": round(ms_io, 2),
                        "ms_prompter": round(p.ms_prompter, 2),
                        "ms_encoder": round(p.ms_encoder, 2),
                        "ms_decoder": round(p.ms_decoder, 2),
                        "error": "",
                    }  # fmt: skip
                )
        return rows


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
            "n_cases": len({r["case_id"] for r in good}),
            "n_failed": len(failed),
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
    return summary


def _warm(values: list[float]) -> list[float]:
    """Timings after the warm-up planes (all of them when there are too few)."""
    return values[WARMUP_PLANES:] or values


def _error_row(case_id: str, mode: str, error: AutomedsegError) -> dict:
    row = dict.fromkeys(CSV_FIELDS, "")
    row.update(case_id=case_id, mode=mode, error=str(error))
    return row


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None
