"""Box annotations of 2D data sets: {image stem: [(x0, y0, x1, y1, label), ...]}.

Boxes come out as XYXY **inclusive** integer pixel corners (as ``types.Boxes``) and ``label``
is the class name (a string). Three formats are read:

* **COCO JSON**: ``images`` [{id, file_name, width?, height?}], ``annotations`` [{image_id,
  category_id, bbox: [x, y, w, h]}], ``categories`` [{id, name}]. ``bbox`` is continuous (top-
  left corner and size), so the pixels covered are ``round(x) … round(x + w) - 1``.
* **YOLO txt**: a ``labels/`` folder of ``<stem>.txt``, one object per line ``class cx cy w h``
  normalised to [0, 1] by the image's width and height (so the image sizes are needed); the
  class names come from ``classes.txt`` in the folder or beside it (line i = class i), else
  the class id. An empty file is an image without objects.
* **Kvasir bbox JSON**: {id: {height, width, bbox: [{label, xmin, ymin, xmax, ymax}]}}. The
  corners are taken as inclusive pixels and clipped to the image (Kvasir-SEG's are about one
  pixel outside the mask on each side, and ``xmax`` may equal the width).

Images that the annotations list without boxes map to an empty list; images that they do not
mention are absent from the dict. Malformed files raise ``InputError`` naming the file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from automedseg.data.datasets import stem
from automedseg.errors import InputError

Box = tuple[int, int, int, int, str]


def read_box_annotations(
    path: str | Path, image_sizes: Mapping[str, tuple[int, int]] | None = None
) -> dict[str, list[Box]]:
    """Boxes from a COCO or Kvasir JSON file, or a YOLO ``labels/`` folder (format detected).

    ``image_sizes`` ({stem: (height, width)}) is required for YOLO and clips the others.
    """
    path = Path(path)
    if path.is_dir():
        return read_yolo_boxes(path, image_sizes)
    data = _read_json(path)
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return read_coco_boxes(path, image_sizes, data=data)
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        return read_kvasir_boxes(path, image_sizes, data=data)
    raise InputError(
        "unknown box annotation format: expected COCO JSON (images + annotations), Kvasir "
        "JSON ({id: {height, width, bbox: [...]}}) or a YOLO labels/ folder",
        path,
    )


def read_coco_boxes(
    path: str | Path,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    *,
    data: Any = None,
) -> dict[str, list[Box]]:
    """Boxes of a COCO detection JSON file, keyed by the stem of each image's file_name."""
    path = Path(path)
    data = _json_object(path, data, "a COCO file must hold a JSON object")
    images, annotations = data.get("images"), data.get("annotations")
    categories = data.get("categories", [])
    if not all(isinstance(x, list) for x in (images, annotations, categories)):
        raise InputError("COCO 'images', 'annotations' and 'categories' must be lists", path)
    names: dict[Any, str] = {}
    for i, category in enumerate(categories):
        if not isinstance(category, dict) or "id" not in category:
            raise InputError(f"COCO category {i} has no id", path)
        names[category["id"]] = str(category.get("name", category["id"]))
    stems: dict[Any, str] = {}
    sizes: dict[str, tuple[int, int]] = dict(image_sizes or {})
    out: dict[str, list[Box]] = {}
    for i, image in enumerate(images):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise InputError(f"COCO image {i} needs an id and a file_name", path)
        key = stem(Path(str(image["file_name"])))
        if key in out:
            raise InputError(f"two COCO images share the file stem {key!r}", path)
        stems[image["id"]] = key
        out[key] = []
        if "height" in image and "width" in image and key not in sizes:
            sizes[key] = (_int(image["height"], path), _int(image["width"], path))
    for i, annotation in enumerate(annotations):
        where = f"COCO annotation {i}"
        if not isinstance(annotation, dict):
            raise InputError(f"{where} is not an object", path)
        if annotation.get("image_id") not in stems:
            raise InputError(f"{where} refers to an unknown image_id", path)
        bbox = annotation.get("bbox")
        if not _numbers(bbox, 4):
            raise InputError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}", path)
        x, y, w, h = (float(v) for v in bbox)
        if w < 0 or h < 0:
            raise InputError(f"{where}: bbox has a negative width or height ({bbox})", path)
        category = annotation.get("category_id")
        if names and category not in names:
            raise InputError(f"{where}: unknown category_id {category!r}", path)
        key = stems[annotation["image_id"]]
        corners = (round(x), round(y), round(x + w) - 1, round(y + h) - 1)
        label = names.get(category, str(category))
        out[key].append(_clip(corners, label, sizes.get(key), where, path))
    return out


