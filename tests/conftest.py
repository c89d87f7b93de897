from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from automedseg import io

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


def write_disks(root, n=8, labels=(1,), empty_val=False):
    """n 64x64 gray images, each with a bright disk labelled by turns with ``labels``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for i in range(n):
        cy, cx, r = rng.integers(18, 46), rng.integers(18, 46), rng.integers(7, 14)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        image = np.where(disk, 200, 60).astype(np.uint8) + rng.integers(0, 20, (64, 64), np.uint8)
        mask = disk.astype(np.uint8) * labels[i % len(labels)]
        io.write_label_png(root / "images" / f"c{i:02d}.png", image)
        io.write_label_png(root / "masks" / f"c{i:02d}.png", mask)
