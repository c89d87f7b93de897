"""The command line end to end on the shipped examples, and its answers to bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from automedseg import io
from automedseg.cli import main
from conftest import EXAMPLES  # noqa: I001

POLYP = EXAMPLES / "kvasir_seg" / "images" / "cju0tl3uz8blh0993wxvn7ly3.jpg"
POLYP_MASK = EXAMPLES / "kvasir_seg" / "masks" / "cju0tl3uz8blh0993wxvn7ly3.jpg"
POLYP_BOX = ["315", "387", "369", "434"]
HIPPOCAMPUS = EXAMPLES / "msd_hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"


@pytest.fixture(autouse=True)
def shared_model(monkeypatch, litemedsam):
    """Reuse one loaded model (the default weights) across CLI calls to keep tests fast."""
    import automedseg.segment.litemedsam as module

    real = module.load_litemedsam
    monkeypatch.setattr(
        module,
        "load_litemedsam",
        lambda weights=None, sha256=None: litemedsam if weights is None else real(weights, sha256),
    )


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["segment", *args, "--no-progress"])
    return code, capsys.readouterr().err


def test_polyp_with_its_box_matches_the_manual_mask(tmp_path, capsys):
    code, err = run(capsys, str(POLYP), "--box", *POLYP_BOX, "--out", str(tmp_path))
    assert code == 0, err
    mask = io.read_label_map(tmp_path / f"{POLYP.stem}_mask.png")
    truth = io.read_label_map(POLYP_MASK)
    dice = 2 * ((mask > 0) & (truth > 0)).sum() / ((mask > 0).sum() + (truth > 0).sum())
    assert dice > 0.9
    assert (tmp_path / f"{POLYP.stem}_overlay.png").is_file()
    summary = json.loads((tmp_path / f"{POLYP.stem}.json").read_text())
    assert summary["objects"][0]["box_xyxy"] == [315, 387, 369, 434]
    assert summary["labels"]["1"]["voxels"] == int((mask == 1).sum())
    # a JPEG gives no pixel size: sizes in pixels, and the JSON says so
    assert summary["spacing_mm"] is None and summary["size_unit"].startswith("px")
    assert summary["objects"][0]["area_px"] == int((mask == 1).sum())
    assert "area_mm2" not in summary["objects"][0] and "area_mm2" not in summary["labels"]["1"]
    assert 50 < summary["objects"][0]["longest_diameter_px"] < 73  # the box's diagonal: 72.4


def test_volume_output_keeps_the_input_geometry(tmp_path, capsys):
    code, err = run(
        capsys, str(HIPPOCAMPUS), "--box", "10", "10", "30", "30", "--slice", "12",
        "--no-propagation", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    image = io.read_image(HIPPOCAMPUS)
    seg = io.read_image(tmp_path / "hippocampus_001_seg.nii.gz")
    assert seg.shape == image.shape
    np.testing.assert_array_equal(seg.geometry.affine, image.geometry.affine)
    assert seg.array[12].any() and not np.delete(seg.array, 12, axis=0).any()


def test_without_boxes_or_task_it_says_what_to_give(tmp_path, capsys):
    code, err = run(capsys, str(POLYP), "--out", str(tmp_path))
    assert code == 2
    assert "no prompts" in err and "--task" in err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_threads_must_be_positive(tmp_path, capsys):
    code, err = run(capsys, str(POLYP), "--box", *POLYP_BOX, "--threads", "0", "--out",
                    str(tmp_path))  # fmt: skip
    assert code == 2 and "--threads must be at least 1, not 0" in err


@pytest.mark.parametrize(
    "box, message",
    [(["500", "271", "331", "430"], "inverted"), (["331", "271", "900", "430"], "outside")],
)
def test_bad_box_is_one_clear_line_and_no_output(tmp_path, capsys, box, message):
    code, err = run(capsys, str(POLYP), "--box", *box, "--out", str(tmp_path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(POLYP) in lines[0]
    assert not any(tmp_path.iterdir())


def make_bad_inputs(folder):
    text = folder / "notes.png"
    text.write_text("this is not an image")
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    constant = folder / "constant.png"
    io.write_label_png(constant, np.full((20, 30), 7, np.uint8))
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(POLYP.read_bytes()[:2000])
    return {
        "cannot read image file": text,
        "empty": empty,
        "constant": constant,
        "truncated": truncated,
        "does not exist": folder / "missing.png",
    }


def test_bad_inputs_each_get_one_line_naming_the_file(tmp_path, capsys):
    inputs = make_bad_inputs(tmp_path)
    out = tmp_path / "out"
    for words, path in inputs.items():
        code, err = run(capsys, str(path), "--box", "1", "1", "5", "5", "--out", str(out))
        assert code == 2, (words, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], (words, err)
        if words != "truncated":  # PIL's wording for a cut JPEG varies
            assert words in lines[0], (words, lines[0])
    assert not out.exists() or not any(out.iterdir())


def test_truncated_dicom_is_refused(tmp_path, capsys):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "CT", 64, 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.arange(64 * 64, dtype=np.int16).tobytes()
    whole = tmp_path / "slice.dcm"
    pydicom.dcmwrite(whole, ds, enforce_file_format=True)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole.read_bytes()[:-3000])
    code, err = run(capsys, str(cut), "--box", "1", "1", "5", "5", "--out", str(tmp_path / "o"))
    assert code == 2 and str(cut) in err and len(err.strip().splitlines()) == 1


def test_corrupted_weights_stop_before_any_output(tmp_path, capsys):
    from automedseg.segment.litemedsam import packaged_weights_path

    weights = tmp_path / "lite_medsam.pth"
    shutil.copy(packaged_weights_path(), weights)
    with weights.open("r+b") as handle:
        handle.truncate(1000)
    out = tmp_path / "out"
    code, err = run(capsys, str(POLYP), "--box", *POLYP_BOX, "--out", str(out), "--weights",
                    str(weights))  # fmt: skip
    assert code == 2 and str(weights) in err and "checkpoint" in err
    assert not out.exists()


def test_a_bad_input_among_good_ones_does_not_stop_the_others(tmp_path, capsys):
    missing = tmp_path / "missing.png"
    code, err = run(capsys, str(missing), str(POLYP), "--box", *POLYP_BOX, "--out",
                    str(tmp_path / "o"))  # fmt: skip
    assert code == 2 and str(missing) in err
    assert (tmp_path / "o" / f"{POLYP.stem}_mask.png").is_file()


def test_importing_the_package_and_cli_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, automedseg.cli, automedseg.io; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_folder_of_frames_gives_a_mask_per_frame_and_an_overlay_video(tmp_path, capsys):
    from PIL import Image as PILImage

    frames = tmp_path / "seq1"
    frames.mkdir()
    yy, xx = np.mgrid[:64, :64]
    for t in range(5):
        disk = (yy - 30) ** 2 + (xx - 20 - 3 * t) ** 2 <= 100
        rgb = np.where(disk[..., None], [200, 80, 80], [60, 60, 60]).astype(np.uint8)
        PILImage.fromarray(rgb).save(frames / f"{t:04d}.png")
    out = tmp_path / "out"
    code, err = run(capsys, str(frames), "--box", "16", "20", "36", "40", "--slice", "2",
                    "--out", str(out))  # fmt: skip
    assert code == 0, err
    masks = sorted((out / "seq1_masks").iterdir())
    assert [p.name for p in masks] == [f"{t:04d}.png" for t in range(5)]
    assert all(io.read_label_map(p).any() for p in masks)  # followed from frame 2 both ways
    assert io.read_image(out / "seq1_overlay.mp4").shape[0] == 5


def test_sizes_are_in_mm_from_a_png_resolution_from_dicom_and_from_spacing(tmp_path, capsys):
    """A PNG with a resolution (pHYs) and --spacing give mm; PixelSpacing does for DICOM."""
    from PIL import Image as PILImage

    pixels = np.zeros((40, 50), np.uint8)
    pixels[10:20, 10:30] = 200
    png = tmp_path / "xray.png"
    PILImage.fromarray(pixels).save(png, dpi=(254, 254))  # 0.1 mm pixels
    box = ["10", "10", "29", "19"]
    code, err = run(capsys, str(png), "--box", *box, "--out", str(tmp_path / "a"))
    assert code == 0, err
    summary = json.loads((tmp_path / "a" / "xray.json").read_text())
    assert summary["spacing_mm"] == [0.1, 0.1] and summary["size_unit"] == "mm"
    assert summary["objects"][0]["area_mm2"] == pytest.approx(
        summary["labels"]["1"]["voxels"] * 0.01
    )
    plain = tmp_path / "plain.png"
    PILImage.fromarray(pixels).save(plain)
    code, err = run(capsys, str(plain), "--box", *box, "--spacing", "0.5", "0.5",
                    "--out", str(tmp_path / "b"))  # fmt: skip
    summary = json.loads((tmp_path / "b" / "plain.json").read_text())
    assert (
        code == 0 and summary["spacing_mm"] == [0.5, 0.5] and "area_mm2" in summary["labels"]["1"]
    )
    code, err = run(
        capsys, str(plain), "--box", *box, "--spacing", "0.5", "--out", str(tmp_path / "c")
    )
    assert code == 2 and "--spacing needs 2 positive sizes" in err
