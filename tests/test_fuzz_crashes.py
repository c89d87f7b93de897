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


def _peak_mb_reading(path: Path) -> tuple[str, int]:
    """(what ``read_image`` said, peak resident MB) of a fresh process reading ``path``."""
    import subprocess
    import sys

    code = ("import re\n"
            "from automedseg.io import read_image\n"
            "from automedseg.errors import AutomedsegError\n"
            "try:\n"
            f"    read_image({str(path)!r})\n"
            "except AutomedsegError as error:\n"
            "    print('clear error:', error)\n"
            "status = open('/proc/self/status').read()\n"  # this process's own peak
            "print(int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1)) // 1024)\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    said, peak = done.stdout.rsplit("\n", 2)[:2]
    return said, int(peak)


def test_a_broken_rle_file_is_an_input_error_without_gdcm_allocating_gigabytes():
    """pydicom decodes RLE itself: when it fails, the data is broken and GDCM is not tried
    (GDCM took 3.7 GB for this 1 kB file)."""
    said, peak_mb = _peak_mb_reading(CRASHES / "dicom-rle-broken-offset-table.dcm")
    assert said.startswith("clear error:") and "cannot read DICOM file" in said
    assert peak_mb < 500


def test_a_nifti_header_claiming_more_voxels_than_the_file_holds_is_refused_early():
    """153 bytes whose header describes gigabytes: nibabel took 5.8 GB before failing."""
    said, peak_mb = _peak_mb_reading(CRASHES / "nifti-header-claims-gigabytes.nii.gz")
    assert said.startswith("clear error:") and "NIfTI" in said
    assert peak_mb < 500


def test_a_series_file_claiming_a_3_gb_element_never_reaches_gdcm(tmp_path):
    """The fuzzer's series input (its two halves as two files): GDCM's series scanner took
    3 GB for the 62 bytes."""
    data = (CRASHES / "series-element-claims-3gb.bin").read_bytes()
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "f0.dcm").write_bytes(data[: len(data) // 2])
    (tmp_path / "case" / "f1.dcm").write_bytes(data[len(data) // 2 :])
    said, peak_mb = _peak_mb_reading(tmp_path / "case")
    assert said.startswith("clear error:") and "no DICOM series" in said
    assert peak_mb < 500


@pytest.mark.parametrize("name", ["card-weights-file-name-too-long.json", None])
def test_a_card_whose_weights_file_is_not_a_plain_name_is_a_weights_error(tmp_path, name):
    """The fuzzer's card names a 400-character weights file (the file system refused it with
    OSError); a card may not name a file outside its folder either."""
    card = tmp_path / "prompter.json"
    if name:
        shutil.copy(CRASHES / name, card)
    else:
        card.write_text('{"kind": "head", "weights_file": "../../etc/passwd", "sha256": "0"}')
    with pytest.raises(AutomedsegError, match="weights_file must be a file name beside the card"):
        load_prompter(card)


def test_a_card_whose_sha256_is_not_a_hex_digest_is_a_weights_error(tmp_path):
    """The fuzzer's card gives an object as its sha256 (a TypeError escaped where the mismatch
    message sliced it)."""
    card = tmp_path / "prompter.json"
    shutil.copy(CRASHES / "card-sha256-is-an-object.json", card)
    (tmp_path / "w.safetensors").write_bytes(b"x" * 64)
    with pytest.raises(AutomedsegError, match="sha256 must be 64 hexadecimal digits"):
        load_prompter(card)
