"""Finding the cases of a data set folder, whatever its layout.

Layouts recognised (first match wins):

* **2D**: ``images/`` + ``masks/`` with matching file stems, any image extension.
* **nnU-Net / MSD raw**: ``imagesTr/`` (and ``imagesTs/``) + ``labelsTr/``; image files named
  ``<case>.nii.gz`` or ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``… (channels); an optional
  ``dataset.json`` gives channel and label names.
* **Sequences** (video / frames): ``frames/<seq>/`` + ``masks/<seq>/``, frames sorted by name.

A case whose image has no mask (or the reverse) is still listed, with the problem recorded,
so that evaluation can report it per case and go on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from automedseg import io
from automedseg.errors import InputError
from automedseg.types import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")
CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass
class Case:
    """One evaluation case: its image file(s) (one per channel, or frames) and label file(s)."""

    case_id: str
    images: list[Path]
    labels: list[Path]
    problem: str | None = None
    """Why the case cannot be evaluated (missing mask, …), or None."""


@dataclass(frozen=True)
class LabelChoice:
    """Which labels of the manual masks count: all of them, or only ``keep`` (the others
    become background); with ``merge`` every counted label becomes one foreground, 1 (e.g.
    BraTS labels 1-4 → whole tumour)."""

    keep: tuple[int, ...] | None = None
    merge: bool = False

    def apply(self, truth: np.ndarray) -> np.ndarray:
        if self.keep is not None:
            truth = np.where(np.isin(truth, self.keep), truth, 0).astype(truth.dtype)
        return (truth > 0).astype(np.uint8) if self.merge else truth

    @classmethod
    def of_record(cls, record: dict) -> LabelChoice:
        """The choice a card's ``training`` record (``as_dict``'s keys) names."""
        keep = record.get("keep_labels")
        return cls(None if keep is None else tuple(keep), bool(record.get("merge_labels")))

    def as_dict(self) -> dict:
        """For cards and cache keys: ``keep_labels`` (list or None) and ``merge_labels``."""
        keep = None if self.keep is None else [int(v) for v in self.keep]
        return {"keep_labels": keep, "merge_labels": self.merge}


def class_names(label_names: dict[int, str], choice: LabelChoice) -> dict[int, str]:
    """Names of the classes a choice yields: the data set's names, or for merged labels the
    name of the only kept/named label, else "foreground"."""
    if not choice.merge:
        return dict(label_names)
    named = [n for v, n in label_names.items() if v != 0 and (not choice.keep or v in choice.keep)]
    return {1: named[0] if len(named) == 1 else "foreground"}


def parse_label_values(text: str) -> tuple[int, ...]:
    """ "1,3" → (1, 3); a clear error for anything but positive integers."""
    try:
        values = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise InputError(f"--labels takes positive label values separated by commas, not {text!r}")
    return values


@dataclass
class DataSet:
    root: Path
    layout: str
    """"2d", "nnunet" or "sequences"."""
    cases: list[Case]
    channel_names: list[str] = field(default_factory=list)
    label_names: dict[int, str] = field(default_factory=dict)


def stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def find_cases(root: str | Path, split: str | Path | None = None) -> DataSet:
    """The data set under ``root``; ``split`` names a file of case ids to keep (one per line,
    or a JSON list). Raises ``InputError`` for an unknown layout or an empty data set."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("data folder does not exist", root)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        data = _paired(root, root / "images", root / "masks", "2d")
    elif (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        data = _nnunet(root)
    elif (root / "frames").is_dir() and (root / "masks").is_dir():
        data = _sequences(root)
    else:
        raise InputError(
            "no known data layout: expected images/ + masks/ (2D), imagesTr/ + labelsTr/ "
            "(nnU-Net/MSD) or frames/<seq>/ + masks/<seq>/ (sequences)",
            root,
        )
    if split is not None:
        keep = read_split(Path(split))
        data.cases = [c for c in data.cases if c.case_id in keep]
    if not data.cases:
        raise InputError("no cases found" + (" in the split" if split else ""), root)
    return data


def read_split(path: Path) -> set[str]:
    """Case ids from a text file (one per line, '#' comments) or a JSON list."""
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(f"cannot read the split file ({error.strerror})", path) from None
    if path.suffix == ".json":
        try:
            ids = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"the split file is not valid JSON ({error.msg})", path) from None
        if not isinstance(ids, list):
            raise InputError("the JSON split file must hold a list of case ids", path)
        return {str(i) for i in ids}
    return {line.split("#")[0].strip() for line in text.splitlines()} - {""}


