"""Tests for automedseg.io with tiny real files written in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from automedseg.errors import InputError
from automedseg.io import (
    read_image,
    read_label_map,
    write_json,
    write_label_png,
    write_nifti,
    write_overlay_png,
)
from automedseg.types import Geometry, Image

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"


# ---------------------------------------------------------------- DICOM helpers


def make_dicom(
    pixels: np.ndarray,
    *,
    sop_class: str = CT_STORAGE,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    series_uid: str | None = None,
    **tags: object,
) -> Dataset:
    """A minimal valid dataset holding ``pixels`` ((H, W), (F, H, W) or (H, W, 3) uint)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.PatientID = "test"
    rgb = photometric in ("RGB", "YBR_FULL")
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = photometric
    if rgb:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (
        bits,
        min(bits, bits_stored),
        min(bits, bits_stored) - 1,
    )
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).astype(f"<u{bits // 8}").tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# An oblique CT series: rows along (0.6, 0.8, 0), columns along (0, 0, -1) in LPS.
ROW_COS, COL_COS = np.array([0.6, 0.8, 0.0]), np.array([0.0, 0.0, -1.0])
NORMAL = np.cross(ROW_COS, COL_COS)  # (-0.8, 0.6, 0)
ORIGIN_LPS = np.array([10.0, -20.0, 30.0])


def stored_ct(k: int) -> np.ndarray:
    """Slice k of the test series: unique values, (6 rows, 8 columns)."""
    return (k * 100 + np.arange(48).reshape(6, 8)).astype(np.uint16)


def write_ct_series(folder: Path, n: int = 4, series_uid: str | None = None) -> Path:
    uid = series_uid or generate_uid()
    for k in (2, 0, 3, 1)[:n] if n == 4 else range(n):  # files written out of order
        position = ORIGIN_LPS + k * 2.5 * NORMAL
        ds = make_dicom(
            stored_ct(k),
            series_uid=uid,
            ImageOrientationPatient=[*ROW_COS, *COL_COS],
            ImagePositionPatient=[float(v) for v in position],
            PixelSpacing=[0.5, 0.7],
            SliceThickness=2.5,
            RescaleSlope=2,
            RescaleIntercept=-1024,
            WindowCenter=[40, 400],
            WindowWidth=[400, 2000],
            InstanceNumber=n - k,
        )
        save(ds, folder / f"img{(7 * k) % 5}")  # no extension, names not in slice order
    return folder


# ---------------------------------------------------------------- DICOM


