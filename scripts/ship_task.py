"""Copy a trained prompter, or the INT8 set quantized from it, into the package as a task.

    python scripts/ship_task.py runs/head_polyp/prompter.json polyp --label 1=polyp
    automedseg quantize --task polyp --out runs/quant_polyp
    python scripts/ship_task.py --int8 runs/quant_polyp polyp

The first writes src/automedseg/models/<task>/prompter.safetensors + prompter.json (the card,
with its task name set and the weights' SHA-256 checked again); the second copies
<quantize output>/int8/, openvino/ and quantization.json beside it, after checking that they
were made from the task's shipped prompter (with them, the task's default runtime is the
fastest the report finds within budget).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from automedseg import io
from automedseg.checkpoints import file_sha256, read_card
from automedseg.tasks import MODELS_DIR


def ship(card_path: Path, task: str, names: dict[str, str]) -> Path:
    card = read_card(card_path)
    weights = Path(card.pop("_path")).parent / card["weights_file"]
    if file_sha256(weights) != card["sha256"]:
        raise SystemExit(f"{weights}: SHA-256 does not match its card")
    target = MODELS_DIR / task
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, target / "prompter.safetensors")
    unknown = set(names) - set(card["labels"])
    if unknown:
        raise SystemExit(f"labels {sorted(unknown)} are not in the card: {card['labels']}")
    card.update(task=task, weights_file="prompter.safetensors")
    card["labels"].update(names)
    return io.write_json(target / "prompter.json", without_paths(card))


def without_paths(card: dict) -> dict:
    """The card with this machine's paths reduced to names (the data set's folder name, the
    split file's name): a shipped card says what it was trained on, not where it was."""
    for record in (card.get("training"), (card.get("propagation") or {}).get("chosen_on")):
        for key in ("data", "split"):
            if isinstance(record, dict) and record.get(key):
                record[key] = Path(record[key]).name
    delta = (card.get("segmenter") or {}).get("delta")
    if delta and delta.get("card"):
        delta["card"] = "segmenter.json"  # shipped beside it
    return card


def ship_int8(models: Path, task: str) -> Path:
    report = json.loads((models / "quantization.json").read_text())
    shipped = read_card(MODELS_DIR / task / "prompter.json")
    if report.get("prompter_weights_sha256") != shipped["sha256"]:
        raise SystemExit(f"{models} was quantized from another prompter than {task}'s")
    target = MODELS_DIR / task
    for runtime in ("int8", "openvino"):  # a set not made again is gone: it was the old one's
        shutil.rmtree(target / runtime, ignore_errors=True)
        if (models / runtime).is_dir():
            shutil.copytree(models / runtime, target / runtime)
    shutil.copyfile(models / "quantization.json", target / "quantization.json")
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a prompter card, or with --int8 a folder")
    parser.add_argument("task")
    parser.add_argument("--label", action="append", default=[], help="VALUE=NAME, e.g. 1=polyp")
    parser.add_argument("--int8", action="store_true", help="source is a quantize output")
    args = parser.parse_args()
    if args.int8:
        print(ship_int8(args.source, args.task))
    else:
        print(ship(args.source, args.task, dict(item.split("=", 1) for item in args.label)))
