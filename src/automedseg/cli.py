"""``automedseg`` command line: a thin shell over ``automedseg.api``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from automedseg.errors import AutomedsegError

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automedseg", description="Segment medical images with SAM-family models on a CPU."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    seg = commands.add_parser(
        "segment",
        help="segment images or volumes",
        description="Segment 2D images (PNG/JPEG/BMP/TIFF/DICOM) or volumes (NIfTI, DICOM "
        "series folder, multi-frame DICOM). Writes <name>_mask.png (2D) or <name>_seg.nii.gz "
        "(3D, the input's geometry), <name>_overlay.png and <name>.json into --out.",
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
    seg.add_argument(
        "--slice", dest="slice_index", type=int, help="volume slice (axis 0) the boxes are on"
    )
    seg.add_argument(
        "--modality",
        choices=("CT", "MR", "XR", "US", "RGB", "OT"),
        help="override the modality read from the file (sets intensity handling)",
    )
    seg.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("CENTER", "WIDTH"),
        help="intensity window, e.g. 40 400 for CT soft tissue",
    )
    seg.add_argument("--weights", help="LiteMedSAM state_dict (default: the packaged weights)")
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
    ev.add_argument("--weights", help="LiteMedSAM state_dict (default: the packaged weights)")
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "segment":
            return _segment(args)
        if args.command == "evaluate":
            return _evaluate(args)
    except AutomedsegError as error:
        print(f"automedseg: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("automedseg: interrupted", file=sys.stderr)
        return 130
    return 1


def _segment(args: argparse.Namespace) -> int:
    from automedseg.api import segment_files

    def report(error: AutomedsegError) -> None:
        print(f"automedseg: error: {error}", file=sys.stderr)

    outcomes = segment_files(
        args.inputs,
        args.out,
        boxes=[tuple(b) for b in args.boxes or []],
        slice_index=args.slice_index,
        modality=args.modality,
        window=None if args.window is None else tuple(args.window),
        weights=args.weights,
        progress=not args.no_progress,
        on_error=report,
    )
    failed = sum(o.error is not None for o in outcomes)
    written = sum(len(o.outputs) for o in outcomes)
    done = len(outcomes) - failed
    print(f"segmented {done} of {len(outcomes)} inputs; {written} files in {args.out}")
    return EXIT_BAD_INPUT if failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from automedseg.evaluate.runner import evaluate

    summary = evaluate(
        args.data,
        args.out,
        prompts=args.prompts,
        limit=args.limit,
        split=args.split,
        channel=args.channel,
        nsd_tolerance_mm=args.nsd_tolerance_mm,
        weights=args.weights,
        progress=not args.no_progress,
    )
    for mode, m in summary["modes"].items():
        print(
            f"{mode}: Dice {m['dice_mean']} (median {m['dice_median']}), IoU {m['iou_mean']}, "
            f"{m['n_cases']} cases, {m['n_failed']} failed, "
            f"{m['ms_per_image_median']} ms/plane; report in {args.out}/report.md"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