def test_dicom_series_values_order_and_affine(tmp_path):
    folder = write_ct_series(tmp_path / "ct")
    image = read_image(folder)
    assert image.spatial_dims == 3 and image.array.shape == (4, 6, 8)
    assert image.array.dtype == np.float32
    for k in range(4):  # slice order along the normal, HU = 2 * stored - 1024
        np.testing.assert_array_equal(image.array[k], 2.0 * stored_ct(k) - 1024)
    expected = np.array(
        [
            [-0.42, 0.0, 2.0, -10.0],  # column 0: 0.7 * row cosines, LPS → RAS
            [-0.56, 0.0, -1.5, 20.0],  # column 1: 0.5 * column cosines
            [0.0, -0.5, 0.0, 30.0],  # column 2: 2.5 * normal
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(image.geometry.affine, expected, atol=1e-5)
    np.testing.assert_allclose(image.geometry.spacing(3), (2.5, 0.5, 0.7), atol=1e-5)
    assert image.modality == "CT" and image.window == (40.0, 400.0)
    assert image.source == folder


def test_dicom_folder_with_two_series_is_refused(tmp_path):
    folder = tmp_path / "mixed"
    write_ct_series(folder, n=2, series_uid="1.2.3.1")
    save(make_dicom(stored_ct(0), series_uid="1.2.3.2"), folder / "other.dcm")
    with pytest.raises(InputError, match="2 DICOM series") as info:
        read_image(folder)
    assert "1.2.3.1" in str(info.value) and "1.2.3.2" in str(info.value)


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM"):
        read_image(tmp_path)


def test_multiframe_dicom_is_a_sorted_volume(tmp_path):
    z_of_frame = [11.0, 5.0, 8.0]  # stored out of order
    frames = np.stack([np.full((2, 3), 1000 + f, np.uint16) for f in range(3)])
    per_frame = []
    for z in z_of_frame:
        position = Dataset()
        position.ImagePositionPatient = [4.0, 6.0, z]
        group = Dataset()
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    orient, measures, rescale, shared = Dataset(), Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.6], 3
    rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, -1024, "HU"
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds = make_dicom(
        frames,
        sop_class=ENHANCED_CT_STORAGE,
        NumberOfFrames=3,
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
        SharedFunctionalGroupsSequence=Sequence([shared]),
    )
    image = read_image(save(ds, tmp_path / "enhanced.dcm"))
    assert image.spatial_dims == 3 and image.array.shape == (3, 2, 3)
    np.testing.assert_array_equal(image.array[:, 0, 0], [1001 - 1024, 1002 - 1024, 1000 - 1024])
    expected = np.array([[-0.6, 0, 0, -4], [0, -0.8, 0, -6], [0, 0, 3, 5], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(image.geometry.affine, expected, atol=1e-6)


def test_single_dicom_without_extension_is_2d_xray(tmp_path):
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    ds = make_dicom(
        pixels,
        sop_class=DX_STORAGE,
        modality="DX",
        bits_stored=12,
        PixelSpacing=[0.2, 0.3],
        WindowCenter=[1000, 500],
        WindowWidth=[2000, 800],
    )
    image = read_image(save(ds, tmp_path / "xray"))
    assert image.spatial_dims == 2 and image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, pixels)
    assert image.geometry.spacing(2) == pytest.approx((0.2, 0.3))
    assert image.modality == "XR" and image.window == (1000.0, 2000.0)


def test_monochrome1_is_inverted(tmp_path):
    pixels = np.array([[0, 100], [4000, 4095]], dtype=np.uint16)
    ds = make_dicom(
        pixels,
        sop_class=DX_STORAGE,
        modality="CR",
        photometric="MONOCHROME1",
        bits_stored=12,
        WindowCenter=1000,
        WindowWidth=500,
    )
    image = read_image(save(ds, tmp_path / "cr.dcm"))
    np.testing.assert_array_equal(image.array, 4095 - pixels.astype(np.float32))
    assert image.window == (3095.0, 500.0)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_dicom_is_rgb_uint8(tmp_path, photometric):
    gray = np.array([[10, 200], [90, 255]], dtype=np.uint8)
    if photometric == "RGB":
        pixels = np.stack([gray, gray // 2, gray // 3], axis=-1)
    else:  # Y = gray with neutral chroma is the same gray in RGB
        pixels = np.stack([gray, np.full_like(gray, 128), np.full_like(gray, 128)], axis=-1)
    ds = make_dicom(pixels, sop_class=US_STORAGE, modality="US", photometric=photometric)
    image = read_image(save(ds, tmp_path / "us.dcm"))
    assert image.array.shape == (2, 2, 3) and image.array.dtype == np.uint8
    assert image.modality == "US"
    expected = pixels if photometric == "RGB" else np.stack([gray] * 3, axis=-1)
    np.testing.assert_allclose(image.array, expected, atol=1)


def test_truncated_dicom_is_an_input_error(tmp_path):
    path = save(make_dicom(stored_ct(0)), tmp_path / "ct.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(info.value).startswith(str(path))


def test_dicom_with_too_little_pixel_data_is_an_input_error(tmp_path):
    ds = make_dicom(stored_ct(0))
    ds.Rows = 60  # header promises ten times the pixels that are stored
    with pytest.raises(InputError, match="DICOM"):
        read_image(save(ds, tmp_path / "short.dcm"))


# ---------------------------------------------------------------- NIfTI


def oblique_affine() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 1.1, 3.0])
    affine[:3, 3] = [-12.5, 40.25, 7.0]
    return affine.astype(np.float32).astype(np.float64)  # what a NIfTI header can hold


def test_nifti_orientation_and_exact_round_trip(tmp_path):
    x, y, z = np.meshgrid(np.arange(4), np.arange(3), np.arange(2), indexing="ij")
    data = (100 * x + 10 * y + z).astype(np.int16)  # nibabel order (x, y, z)
    source = nib.Nifti1Image(data, oblique_affine())
    source.header.set_sform(oblique_affine(), code=1)
    nib.save(source, tmp_path / "in.nii.gz")

    image = read_image(tmp_path / "in.nii.gz")
    assert image.spatial_dims == 3 and image.array.shape == (2, 3, 4)
    assert image.array.dtype == np.int16  # no scaling: integer type kept
    assert image.array[1, 2, 3] == 321  # [z, y, x]
    np.testing.assert_array_equal(image.geometry.affine, oblique_affine())

    out = write_nifti(tmp_path / "sub" / "labels.nii.gz", image.array, image.geometry)
    written = nib.load(out)
    assert written.get_data_dtype() == np.uint16  # max 321 > 255
    np.testing.assert_array_equal(written.affine, oblique_affine())
    assert int(written.header["sform_code"]) == 1 and int(written.header["qform_code"]) == 1
    np.testing.assert_allclose(written.get_qform(), oblique_affine(), atol=1e-4)
    again = read_image(out)
    np.testing.assert_array_equal(again.array, image.array)
    np.testing.assert_array_equal(again.geometry.affine, image.geometry.affine)
    np.testing.assert_array_equal(read_label_map(out), image.array)


def test_nifti_scaling_2d_and_4d(tmp_path):
    scaled = nib.Nifti1Image(np.arange(6, dtype=np.int16).reshape(3, 2), np.eye(4))
    scaled.header.set_slope_inter(0.5, 10)
    nib.save(scaled, tmp_path / "flat.nii")
    image = read_image(tmp_path / "flat.nii")
    assert image.array.shape == (1, 2, 3) and image.array.dtype == np.float32
    assert image.array[0, 1, 2] == pytest.approx(10 + 0.5 * 5)

    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 1), np.uint8), np.eye(4)), tmp_path / "t1.nii")
    assert read_image(tmp_path / "t1.nii").array.shape == (2, 2, 2)
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.uint8), np.eye(4)), tmp_path / "t3.nii")
    with pytest.raises(InputError, match=r"4D NIfTI \(3 volumes\) is not supported"):
        read_image(tmp_path / "t3.nii")


