from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def litemedsam():
    """The real LiteMedSAM, loaded once for the whole session."""
    from automedseg.segment.litemedsam import load_litemedsam

    return load_litemedsam()


@pytest.fixture()
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is not present (a user's fresh clone)")
    return SHARED_DATASETS


class BoxFiller:
    """A stand-in for LiteMedSAM: each box's mask is the box itself."""

    def __init__(self) -> None:
        self.shape: tuple[int, int] = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.shape = image.shape[:2]

    def predict(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        masks = np.zeros((len(boxes_xyxy), *self.shape), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, np.asarray(boxes_xyxy, int), strict=True):
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return masks