def read_yolo_boxes(
    folder: str | Path,
    image_sizes: Mapping[str, tuple[int, int]] | None,
    class_names: list[str] | None = None,
) -> dict[str, list[Box]]:
    """Boxes of a YOLO ``labels/`` folder; only the stems in ``image_sizes`` are read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("YOLO labels folder does not exist", folder)
    if image_sizes is None:
        raise InputError("YOLO boxes are normalised: the image sizes are needed", folder)
    if class_names is None:
        class_names = _yolo_class_names(folder)
    out: dict[str, list[Box]] = {}
    for file in sorted(folder.glob("*.txt")):
        if file.name == "classes.txt" or file.stem not in image_sizes:
            continue
        height, width = image_sizes[file.stem]
        boxes: list[Box] = []
        try:
            lines = file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read the YOLO label file ({error})", file) from None
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"line {number}"
            if len(fields) != 5:
                raise InputError(
                    f"{where}: expected 5 numbers 'class cx cy w h', got {len(fields)}", file
                )
            try:
                klass = int(fields[0])
                cx, cy, w, h = (float(v) for v in fields[1:])
            except ValueError:
                raise InputError(f"{where}: not numbers: {line.strip()!r}", file) from None
            values = (cx, cy, w, h)
            if klass < 0 or not all(math.isfinite(v) and -0.01 <= v <= 1.01 for v in values):
                raise InputError(
                    f"{where}: expected a class id >= 0 and coordinates normalised to [0, 1], "
                    f"got {line.strip()!r}",
                    file,
                )
            x0, x1 = (cx - w / 2) * width, (cx + w / 2) * width
            y0, y1 = (cy - h / 2) * height, (cy + h / 2) * height
            label = class_names[klass] if klass < len(class_names) else str(klass)
            corners = (round(x0), round(y0), round(x1) - 1, round(y1) - 1)
            boxes.append(_clip(corners, label, (height, width), where, file))
        out[file.stem] = boxes
    return out


def read_kvasir_boxes(
    path: str | Path,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    *,
    data: Any = None,
) -> dict[str, list[Box]]:
    """Boxes of a Kvasir-SEG style JSON file ({id: {height, width, bbox: [...]}})."""
    path = Path(path)
    data = _json_object(path, data, "a Kvasir box file must hold a JSON object {id: {...}}")
    out: dict[str, list[Box]] = {}
    for key, entry in data.items():
        where = f"entry {key!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("bbox"), list):
            raise InputError(f"{where} needs a 'bbox' list", path)
        size = (image_sizes or {}).get(key)
        if size is None and "height" in entry and "width" in entry:
            size = (_int(entry["height"], path), _int(entry["width"], path))
        boxes: list[Box] = []
        for box in entry["bbox"]:
            corners = (
                [box.get(k) for k in ("xmin", "ymin", "xmax", "ymax")]
                if isinstance(box, dict)
                else None
            )
            if not _numbers(corners, 4):
                raise InputError(f"{where}: each box needs numbers xmin, ymin, xmax, ymax", path)
            x0, y0, x1, y1 = (round(float(v)) for v in corners)
            if x1 < x0 or y1 < y0:
                raise InputError(f"{where}: box has xmax < xmin or ymax < ymin ({box})", path)
            boxes.append(
                _clip((x0, y0, x1, y1), str(box.get("label", "object")), size, where, path)
            )
        out[str(key)] = boxes
    return out


def class_order(annotations: Mapping[str, list[Box]]) -> list[str]:
    """The class names used, in natural order ("2" before "10", then alphabetical)."""
    names = {box[4] for boxes in annotations.values() for box in boxes}

    def natural(name: str) -> list[tuple[int, int | str]]:
        return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p]

    return sorted(names, key=natural)


def _json_object(path: Path, data: Any, message: str) -> dict:
    """``data`` (read from ``path`` when None), which must be a JSON object, else ``message``."""
    data = _read_json(path) if data is None else data
    if not isinstance(data, dict):
        raise InputError(message, path)
    return data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise InputError(f"cannot read the box file ({error.strerror})", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"the box file is not valid JSON ({error})", path) from None


def _yolo_class_names(folder: Path) -> list[str]:
    for candidate in (folder / "classes.txt", folder.parent / "classes.txt"):
        if candidate.is_file():
            return [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
    return []


def _numbers(values: Any, count: int) -> bool:
    return (
        isinstance(values, list | tuple)
        and len(values) == count
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in values
        )
    )


def _int(value: Any, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InputError(f"image height/width must be positive numbers, got {value!r}", path)
    return int(value)


def _clip(
    corners: tuple[int, int, int, int],
    label: str,
    size: tuple[int, int] | None,
    where: str,
    path: Path,
) -> Box:
    """Clip inclusive corners to the image (when its size is known); a box of at least one
    pixel always remains unless the box lies wholly outside the image."""
    x0, y0, x1, y1 = corners
    x1, y1 = max(x1, x0), max(y1, y0)
    if size is not None:
        height, width = size
        if x0 > width - 1 or y0 > height - 1 or x1 < 0 or y1 < 0:
            raise InputError(
                f"{where}: box {corners} lies outside the {width}x{height} image", path
            )
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(width - 1, x1), min(height - 1, y1)
    return (int(x0), int(y0), int(x1), int(y1), label)
