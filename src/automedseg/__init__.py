"""automedseg: automatic medical image segmentation with SAM-family models on a CPU.

For research, not a medical device. Importing the package is cheap: the public names below
load their modules (and torch, where needed) on first use::

    import automedseg

    models = automedseg.load_models("polyp")      # the shipped task's prompter + segmenter
    image = automedseg.read_image("photo.jpg")    # Image: array + geometry + modality
    result = automedseg.segment_image(image, models.prompter, models.segmenter)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "read_image": "automedseg.io",
    "Image": "automedseg.types",
    "Boxes": "automedseg.types",
    "Result": "automedseg.types",
    "FixedBoxes": "automedseg.prompt.oracle",
    "segment_image": "automedseg.pipeline",
    "Task": "automedseg.tasks",
    "Models": "automedseg.tasks",
    "get_task": "automedseg.tasks",
    "shipped_tasks": "automedseg.tasks",
    "load_models": "automedseg.tasks",
    "segment_files": "automedseg.api",
    "evaluate": "automedseg.evaluate.runner",
    "AutomedsegError": "automedseg.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'automedseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