def _paired(root: Path, images_dir: Path, masks_dir: Path, layout: str) -> DataSet:
    images = {stem(p): p for p in image_files(images_dir)}
    masks = {stem(p): p for p in image_files(masks_dir)}
    cases = []
    for case_id in sorted(images.keys() | masks.keys()):
        image, mask = images.get(case_id), masks.get(case_id)
        problem = None if image and mask else ("no mask" if image else "mask without image")
        cases.append(Case(case_id, [image] if image else [], [mask] if mask else [], problem))
    return DataSet(root, layout, cases)


def _nnunet(root: Path) -> DataSet:
    meta = _dataset_json(root)
    labels = {stem(p): p for p in image_files(root / "labelsTr")}
    channels: dict[str, list[Path]] = {}
    for folder in (root / "imagesTr", root / "imagesTs"):
        if not folder.is_dir():
            continue
        for path in image_files(folder):
            match = CHANNEL.match(stem(path))
            case_id = match["case"] if match else stem(path)
            channels.setdefault(case_id, []).append(path)
    cases = []
    for case_id in sorted(channels.keys() | labels.keys()):
        images = sorted(channels.get(case_id, []))
        label = labels.get(case_id)
        problem = None if images and label else ("no label" if images else "label without image")
        cases.append(Case(case_id, images, [label] if label else [], problem))
    channels_meta = meta.get("channel_names") or meta.get("modality") or {}
    channel_names = [str(v) for _, v in sorted(channels_meta.items())]
    label_names = {}
    for name, value in meta.get("labels", {}).items():  # nnU-Net v2: {"name": id}
        if isinstance(value, int):
            label_names[value] = name
        elif str(name).isdigit():  # MSD: {"id": "name"}
            label_names[int(name)] = str(value)
    return DataSet(root, "nnunet", cases, channel_names, label_names)


def _sequences(root: Path) -> DataSet:
    cases = []
    frames_root, masks_root = root / "frames", root / "masks"
    names = {p.name for p in frames_root.iterdir() if p.is_dir()}
    names |= {p.name for p in masks_root.iterdir() if p.is_dir()}
    for name in sorted(names):
        frames = image_files(frames_root / name) if (frames_root / name).is_dir() else []
        masks = image_files(masks_root / name) if (masks_root / name).is_dir() else []
        problem = None
        if [stem(p) for p in frames] != [stem(p) for p in masks]:
            problem = f"{len(frames)} frames but {len(masks)} masks with matching names"
        cases.append(Case(name, frames, masks, problem))
    return DataSet(root, "sequences", cases)


def _dataset_json(root: Path) -> dict:
    path = root / "dataset.json"
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"dataset.json is not readable JSON ({error})", path) from None
    return meta if isinstance(meta, dict) else {}


def load_case(
    case: Case, channel: int = 0, layout: str = "2d", label_choice: LabelChoice | None = None
) -> tuple[Image, np.ndarray]:
    """The case's image (one channel) and its ground-truth label map, shapes checked.

    A sequence (frames/<seq>/) becomes a stack of frames along axis 0, evaluated frame by frame.
    ``label_choice`` selects or merges labels (default: all labels as they are).
    """
    image, truth = _load(case, channel, layout)
    return image, truth if label_choice is None else label_choice.apply(truth)


def _load(case: Case, channel: int, layout: str) -> tuple[Image, np.ndarray]:
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


def load_prediction(
    case: Case, folder: Path, shape: tuple[int, ...], label_choice: LabelChoice | None = None
) -> np.ndarray:
    """Another tool's label map for ``case`` from ``folder``: ``<case_id>.<ext>`` (any image
    extension; a sequence: ``<case_id>/`` with one file per frame, named like the masks),
    checked against the ground truth's ``shape``; ``label_choice`` applied as to the truth."""
    if case.problem:
        raise InputError(case.problem, case.images[0] if case.images else case.labels[0])
    if (folder / case.case_id).is_dir():
        found = {stem(p): p for p in image_files(folder / case.case_id)}
        missing = [stem(p) for p in case.labels if stem(p) not in found]
        if missing:
            raise InputError(f"no prediction for frame {missing[0]}", folder / case.case_id)
        predicted = np.stack([io.read_label_map(found[stem(p)]) for p in case.labels])
    else:
        paths = (
            [p for p in image_files(folder) if stem(p) == case.case_id] if folder.is_dir() else []
        )
        if not paths:
            raise InputError(f"no prediction named {case.case_id}.<ext>", folder)
        predicted = io.read_label_map(paths[0])
    if predicted.shape != shape:
        raise InputError(
            f"prediction shape {predicted.shape} does not match the mask's {shape}", folder
        )
    return predicted if label_choice is None else label_choice.apply(predicted)
