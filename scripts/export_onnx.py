"""Export a shipped task's models to ONNX and report how closely ONNX Runtime follows PyTorch.

    python scripts/export_onnx.py --task polyp --out runs/onnx_polyp

writes OUT/image_encoder.onnx, OUT/mask_decoder.onnx and OUT/prompter.onnx, each with its
JSON card, checked against PyTorch on the example images (default: the shipped Kvasir-SEG
cases), then prints each model's size and parity, and per image the Dice of the final label
maps (ONNX Runtime vs PyTorch, both with the task's automatic prompts), the embedding's max
abs difference and the encoder's time in each runtime.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from automedseg import io
from automedseg.checkpoints import read_card
from automedseg.deploy import export
from automedseg.intensity import to_unit_range
from automedseg.pipeline import segment_image
from automedseg.runtime.onnx import (
    OnnxLiteMedSAMPredictor,
    load_onnx_head_prompter,
    load_onnx_predictor,
)
from automedseg.segment.litemedsam import LiteMedSAMPredictor, preprocess
from automedseg.tasks import get_task, load_models

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "kvasir_seg" / "images"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def oracle_dice(
    image_path: Path, torch_predictor: LiteMedSAMPredictor, onnx_predictor: OnnxLiteMedSAMPredictor
) -> str:
    """Dice of the two runtimes' masks for the box of the image's ground-truth mask (beside
    ``images/`` in ``masks/``, JPEG thresholded > 127), or "-" without one."""
    mask_path = image_path.parent.parent / "masks" / image_path.name
    if not mask_path.is_file():
        return "-"
    mask = io.read_image(mask_path).array
    rows, cols = np.nonzero((mask[..., 0] if mask.ndim == 3 else mask) > 127)
    box = np.array([[cols.min(), rows.min(), cols.max(), rows.max()]], np.float32)
    masks = []
    for predictor in (torch_predictor, onnx_predictor):
        predictor.set_image(to_unit_range(io.read_image(image_path)))
        masks.append(predictor.predict(box)[0])
    return f"{dice(*masks):.6f}"


def main(task: str, out: Path, images: list[Path], threads: int) -> None:
    torch.set_num_threads(threads)
    card = read_card(get_task(task).prompter)
    if card.get("kind") != "head":
        raise SystemExit(f"task {task!r} has a {card.get('kind')!r} prompter; only heads so far")
    models = load_models(task, runtime="torch")
    prompter, torch_predictor = models.prompter, models.segmenter
    model = torch_predictor.model
    planes = [to_unit_range(io.read_image(path)) for path in images]

    encoder_inputs, decoder_inputs, head_inputs = [], [], []
    for plane in planes:
        torch_predictor.set_image(plane)
        encoder_inputs.append((preprocess(plane)[0],))
        head_inputs.append((torch_predictor.embedding,))
        boxes = prompter.find(plane, torch_predictor.embedding).xyxy
        if len(boxes) == 0:  # still check the decoder: the whole image as the box
            boxes = np.array([[0, 0, plane.shape[1] - 1, plane.shape[0] - 1]], np.float32)
        boxes_256 = torch.as_tensor(boxes, dtype=torch.float32) * torch_predictor.scale
        decoder_inputs.append((torch_predictor.embedding, boxes_256))

    exported = {
        "image encoder": export.export_image_encoder(model, out / "image_encoder", encoder_inputs),
        "mask decoder": export.export_mask_decoder(model, out / "mask_decoder", decoder_inputs),
        "head prompter": export.export_head_prompter(
            prompter, out / "prompter", card["sha256"], head_inputs, task=task
        ),
    }
    print(f"{'model':<15} {'MB':>7} {'max abs diff':>13} {'1 - cosine':>11}  file")
    for name, result in exported.items():
        print(
            f"{name:<15} {result.size_mb:7.2f} {result.max_abs_diff:13.3g} "
            f"{1 - result.cosine:11.2g}  {result.onnx_path}"
        )

    onnx_predictor = load_onnx_predictor(
        out / "image_encoder.json", out / "mask_decoder.json", threads
    )
    onnx_prompter = load_onnx_head_prompter(out / "prompter.json", threads)
    print(
        f"\n{'image':<26} {'boxes pt/onnx':>13} {'Dice':>9} {'px differ':>9} {'oracle Dice':>11} "
        f"{'emb diff':>9} {'encoder s pt/onnx':>17}"
    )
    for path, plane in zip(images, planes, strict=True):
        image = io.read_image(path)
        reference = segment_image(image, prompter, torch_predictor)
        ours = segment_image(image, onnx_prompter, onnx_predictor)
        oracle = oracle_dice(path, torch_predictor, onnx_predictor)
        clock = time.perf_counter()
        torch_predictor.set_image(plane)
        torch_seconds, clock = time.perf_counter() - clock, time.perf_counter()
        onnx_predictor.set_image(plane)
        onnx_seconds = time.perf_counter() - clock
        embedding_diff = np.abs(onnx_predictor.embedding - torch_predictor.embedding.numpy()).max()
        print(
            f"{path.stem:<26} {len(reference.boxes):>6}/{len(ours.boxes):<6} "
            f"{dice(reference.label_map, ours.label_map):9.6f} "
            f"{int((reference.label_map != ours.label_map).sum()):9d} {oracle:>11} "
            f"{embedding_diff:9.2e} {torch_seconds:8.2f}/{onnx_seconds:<8.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, help="a shipped task, e.g. polyp")
    parser.add_argument("--out", type=Path, required=True, help="folder for the .onnx files")
    parser.add_argument(
        "--images",
        type=Path,
        nargs="+",
        default=sorted(EXAMPLES.glob("*.jpg")),
        help="images to check parity on (default: the shipped Kvasir-SEG examples)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both runtimes")
    args = parser.parse_args()
    main(args.task, args.out, args.images, args.threads)