def test_corrupt_nifti_is_an_input_error(tmp_path):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="NIfTI"):
        read_image(path)


# ---------------------------------------------------------------- raster


def test_16bit_png_keeps_uint16(tmp_path):
    pixels = np.array([[0, 1000, 40000], [65535, 7, 3]], dtype=np.uint16)
    PILImage.fromarray(pixels).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    assert image.array.dtype == np.uint16 and image.modality == "OT"
    np.testing.assert_array_equal(image.array, pixels)
    np.testing.assert_array_equal(image.geometry.affine, np.eye(4))


def test_rgb_jpeg(tmp_path):
    pixels = np.zeros((8, 10, 3), np.uint8)
    pixels[..., 0] = 200
    PILImage.fromarray(pixels).save(tmp_path / "photo.jpg", quality=95)
    image = read_image(tmp_path / "photo.jpg")
    assert image.array.shape == (8, 10, 3) and image.array.dtype == np.uint8
    assert image.modality == "RGB" and image.spatial_dims == 2 and image.channels == 3
    assert abs(int(image.array[4, 5, 0]) - 200) < 5


def test_alpha_and_palette_images(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 50, 0
    PILImage.fromarray(rgba).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png").array.shape == (2, 2, 3)
    gray_palette = PILImage.fromarray(np.array([[0, 7], [9, 3]], np.uint8), mode="L").convert("P")
    gray_palette.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    assert image.array.shape == (2, 2) and image.modality == "OT"
    np.testing.assert_array_equal(image.array, [[0, 7], [9, 3]])
    PILImage.fromarray(rgba[..., 1:3]).save(tmp_path / "la.png")  # mode LA
    assert read_image(tmp_path / "la.png").array.shape == (2, 2)


@pytest.mark.parametrize(
    ("dtype", "mode"), [(np.uint8, "L"), (np.uint16, "I;16"), (np.int32, "I"), (np.float32, "F")]
)
def test_gray_tiff_keeps_its_type(tmp_path, dtype, mode):
    pixels = np.array([[0, 3], [250, 7]], dtype=dtype)
    PILImage.fromarray(pixels).save(tmp_path / "x.tif")
    image = read_image(tmp_path / "x.tif")
    assert image.array.dtype == dtype and image.modality == "OT"
    np.testing.assert_array_equal(image.array, pixels)


def test_tiff_stack_is_a_volume(tmp_path):
    pages = [PILImage.fromarray(np.full((3, 4), v, np.uint8)) for v in (1, 2, 3)]
    pages[0].save(tmp_path / "stack.tiff", save_all=True, append_images=pages[1:])
    image = read_image(tmp_path / "stack.tiff")
    assert image.spatial_dims == 3 and image.array.shape == (3, 3, 4)
    np.testing.assert_array_equal(image.array[:, 0, 0], [1, 2, 3])
    np.testing.assert_array_equal(read_label_map(tmp_path / "stack.tiff"), image.array)


# ---------------------------------------------------------------- label maps


@pytest.mark.parametrize("top", [2, 300])
def test_label_png_round_trip(tmp_path, top):
    labels = np.array([[0, 1, 1], [2, top, 0]])
    out = write_label_png(tmp_path / "deep" / "labels.png", labels)
    read = read_label_map(out)
    assert read.dtype == (np.uint8 if top < 256 else np.uint16)
    np.testing.assert_array_equal(read, labels)


def test_binary_png_0_255_becomes_0_1(tmp_path):
    PILImage.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "m.png"), [[0, 1], [1, 0]])


