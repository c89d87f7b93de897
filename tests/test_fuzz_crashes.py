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


def test_a_broken_rle_file_is_an_input_error_without_gdcm_allocating_gigabytes():
    """pydicom decodes RLE itself: when it fails, the data is broken and GDCM is not tried
    (GDCM took 3.7 GB for this 1 kB file). Read in a child process that reports its peak
    resident memory."""
    import subprocess
    import sys

    code = ("import resource\n"
            "from automedseg.io import read_image\n"
            "from automedseg.errors import AutomedsegError\n"
            "try:\n"
            f"    read_image({str(CRASHES / 'dicom-rle-broken-offset-table.dcm')!r})\n"
            "except AutomedsegError as error:\n"
            "    print('clear error:', error)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "clear error:" in done.stdout and "cannot read DICOM file" in done.stdout
    assert int(done.stdout.split()[-1]) < 500  # MB at peak
