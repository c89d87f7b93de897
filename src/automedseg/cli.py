"""``automedseg`` command line: a thin shell over ``automedseg.api``."""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from automedseg import __version__
from automedseg.api import DEFAULT_FORMATS, FORMATS, MODALITIES, segment_files
from automedseg.batch.engines import ENGINES
from automedseg.data.datasets import LabelChoice, parse_label_values
from automedseg.errors import AutomedsegError, AutomedsegWarning
from automedseg.prompt import PROMPTER_KINDS
from automedseg.prompt.pretrained import BACKBONES
from automedseg.runtime.model_set import RUNTIMES
from automedseg.segment import SAM2_IMAGE_SIZES, TUNING_METHODS
from automedseg.tasks import SEGMENTERS, load_models, shipped_tasks

EXIT_BAD_INPUT = 2
_FORMAT_WARNING = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Our own warnings on one line, like errors; other libraries' as Python shows them."""
    if issubclass(category, AutomedsegWarning):
        return f"automedseg: warning: {message}\n"
    return _FORMAT_WARNING(message, category, filename, lineno, line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automedseg",
        description="Segment medical images with SAM-family models on a CPU. For research, "
        "not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"automedseg {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    seg = commands.add_parser(
        "segment",
        help="segment images or volumes",
        description="Segment 2D images (PNG/JPEG/BMP/TIFF/DICOM) or volumes (NIfTI, DICOM "
        "series folder, multi-frame DICOM). Writes <name>_mask.png (2D) or <name>_seg.nii.gz "
        "(3D, the input's geometry), <name>_overlay.png and <name>.json into --out; for DICOM "
        "input with something found, also <name>_seg.dcm (a DICOM-SEG of the source images).",
    )
    seg.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, NIfTI or DICOM folder")
    seg.add_argument("--out", required=True, help="output folder (created if missing)")
    seg.add_argument(
        "--box",
        dest="boxes",
        nargs=4,
        type=float,
        action="append",
        metavar=("X0", "Y0", "X1", "Y1"),
        help="a box prompt in pixels (inclusive corners); repeat for several objects, "
        "labelled 1..N in order",
    )
    seg.add_argument("--task", help="automatic prompts from a shipped task, e.g. polyp")
    seg.add_argument("--prompter", help="automatic prompts from a trained prompter card (.json)")
    seg.add_argument(
        "--slice",
        dest="slice_index",
        type=int,
        help="volume/video slice or frame (axis 0) the --box prompts are on (default: the "
        "middle one); the objects are then propagated through the volume",
    )
    seg.add_argument(
        "--modality",
        choices=MODALITIES,
        help="override the modality read from the file (sets intensity handling)",
    )
    seg.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("CENTER", "WIDTH"),
        help="intensity window, e.g. 40 400 for CT soft tissue",
    )
    seg.add_argument(
        "--spacing", nargs="+", type=float, metavar="MM",
        help="pixel size in mm for inputs whose files do not give it (PNG/JPEG, video): "
        "Y X for 2D, Z Y X for volumes; sizes are then reported in mm",
    )  # fmt: skip
    seg.add_argument("--weights", help="LiteMedSAM state_dict (default: the packaged weights)")
    seg.add_argument(
        "--segmenter",
        choices=SEGMENTERS,
        default=SEGMENTERS[0],
        help="litemedsam (default): LiteMedSAM, boxes carried slice to slice; medsam2: "
        "SAM2.1-tiny (needs the sam2 package and --checkpoint), objects seeded once and "
        "propagated with SAM2's memory",
    )
    seg.add_argument(
        "--checkpoint",
        help="MedSAM2 / SAM2.1-tiny checkpoint (.pt) for --segmenter medsam2",
    )
    seg.add_argument(
        "--image-size",
        type=int,
        choices=SAM2_IMAGE_SIZES,
        default=SAM2_IMAGE_SIZES[0],
        help="medsam2 input size: 512 (MedSAM2, default) or 1024 (SAM2.1)",
    )
    seg.add_argument(
        "--no-propagation",
        action="store_true",
        help="do not propagate: segment only --slice (with --box), or prompt every slice "
        "on its own (with --task/--prompter)",
    )
    _runtime_options(seg)
    _threads_option(seg)
    seg.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    ev = commands.add_parser(
        "evaluate",
        help="measure accuracy, speed and memory on a data set with manual masks",
        description="Evaluate on a data folder (images/ + masks/, imagesTr/ + labelsTr/, or "
        "frames/<seq>/ + masks/<seq>/). Writes per_case.csv, summary.json, report.md and plots.",
    )
    ev.add_argument("--data", required=True, help="data set folder")
    ev.add_argument("--out", required=True, help="output folder for the report")
    ev.add_argument(
        "--prompts",
        choices=("oracle", "auto", "both"),
        default="oracle",
        help="oracle: boxes from the ground truth; auto: from the prompter",
    )
    ev.add_argument("--limit", type=int, help="evaluate only the first N cases (quick look)")
    ev.add_argument("--split", help="file of case ids to evaluate (one per line, or a JSON list)")
    ev.add_argument(
        "--channel",
        type=int,
        default=0,
        help="image channel to use for multi-channel cases (_0000 = 0)",
    )
    ev.add_argument(
        "--nsd-tolerance",
        dest="nsd_tolerance_mm",
        type=float,
        default=2.0,
        help="normalised surface Dice tolerance in mm (default 2)",
    )
    ev.add_argument(
        "--predictions",
        help="score another tool's label maps instead (one file per case, named like the masks)",
    )
    ev.add_argument("--weights", help="LiteMedSAM state_dict (default: the packaged weights)")
    ev.add_argument("--task", help="prompter of a shipped task for --prompts auto/both")
    ev.add_argument("--prompter", help="trained prompter card (.json) for --prompts auto/both")
    ev.add_argument(
        "--no-propagation",
        action="store_true",
        help="automatic mode on volumes/sequences: prompt each slice on its own",
    )
    _label_options(ev, "score")
    _runtime_options(ev)
    _threads_option(ev)
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    commands.add_parser(
        "tasks", help="list the shipped tasks: modality, input, labels, validation Dice"
    )
    _batch_parser(commands)
    _serve_parser(commands)

    qu = commands.add_parser(
        "quantize",
        help="INT8 models of a task for the lean ONNX Runtime",
        description="Export a task's LiteMedSAM encoder, mask decoder and prompter (head or "
        "backbone) to ONNX, quantize each with the candidate INT8 recipes (a backbone prompter "
        "stays float32), measure every candidate's Dice against "
        "the float32 PyTorch pipeline on held-out calibration images, and keep the fastest "
        "within --budget. Writes OUT/onnx/, OUT/int8/ and OUT/quantization.json; use them with "
        "segment/evaluate --runtime onnx|int8 --models OUT.",
    )
    qu.add_argument("--task", help="a shipped task, e.g. polyp")
    qu.add_argument(
        "--prompter", help="a trained head or backbone prompter card (.json) instead of --task"
    )
    qu.add_argument(
        "--calib",
        help="images (or a data set folder) to calibrate on, like those you will segment; "
        "default: the prompter's training data, training split only",
    )
    qu.add_argument("--out", required=True, help="output folder")
    qu.add_argument(
        "--budget",
        type=float,
        default=0.01,
        help="largest Dice drop against float32 a recipe may cost (default 0.01)",
    )
    qu.add_argument(
        "--images", type=int, default=64, help="calibration + held-out planes (default 64)"
    )
    qu.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    qu.add_argument("--runtimes", nargs="+", default=["int8", "openvino"],
                    choices=["int8", "openvino"],
                    help="sets to make: int8 (ONNX Runtime) and/or openvino (default: both)")
    qu.add_argument(
        "--segmenter-weights",
        help="card (.json) of a fine-tuned LiteMedSAM part from `automedseg train segmenter`: "
        "the exported encoder and decoder include it",
    )
    qu.add_argument(
        "--student",
        help="card (.json) of a distilled encoder from `automedseg train encoder`, or the "
        "image_encoder.json of a model set made with one (e.g. a shipped task's): tried as "
        "one more encoder of the OpenVINO set, kept only within the budget",
    )

    train = commands.add_parser("train", help="train a prompter or tune the segmenter on your data")
    what = train.add_subparsers(dest="what", required=True)
    tp = what.add_parser(
        "prompter",
        help="train an automatic prompter",
        description="Train a prompter on a data folder in any layout evaluate reads. Writes "
        "the weights (safetensors), a model card (JSON), train/val case lists and train.log.",
    )
    tp.add_argument("--data", required=True, help="data set folder with manual masks")
    tp.add_argument(
        "--kind",
        choices=tuple(PROMPTER_KINDS),
        default="backbone",
        help="backbone (default): ImageNet-pretrained MobileNetV2 or EfficientNet-Lite0 + FPN "
        "decoder on the image; "
        "head: small CNN on LiteMedSAM's embedding; yolonas: YOLO-NAS S",
    )
    tp.add_argument(
        "--size", dest="sizes", type=int, nargs="+", default=[320], metavar="PX",
        help="--kind backbone: longest side of the image the network sees (default 320); "
        "several sizes train one member each, whose maps are averaged",
    )  # fmt: skip
    tp.add_argument(
        "--backbone", dest="backbones", nargs="+", choices=BACKBONES, default=["mobilenet_v2"],
        metavar="NAME",
        help=f"--kind backbone: the ImageNet network ({', '.join(BACKBONES)}; default "
        "mobilenet_v2), one for every member or one per --size",
    )  # fmt: skip
    tp.add_argument(
        "--no-flip", dest="flip", action="store_false",
        help="--kind backbone: do not also read the mirrored image when predicting",
    )  # fmt: skip
    tp.add_argument(
        "--tune-split", dest="tune_fraction", type=float, default=0.15,
        help="--kind backbone: share of the training cases held out to choose the epoch, "
        "score threshold and refinement (default 0.15)",
    )  # fmt: skip
    tp.add_argument("--out", required=True, help="output folder")
    tp.add_argument(
        "--val-split",
        dest="val_fraction",
        type=float,
        default=0.2,
        help="share of cases held out for validation (default 0.2)",
    )
    tp.add_argument(
        "--epochs", type=int, nargs="+", metavar="N",
        help="training epochs (default: backbone 16, head 30, yolonas 30); --kind backbone "
        "with several --size values may give one per member",
    )  # fmt: skip
    tp.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    tp.add_argument("--channel", type=int, default=0, help="image channel for multi-channel data")
    tp.add_argument("--cache", help="embedding cache folder for --kind head (default OUT/cache)")
    tp.add_argument(
        "--boxes",
        help="box annotations for --kind yolonas (COCO JSON, YOLO "
        "labels folder, or Kvasir bbox JSON) instead of boxes from the masks",
    )
    tp.add_argument(
        "--segmenter-weights",
        help="the tuned LiteMedSAM delta the prompter will run with: --kind head trains on "
        "its image embedding (an adapter delta changes it), --kind backbone chooses its score "
        "threshold and refinement on its masks",
    )
    tp.add_argument(
        "--augment-copies", type=int, default=0, metavar="N",
        help="--kind head: also train on N augmented copies of every training image (rotated, "
        "mirrored, cropped, gamma and colour changed), each encoded once into the cache",
    )  # fmt: skip
    tp.add_argument("--task", help="task name recorded in the card")
    tp.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    tp.add_argument("--limit", type=int, help="use only the first N cases (backbone, head)")
    _label_options(tp, "train on")
    tp.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _threads_option(tp)

    ts = what.add_parser(
        "segmenter",
        help="fine-tune LiteMedSAM on your data",
        description="Fine-tune part of LiteMedSAM on a data folder in any layout evaluate "
        "reads, prompted by the masks' boxes jittered as a detector errs. Writes the tuned "
        "tensors only (safetensors) with a card, train/val case lists and train.log; use it "
        "with segment/evaluate --segmenter-weights OUT/segmenter.json.",
    )
    ts.add_argument("--data", required=True, help="data set folder with manual masks")
    ts.add_argument(
        "--method", choices=TUNING_METHODS, default=TUNING_METHODS[0],
        help="decoder: the mask decoder, on cached embeddings (fast); adapter: bottleneck "
        "adapters in the image encoder's transformer blocks (Medical SAM Adapter style; the "
        "encoder runs forward and backward on every plane)",
    )  # fmt: skip
    ts.add_argument("--out", required=True, help="output folder")
    ts.add_argument(
        "--val-split", dest="val_fraction", type=float, default=0.2,
        help="share of cases held out for validation (default 0.2)",
    )  # fmt: skip
    ts.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    ts.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ts.add_argument("--cache", help="decoder: embedding cache folder (default OUT/cache)")
    ts.add_argument("--channel", type=int, default=0, help="image channel for multi-channel data")
    ts.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    ts.add_argument("--limit", type=int, help="use only the first N cases")
    ts.add_argument(
        "--lr", dest="learning_rate", type=float, default=1e-4,
        help="AdamW learning rate (default 1e-4)",
    )  # fmt: skip
    ts.add_argument(
        "--jitter", type=float, default=0.1,
        help="training boxes: each side moved by a normal error of this share of the box "
        "size (default 0.1; 0 = exact boxes)",
    )  # fmt: skip
    ts.add_argument(
        "--select", choices=("exact", "jittered"), default="exact",
        help="validation Dice that picks the best epoch: with the masks' exact boxes (default) "
        "or with those boxes jittered like the training boxes (closer to a detector's)",
    )  # fmt: skip
    ts.add_argument(
        "--planes-per-epoch", type=int, help="train on at most N planes per epoch (default all)"
    )
    ts.add_argument(
        "--planes-per-case", type=int, default=4,
        help="adapter: at most N random foreground slices of a volume per epoch (default 4)",
    )  # fmt: skip
    ts.add_argument(
        "--val-planes", type=int,
        help="validate on at most N planes (default: all for decoder, 64 for adapter)",
    )  # fmt: skip
    _label_options(ts, "train on")
    ts.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _threads_option(ts)

    tq = what.add_parser(
        "propagation",
        help="choose a prompter's propagation settings on volumes or videos",
        description="Run the prompter's volumes/videos through propagation with each "
        "candidate setting (snapping to the prompter's boxes at IoU 0.3/0.5/0.7, or not; or "
        "no following: each plane from its own boxes) and write the one with the best mean "
        "Dice per label into the prompter's card.",
    )
    tq.add_argument("--prompter", required=True, help="prompter card (JSON); updated in place")
    tq.add_argument("--data", required=True, help="data set folder with manual masks")
    tq.add_argument(
        "--split",
        help="file listing the cases to use (default: tune_cases.txt beside the card, else "
        "val_cases.txt, if any)",
    )
    tq.add_argument("--limit", type=int, help="use only the first N cases")
    tq.add_argument(
        "--segmenter-weights",
        help="run the prompter with this tuned LiteMedSAM delta (default: its task's, if any)",
    )
    tq.add_argument("--runtime", choices=RUNTIMES, help="runtime (default: the task's)")
    tq.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _threads_option(tq)

    te = what.add_parser(
        "encoder",
        help="distil a small, fast stand-in for LiteMedSAM's image encoder on your data",
        description="Train an ImageNet MobileNetV2 with an FPN decoder to reproduce LiteMedSAM's "
        "image embedding on a data set's training planes (the validation split is left out; "
        "the teacher's embeddings are cached once in OUT/cache). Writes encoder.json + "
        "encoder.safetensors, train/val case lists and train.log; `automedseg quantize "
        "--student OUT/encoder.json` keeps it in the OpenVINO set only within the Dice budget.",
    )
    te.add_argument("--data", required=True, help="data set folder with manual masks")
    te.add_argument("--out", required=True, help="output folder")
    te.add_argument("--epochs", type=int, default=25, help="training epochs (default 25)")
    te.add_argument("--width", type=int, default=128, help="FPN channels (default 128)")
    te.add_argument("--backbone", choices=BACKBONES, default="mobilenet_v2",
                    help="the ImageNet network the student starts from (default mobilenet_v2)")
    te.add_argument(
        "--val-split", dest="val_fraction", type=float, default=0.2,
        help="share of cases held out for validation (default 0.2, as train prompter)",
    )  # fmt: skip
    te.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    te.add_argument("--limit", type=int, help="use only the first N cases")
    te.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    te.add_argument("--task", help="task name recorded in the card; a shipped task's name also "
                    "gives the mask term the labels its prompter segments")  # fmt: skip
    te.add_argument(
        "--segmenter-weights",
        help="the tuned LiteMedSAM delta the task runs with (its adapters change the "
        "embedding the student learns), e.g. a shipped task's segmenter.json",
    )
    te.add_argument(
        "--mask-weight", type=float, default=0.0,
        help="weight of a second loss: the masks LiteMedSAM's decoder draws from the "
        "student's embedding against the teacher's, on jittered ground-truth boxes (default 0: "
        "the embedding's mean squared error only; slower per epoch)",
    )  # fmt: skip
    te.add_argument("--head", help="the task's head prompter card (prompter.json of kind head): "
                    "its class maps from the student's embedding learn those from the "
                    "teacher's (a loss of weight --head-weight)")  # fmt: skip
    te.add_argument("--head-weight", type=float, default=1.0,
                    help="weight of the head's loss (default 1)")  # fmt: skip
    te.add_argument("--start-from", help="card (.json) of a student to go on training from")
    te.add_argument(
        "--keep-blocks", nargs="+", metavar="STAGE=BLOCKS",
        help="the student is LiteMedSAM's own encoder with only these transformer blocks "
        "(stages 1, 2, 3 hold 2, 6, 2; e.g. 1=0 2=0,3 3= ; a stage not named keeps all), "
        "starting from the teacher's weights; --backbone and --width are then unused (a "
        "lower --lr suits it, e.g. 2e-4)",
    )  # fmt: skip
    _label_options(te, "draw the mask term's boxes around")
    te.add_argument("--lr", dest="learning_rate", type=float, default=2e-3,
                    help="peak of the one-cycle schedule (default 2e-3)")  # fmt: skip
    te.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    _threads_option(te)

    td = what.add_parser(
        "domain",
        help="fit a task's input-domain check (flags inputs unlike its training images)",
        description="Fit the input-domain model of a task on the training cases of the data "
        "set its prompter was trained on; calibrate its threshold (at most about 5 %% of the "
        "validation cases flagged). Writes domain.npz and the 'domain' entry of task.json in "
        "the task's folder.",
    )
    td.add_argument("--task", required=True,
                    help="a shipped task, or a task folder (prompter.json inside)")  # fmt: skip
    td.add_argument("--data", required=True, help="the data set the prompter was trained on")
    td.add_argument("--limit", type=int, default=150, help="cases per split (default 150)")
    td.add_argument("--runtime", choices=RUNTIMES, help="runtime (default: the task's)")
    td.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _threads_option(td)
    return parser


def _label_options(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument(
        "--labels",
        metavar="V,V",
        help=f"{verb} only these mask label values, e.g. 1,3 (the others are background)",
    )
    parser.add_argument(
        "--merge-labels",
        action="store_true",
        help=f"{verb} every (chosen) non-zero label as one class (e.g. whole tumour)",
    )


def _batch_parser(commands) -> None:
    ba = commands.add_parser(
        "batch",
        help="segment a cohort: every case of a folder (searched recursively) or a CSV list",
        description="Segment every case below INPUT (2D images, NIfTI files, DICOM series "
        "split by SeriesInstanceUID, videos, frame folders for a video task) or listed in a "
        "CSV (a 'path' column). Writes OUT/cases/<case>/ (each written whole), "
        "OUT/manifest.csv and OUT/statistics.csv. A rerun skips the cases already done with "
        "the same input and models.",
    )
    ba.add_argument("input", metavar="INPUT", help="folder of cases, or a CSV list of paths")
    ba.add_argument("--out", required=True, help="output folder (created if missing)")
    ba.add_argument("--task", help="a shipped task, e.g. hippocampus")
    ba.add_argument("--prompter", help="a trained prompter card (.json)")
    ba.add_argument("--engine", choices=ENGINES, default="local",
                    help="local (default): one case after another here; dask: Dask "
                    "distributed workers")  # fmt: skip
    ba.add_argument("--scheduler", metavar="ADDRESS",
                    help="--engine dask: join the cluster at this scheduler (tcp://host:8786); "
                    "default: start a local cluster")  # fmt: skip
    ba.add_argument("--workers", type=int, default=2,
                    help="--engine dask without --scheduler: local worker processes "
                    "(default 2)")  # fmt: skip
    ba.add_argument("--threads", type=int, default=1, metavar="N",
                    help="CPU threads per worker (default 1)")  # fmt: skip
    ba.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                    help=f"comma-separated outputs out of {','.join(FORMATS)} (default "
                    f"{','.join(DEFAULT_FORMATS)}; the JSON is always written)")  # fmt: skip
    ba.add_argument("--force", action="store_true", help="redo the cases done before")
    _runtime_options(ba, segmenter_weights=False)
    ba.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _serve_parser(commands) -> None:
    sv = commands.add_parser(
        "serve",
        help="the review app in your browser: upload, see the masks, fix them, download",
        description="Start the review app (REST API + browser page) on http://HOST:PORT. It "
        "listens on this machine only (127.0.0.1) unless --host says otherwise; give --token "
        "when other machines may reach it.",
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                    "127.0.0.1: this machine only)")  # fmt: skip
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--data", default="automedseg-data",
                    help="folder of the job store (default ./automedseg-data)")  # fmt: skip
    sv.add_argument("--token", help="require this token on every API call")
    sv.add_argument("--max-upload-mb", type=float, default=512,
                    help="largest upload accepted (default 512 MB)")  # fmt: skip
    _threads_option(sv)


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=2, metavar="N",
        help="CPU threads for PyTorch, ONNX Runtime and OpenVINO (default 2)",
    )  # fmt: skip