def test_jpeg_mask_with_artefacts(tmp_path):
    mask = np.zeros((32, 40), np.uint8)
    mask[8:20, 10:31] = 255
    PILImage.fromarray(mask).convert("RGB").save(tmp_path / "mask.jpg", quality=60)
    assert len(np.unique(np.asarray(PILImage.open(tmp_path / "mask.jpg")))) > 2  # artefacts
    labels = read_label_map(tmp_path / "mask.jpg")
    assert labels.shape == (32, 40) and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1}
    assert np.mean(labels != (mask > 0)) < 0.01


# ---------------------------------------------------------------- bad inputs


def test_bad_inputs_name_the_path(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image at all\n" * 20)
    empty = tmp_path / "empty.png"
    empty.touch()
    fake_png = tmp_path / "fake.png"
    fake_png.write_text("hello")
    cases = [
        (text, "not a readable image"),
        (empty, "empty file"),
        (tmp_path / "missing.dcm", "does not exist"),
        (fake_png, "cannot read"),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message) as info:
            read_image(path)
        assert str(info.value).startswith(f"{path}: ")
        with pytest.raises(InputError, match=message):
            read_label_map(path)


# ---------------------------------------------------------------- writers


def test_writers_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "labels.png"
    target.write_bytes(b"old")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(PILImage.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_label_png(target, np.zeros((2, 2), np.uint8))
    with pytest.raises(OSError, match="disk full"):
        write_overlay_png(tmp_path / "overlay.png", Image(np.zeros((2, 2)), 2), np.zeros((2, 2)))

    def broken_stream(self, io_obj, **kwargs):
        io_obj.write(b"half a nifti")
        raise OSError("disk full")

    monkeypatch.setattr(nib.Nifti1Image, "to_stream", broken_stream)
    with pytest.raises(OSError):
        write_nifti(tmp_path / "seg.nii.gz", np.zeros((1, 2, 2), np.uint8), Geometry())
    with pytest.raises(TypeError):
        write_json(tmp_path / "out.json", {"x": object()})
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png"]


def test_overlay_png(tmp_path):
    gray = np.tile(np.linspace(-1000, 1000, 9, dtype=np.float32), (7, 1))
    labels = np.zeros((7, 9), np.uint8)
    labels[1:6, 2:7] = 1
    image = Image(gray, 2, window=(0.0, 2000.0))
    out = write_overlay_png(tmp_path / "o" / "overlay.png", image, labels)
    rgb = np.asarray(PILImage.open(out))
    assert rgb.shape == (7, 9, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 8]) == (255, 255, 255) and tuple(rgb[0, 0]) == (0, 0, 0)  # window
    inside = rgb[3, 4].astype(int)  # gray 128 blended with label 1's colour (230, 159, 0)
    np.testing.assert_allclose(inside, 0.55 * 128 + 0.45 * np.array([230, 159, 0]), atol=1.5)
    assert tuple(rgb[1, 4]) == (230, 159, 0)  # the 1-px contour
    volume = Image(np.zeros((3, 7, 9), np.int16), 3)
    labels3 = np.zeros((3, 7, 9), np.uint8)
    labels3[2, 3, 3] = 2
    rgb3 = np.asarray(PILImage.open(write_overlay_png(tmp_path / "v.png", volume, labels3)))
    assert tuple(rgb3[3, 3]) != (0, 0, 0)  # the labelled slice was chosen


def test_write_json_converts_numpy(tmp_path):
    data = {
        "dice": np.float32(0.5),
        "n": np.int64(3),
        "shape": np.array([2, 3]),
        "path": Path("a/b"),
        "nan": float("nan"),
        1: (True, None),
    }
    out = write_json(tmp_path / "j" / "r.json", data)
    text = out.read_text()
    assert text.startswith('{\n  "dice": 0.5')
    assert json.loads(text) == {
        "dice": 0.5,
        "n": 3,
        "shape": [2, 3],
        "path": "a/b",
        "nan": None,
        "1": [True, None],
    }


def test_import_is_cheap():
    code = (
        "import sys, automedseg.io; "
        "print([m for m in ('nibabel', 'pydicom', 'SimpleITK') if m in sys.modules])"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "[]"


def test_compressed_dicom_pydicom_cannot_decode_falls_back_to_gdcm(tmp_path):
    """JPEG Lossless (process 14), written by GDCM: pydicom has no decoder for it here."""
    import pydicom
    import SimpleITK as sitk
    from pydicom.uid import JPEGLosslessSV1

    pixels = (np.arange(48).reshape(6, 8) * 20).astype(np.int16)
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(tmp_path / "lossless.dcm"))
    writer.SetImageIO("GDCMImageIO")
    writer.UseCompressionOn()
    writer.SetCompressor("JPEG")
    writer.Execute(sitk.GetImageFromArray(pixels))
    assert pydicom.dcmread(tmp_path / "lossless.dcm").file_meta.TransferSyntaxUID == JPEGLosslessSV1
    image = read_image(tmp_path / "lossless.dcm")
    assert image.spatial_dims == 2
    np.testing.assert_array_equal(image.array, pixels)


def test_a_file_named_dcm_that_is_not_dicom_says_what_it_holds(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("patient notes, not an image")
    with pytest.raises(InputError, match="not a DICOM file: it holds text"):
        read_image(text)
    picture = tmp_path / "photo.dcm"
    PILImage.fromarray(np.zeros((4, 4), np.uint8)).save(picture, format="PNG")
    with pytest.raises(InputError, match="not a DICOM file: it holds a PNG image"):
        read_image(picture)


def test_the_pixel_size_is_known_from_pixel_spacing_and_unknown_without(tmp_path):
    pixels = np.arange(48, dtype=np.uint16).reshape(6, 8)
    spaced = make_dicom(pixels, sop_class=DX_STORAGE, modality="DX", ImagerPixelSpacing=[0.35] * 2)
    with_spacing = save(spaced, tmp_path / "a.dcm")
    without = save(make_dicom(pixels, sop_class=DX_STORAGE, modality="DX"), tmp_path / "b.dcm")
    known = read_image(with_spacing)
    assert known.spacing_known and known.geometry.spacing(2) == pytest.approx((0.35, 0.35))
    assert not read_image(without).spacing_known
    PILImage.fromarray(pixels.astype(np.uint8)).save(tmp_path / "c.png")
    assert not read_image(tmp_path / "c.png").spacing_known
    PILImage.fromarray(pixels.astype(np.uint8)).save(tmp_path / "d.png", dpi=(72, 72))
    assert not read_image(tmp_path / "d.png").spacing_known  # a screen default says nothing


def test_the_same_label_map_writes_the_same_nifti_bytes(tmp_path):
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 1:3, 2:4] = 2
    first = write_nifti(tmp_path / "a" / "seg.nii.gz", labels, Geometry())
    second = write_nifti(tmp_path / "b" / "seg.nii.gz", labels, Geometry())
    assert first.read_bytes() == second.read_bytes()
