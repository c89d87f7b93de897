"""Copy a trained prompter into the package as a shipped task.

    python scripts/ship_task.py runs/head_polyp/prompter.json polyp --label 1=polyp

writes src/automedseg/models/<task>/prompter.safetensors + prompter.json (the card, with its
task name set and the weights' SHA-256 checked again).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from automedseg import io
from automedseg.checkpoints import file_sha256, read_card
from automedseg.prompt import MODELS_DIR


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
    return io.write_json(target / "prompter.json", card)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("card", type=Path)
    parser.add_argument("task")
    parser.add_argument("--label", action="append", default=[], help="VALUE=NAME, e.g. 1=polyp")
    args = parser.parse_args()
    print(ship(args.card, args.task, dict(item.split("=", 1) for item in args.label)))