def _runtime_options(parser: argparse.ArgumentParser, segmenter_weights: bool = True) -> None:
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        help="torch: PyTorch; onnx / int8: ONNX Runtime with the float32 / INT8 models of "
        "--models; openvino: OpenVINO with the set's models, bfloat16 where the CPU has it (no "
        "torch needed). Default: openvino, else int8, when the task ships such models within "
        "their fidelity budget, else torch",
    )
    parser.add_argument(
        "--model-set", "--models", dest="model_set",
        help="model folder written by `automedseg quantize`",
    )  # fmt: skip
    if not segmenter_weights:
        return
    parser.add_argument(
        "--segmenter-weights",
        help="card (.json) of a fine-tuned LiteMedSAM part from `automedseg train segmenter` "
        "(torch runtime)",
    )


def _label_choice(args: argparse.Namespace) -> LabelChoice:
    keep = None if args.labels is None else parse_label_values(args.labels)
    return LabelChoice(keep, args.merge_labels)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_malloc_arenas()
    warnings.formatwarning = _format_warning
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            print(f"automedseg: error: --threads must be at least 1, not {args.threads}",
                  file=sys.stderr)  # fmt: skip
            return EXIT_BAD_INPUT
        use_threads(args.threads)
    try:
        if args.command == "segment":
            return _segment(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "tasks":
            return _tasks()
        if args.command == "train":
            run = {"prompter": _train_prompter, "segmenter": _train_segmenter,
                   "propagation": _train_propagation, "domain": _train_domain,
                   "encoder": _train_encoder}[args.what]  # fmt: skip
            return run(args)
        if args.command == "quantize":
            return _quantize(args)
        if args.command == "batch":
            return _batch(args)
        if args.command == "serve":
            return _serve(args)
    except AutomedsegError as error:
        print(f"automedseg: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("automedseg: interrupted", file=sys.stderr)
        return 130
    return 1


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas() -> None:
    """One glibc malloc arena for the whole process. By default every thread that allocates
    (OpenVINO's, the backbone prompter's two preprocessing threads) gets an arena of its own,
    and memory freed in one stays there: a `segment` of one Kvasir-SEG image peaked at 510 MB
    with the default, 473 MB with one arena (``benchmarks/pipeline_speed.py``'s RSS child).
    Nothing happens where the C library is not glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


def use_threads(threads: int) -> None:
    """Run PyTorch (and the OpenMP libraries it loads) on ``threads`` CPU threads; ONNX
    Runtime and OpenVINO sessions get the same number through ``load_models``."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read when torch is first imported
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def _segment(args: argparse.Namespace) -> int:
    def report(error: AutomedsegError) -> None:
        print(f"automedseg: error: {error}", file=sys.stderr)

    outcomes = segment_files(
        args.inputs,
        args.out,
        boxes=[tuple(b) for b in args.boxes or []],
        task=args.task,
        prompter=args.prompter,
        slice_index=args.slice_index,
        modality=args.modality,
        window=None if args.window is None else tuple(args.window),
        weights=args.weights,
        propagate=not args.no_propagation,
        progress=not args.no_progress,
        on_error=report,
        segmenter=args.segmenter,
        checkpoint=args.checkpoint,
        image_size=args.image_size,
        runtime=args.runtime,
        model_set=args.model_set,
        segmenter_weights=args.segmenter_weights,
        threads=args.threads,
        spacing=None if args.spacing is None else tuple(args.spacing),
    )
    for outcome in outcomes:
        if outcome.empty:
            print(f"{outcome.source}: nothing found (empty mask written)", file=sys.stderr)
    failed = sum(o.error is not None for o in outcomes)
    written = sum(len(o.outputs) for o in outcomes)
    done = len(outcomes) - failed
    print(f"segmented {done} of {len(outcomes)} inputs; {written} files in {args.out}")
    return EXIT_BAD_INPUT if failed else 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from automedseg.serve import create_app

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
        print("automedseg: warning: listening beyond this machine without --token: anyone who "
              "reaches it can upload and read images", file=sys.stderr)  # fmt: skip

    def load(task: str):
        return load_models(task, threads=args.threads)

    app = create_app(args.data, load=load, token=args.token, max_upload_mb=args.max_upload_mb)
    where = f"http://{args.host}:{args.port}/" + (f"?token={args.token}" if args.token else "")
    print(f"automedseg: review app at {where} (jobs in {args.data}); Ctrl-C stops it",
          file=sys.stderr)  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _batch(args: argparse.Namespace) -> int:
    from automedseg.batch import run_batch

    def say(message: str) -> None:
        print(f"automedseg: {message}", file=sys.stderr)

    summary = run_batch(
        args.input, args.out, args.task, args.prompter, engine=args.engine,
        scheduler=args.scheduler, workers=args.workers, threads=args.threads,
        runtime=args.runtime, model_set=args.model_set, formats=args.formats.split(","),
        force=args.force, progress=not args.no_progress, say=say,
    )  # fmt: skip
    for record in summary.records:
        if record.status == "failed":
            print(f"automedseg: error: {record.error}", file=sys.stderr)
    print(f"{summary.count('ok')} segmented, {summary.count('skipped')} done before, "
          f"{summary.count('failed')} failed of {len(summary.records)} case(s) in "
          f"{summary.seconds:.0f} s; manifest: {summary.out / 'manifest.csv'}")  # fmt: skip
    if summary.interrupted:
        print("automedseg: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return EXIT_BAD_INPUT if summary.count("failed") else 0


def _evaluate(args: argparse.Namespace) -> int:
    from automedseg.evaluate.runner import evaluate  # metrics, plots

    summary = evaluate(
        args.data,
        args.out,
        prompts=args.prompts,
        limit=args.limit,
        split=args.split,
        channel=args.channel,
        nsd_tolerance_mm=args.nsd_tolerance_mm,
        weights=args.weights,
        task=args.task,
        prompter=args.prompter,
        label_choice=_label_choice(args),
        propagate=not args.no_propagation,
        progress=not args.no_progress,
        runtime=args.runtime,
        model_set=args.model_set,
        predictions=args.predictions,
        segmenter_weights=args.segmenter_weights,
        threads=args.threads,
    )
    for mode, m in summary["modes"].items():
        print(
            f"{mode}: Dice {m['dice_mean']} (median {m['dice_median']}), IoU {m['iou_mean']}, "
            f"{m['n_cases']} cases, {m['n_failed']} failed, "
            f"{m['ms_per_image_median']} ms/plane; report in {args.out}/report.md"
        )
    return 0


def _tasks() -> int:
    tasks = shipped_tasks()
    if not tasks:
        print("no shipped tasks")
        return 0
    rows = [("task", "modality", "input", "labels", "validation Dice: automatic / oracle")]
    for name, task in tasks.items():
        about = task.about
        validation = about.get("validation") or {}
        dice = (
            f"{validation['auto_dice']:.3f} / {validation['oracle_dice']:.3f} "
            f"({validation.get('cases')} {validation.get('unit', 'cases')})"
            if "auto_dice" in validation
            else "not measured"
        )
        labels = ", ".join(f"{v} {n}" for v, n in task.labels.items())
        rows.append((name, about.get("modality", "?"), about.get("input", "?"), labels, dice))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    print("\nFor research, not a medical device. Details: automedseg/models/<task>/task.json")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from automedseg.deploy.quantize_task import quantize_task  # torch, onnx

    if bool(args.task) == bool(args.prompter):
        raise AutomedsegError("give exactly one of --task NAME or --prompter CARD.json")
    report = quantize_task(
        args.out, task=args.task, prompter_card=args.prompter, calib=args.calib,
        budget=args.budget, limit=args.images, threads=args.threads,
        segmenter_weights=args.segmenter_weights, runtimes=tuple(args.runtimes),
        student=args.student,
    )  # fmt: skip
    for runtime in ("int8", "openvino"):
        if part := report.get(runtime):
            print(
                f"{runtime} models in {args.out}/{runtime}: {part['mb']} MB, Dice against "
                f"float32 {part['same_box_dice']} (same boxes) / {part['auto_dice']} "
                f"(automatic), {'within' if part['within_budget'] else 'NOT within'} the "
                f"budget {args.budget}"
            )  # fmt: skip
    return 0


def _train_prompter(args: argparse.Namespace) -> int:
    progress = not args.no_progress
    if args.kind == "backbone":
        if args.augment_copies or args.cache or args.boxes:
            raise AutomedsegError("--augment-copies, --cache and --boxes do not apply to "
                                  "--kind backbone (it augments every batch itself)")
        from automedseg.train.backbone import train_backbone  # torch
        from automedseg.train.head import segmenter_record

        segmenter = load_models(runtime="torch", segmenter_weights=args.segmenter_weights)
        card = train_backbone(
            args.data, args.out, segmenter.segmenter, sizes=tuple(args.sizes),
            backbones=_backbones(args), flip=args.flip,
            val_fraction=args.val_fraction, tune_fraction=args.tune_fraction,
            **_epochs(args, len(args.sizes)),
            resume=args.resume, channel=args.channel, task=args.task, seed=args.seed,
            label_choice=_label_choice(args), limit=args.limit, progress=progress,
            segmenter_record=segmenter_record(args.segmenter_weights),
        )  # fmt: skip
    elif args.kind == "head":
        from automedseg.train.head import train_head  # torch

        card = train_head(
            args.data, args.out, val_fraction=args.val_fraction, **_epochs(args),
            cache=args.cache, resume=args.resume, channel=args.channel, task=args.task,
            seed=args.seed, label_choice=_label_choice(args), limit=args.limit,
            progress=progress, segmenter_weights=args.segmenter_weights,
            augment_copies=args.augment_copies,
        )  # fmt: skip
    else:
        if args.segmenter_weights or args.augment_copies:
            raise AutomedsegError(
                "--segmenter-weights and --augment-copies apply to --kind head only"
            )
        from automedseg.train.yolonas import train_yolonas  # torch, modern-yolonas

        card = train_yolonas(
            args.data, args.out, val_fraction=args.val_fraction, **_epochs(args),
            resume=args.resume, boxes_file=args.boxes, channel=args.channel, seed=args.seed,
            label_choice=_label_choice(args), progress=progress,
        )  # fmt: skip
    print(f"trained prompter: {card}")
    return 0


def _backbones(args: argparse.Namespace) -> str | tuple[str, ...]:
    """--backbone: one name for every member, or one per --size."""
    if len(args.backbones) == 1:
        return args.backbones[0]
    if len(args.backbones) != len(args.sizes):
        raise AutomedsegError(f"--backbone takes one name, or one per --size "
                              f"({len(args.sizes)}), not {len(args.backbones)}")  # fmt: skip
    return tuple(args.backbones)


def _epochs(args: argparse.Namespace, members: int = 1) -> dict:
    """``epochs`` only when given (each trainer's own default applies otherwise): one number,
    or with several backbone members one per member."""
    if args.epochs is None:
        return {}
    if len(args.epochs) == 1:
        return {"epochs": args.epochs[0]}
    if len(args.epochs) != members or members == 1:
        raise AutomedsegError(f"--epochs takes one number, or one per --size ({members}), not "
                              f"{len(args.epochs)}")  # fmt: skip
    return {"epochs": tuple(args.epochs)}


def _train_propagation(args: argparse.Namespace) -> int:
    from automedseg.train.propagation import tune_card  # torch

    split = args.split
    for name in ("tune_cases.txt", "val_cases.txt"):  # tuning cases where the trainer kept some
        beside = Path(args.prompter).parent / name
        if split is None and beside.is_file():
            split = beside
    entry = tune_card(
        args.prompter, args.data, split, args.limit, not args.no_progress,
        segmenter_weights=args.segmenter_weights, runtime=args.runtime,
    )  # fmt: skip
    print(f"propagation on {entry['cases']} case(s), mean Dice per label: {entry['val_dice']}")
    print(f"chosen: {entry['settings']} (written into {args.prompter})")
    return 0


def _train_domain(args: argparse.Namespace) -> int:
    from automedseg.tasks import get_task, task_in
    from automedseg.train.domain import fit_domain  # torch

    folder = Path(args.task)
    task = task_in(folder) if (folder / "prompter.json").is_file() else get_task(args.task)
    entry = fit_domain(task, args.data, limit=args.limit, runtime=args.runtime,
                       threads=args.threads, progress=not args.no_progress)  # fmt: skip
    calibration = entry["calibration"]
    print(f"domain model of {task.name}: threshold {entry['threshold']} on "
          f"{entry['fitted_on']['planes']} training planes; "
          f"{calibration['validation_flagged']:.1%} of {calibration['validation_cases']} "
          f"validation cases flagged (written into {task.folder / 'task.json'})")  # fmt: skip
    return 0


def _train_encoder(args: argparse.Namespace) -> int:
    from automedseg.train.encoder import distil_encoder  # torch
    from automedseg.train.pruned import parse_kept

    card = distil_encoder(
        args.data, args.out, epochs=args.epochs, width=args.width, backbone=args.backbone,
        val_fraction=args.val_fraction, seed=args.seed, limit=args.limit,
        threads=args.threads, resume=args.resume, task=args.task,
        segmenter_weights=args.segmenter_weights, progress=not args.no_progress,
        mask_weight=args.mask_weight, start_from=args.start_from,
        learning_rate=args.learning_rate, head=args.head, head_weight=args.head_weight,
        labels=_label_choice(args) if args.labels or args.merge_labels else None,
        kept_blocks=None if args.keep_blocks is None else parse_kept(args.keep_blocks),
    )  # fmt: skip
    print(f"distilled encoder: {card}")
    return 0


def _train_segmenter(args: argparse.Namespace) -> int:
    from automedseg.train.segmenter import train_segmenter  # torch

    card = train_segmenter(
        args.data, args.out, method=args.method, val_fraction=args.val_fraction,
        epochs=args.epochs, cache=args.cache, resume=args.resume, channel=args.channel,
        seed=args.seed, label_choice=_label_choice(args), limit=args.limit,
        learning_rate=args.learning_rate, jitter=args.jitter, select=args.select,
        planes_per_epoch=args.planes_per_epoch,
        planes_per_case=args.planes_per_case, val_planes=args.val_planes,
        progress=not args.no_progress,
    )  # fmt: skip
    print(f"tuned segmenter: {card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
