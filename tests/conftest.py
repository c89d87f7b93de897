from __future__ import annotations

from pathlib import Path

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
