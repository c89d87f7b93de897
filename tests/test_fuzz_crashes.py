"""Inputs the fuzzer (benchmarks/fuzz_readers.py) found crashing a reader, each now one clear
``AutomedsegError``: the files in tests/fuzz_crashes/ are the fuzzer's own crash inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from automedseg.errors import AutomedsegError
from automedseg.io import read_image
from automedseg.prompt import load_prompter

CRASHES = Path(__file__).parent / "fuzz_crashes"


def test_a_dicom_header_value_of_an_unknown_vr_is_an_input_error():
    with pytest.raises(AutomedsegError, match="cannot read DICOM file"):
        read_image(CRASHES / "dicom-unknown-vr-in-modality.dcm")


def test_a_card_whose_kind_is_not_a_name_is_a_weights_error(tmp_path):
    card = tmp_path / "prompter.json"
    shutil.copy(CRASHES / "card-kind-is-an-object.json", card)
    with pytest.raises(AutomedsegError, match="unknown prompter kind"):
        load_prompter(card)
