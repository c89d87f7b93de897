"""DICOM-SEG output, and geometry kept from oblique, anisotropic inputs to every output."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from automedseg import io
from automedseg.api import segment_files
from automedseg.prompt.oracle import FixedBoxes
from automedseg.tasks import Models, Task
from automedseg.types import Boxes
from conftest import BoxFiller  # noqa: I001
from test_io import (  # noqa: I001
    COL_COS,
    DX_STORAGE,
    ENHANCED_CT_STORAGE,
    ROW_COS,
    make_dicom,
    oblique_affine,
    save,
    write_ct_series,
)

hd = pytest.importorskip("highdicom")
NAMES = {1: "liver", 3: "tumour"}


def ct_series(folder: Path) -> Path:
    """``test_io``'s oblique CT series (4 slices 2.5 mm apart, 0.5 x 0.7 mm pixels, files out
    of order), with the Frame of Reference every real CT series carries."""
    write_ct_series(folder)
    frame_of_reference = generate_uid()
    for file in folder.iterdir():
        ds = pydicom.dcmread(file)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.save_as(file, enforce_file_format=True)
    return folder


def slice_of(ds: Dataset) -> int:
    """The series slice k a source file holds: ``stored_ct(k)`` starts at k * 100."""
    return int(ds.pixel_array[0, 0]) // 100


def two_labels(shape: tuple[int, ...]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[1, 1:3, 2:5] = 1
    labels[2, 2:5, 1:4] = 1
    labels[2, 0, 6:8] = 3  # label values need not be consecutive
    labels[3, 4:6, 0:3] = 3
    return labels


def test_series_round_trip_references_and_names(tmp_path):
    image = io.read_image(ct_series(tmp_path / "ct"))
    labels = two_labels(image.shape)
    out = io.write_dicom_seg(tmp_path / "out" / "ct_seg.dcm", labels, image.source_files, NAMES)

    seg = hd.seg.segread(out)
    sources = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, image.source_files)}
    by_slice = sorted(sources, key=lambda uid: slice_of(sources[uid]))  # independent of reader
    pixels = seg.get_pixels_by_source_instance(by_slice, segment_numbers=[1, 2])
    np.testing.assert_array_equal(pixels[..., 0], labels == 1)
    np.testing.assert_array_equal(pixels[..., 1], labels == 3)

    series = next(iter(sources.values())).SeriesInstanceUID
    assert {uid[1] for uid in seg.get_source_image_uids()} == {series}
    assert {uid[2] for uid in seg.get_source_image_uids()} == set(sources)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    assert seg.SegmentationType == "BINARY" and seg.SeriesInstanceUID != series
    described = [seg.get_segment_description(n) for n in (1, 2)]
    assert [d.segment_label for d in described] == ["liver", "tumour"]
    assert all(d.algorithm_type.value == "AUTOMATIC" for d in described)
    assert described[0].algorithm_identification[0].AlgorithmName == "automedseg"
    import automedseg

    assert described[0].algorithm_identification[0].AlgorithmVersion == automedseg.__version__


def assert_frames_on_source_slices(seg: Dataset, sources: dict[str, Dataset]) -> None:
    """Each SEG frame lies where its source slice lies: same position, orientation, spacing."""
    assert len(seg.PerFrameFunctionalGroupsSequence) > 0
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        source = sources[uid]
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(position, source.ImagePositionPatient, atol=1e-4)
        orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
        np.testing.assert_allclose(orientation, source.ImageOrientationPatient, atol=1e-6)
        spacing = shared.PixelMeasuresSequence[0].PixelSpacing
        np.testing.assert_allclose(spacing, source.PixelSpacing)


def test_seg_frames_lie_on_their_source_slices(tmp_path):
    image = io.read_image(ct_series(tmp_path / "ct"))
    out = io.write_dicom_seg(tmp_path / "s.dcm", two_labels(image.shape), image.source_files)
    seg = pydicom.dcmread(out)
    sources = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, image.source_files)}
    assert_frames_on_source_slices(seg, sources)
    assert len(seg.PerFrameFunctionalGroupsSequence) == 4  # (slice, segment) pairs not empty
    assert hd.seg.segread(out).get_segment_description(2).segment_label == "label 3"


def test_multiframe_source_frames_are_put_back_in_file_order(tmp_path):
    z_of_frame = [11.0, 5.0, 8.0]  # stored out of order
    # 2 x 5 pixels: frames are not byte-aligned in the 1-bit Pixel Data.
    frames = np.stack([np.full((2, 5), 10 * f, np.uint16) for f in range(3)])
    per_frame = []
    for z in z_of_frame:
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = [4.0, 6.0, z]
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    orient, measures, shared = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.6], 3
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds = make_dicom(
        frames,
        sop_class=ENHANCED_CT_STORAGE,
        NumberOfFrames=3,
        FrameOfReferenceUID=generate_uid(),
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
        SharedFunctionalGroupsSequence=Sequence([shared]),
    )
    image = io.read_image(save(ds, tmp_path / "enhanced.dcm"))
    labels = np.zeros(image.shape, np.uint8)
    labels[0, 0, 0] = 1  # slice 0 = z 5 mm = file frame 2 (1-based)
    labels[2, 1, 2:5] = 1  # slice 2 = z 11 mm = file frame 1
    out = io.write_dicom_seg(tmp_path / "seg.dcm", labels, image.source_files)

    seg = hd.seg.segread(out)
    pixels = seg.get_pixels_by_source_frame(
        ds.SOPInstanceUID, [1, 2, 3], assert_missing_frames_are_empty=True
    )[..., 0]
    np.testing.assert_array_equal(pixels, labels[[2, 0, 1]])
    for frame in seg.PerFrameFunctionalGroupsSequence:
        number = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber
        z = frame.PlanePositionSequence[0].ImagePositionPatient[2]
        assert z == z_of_frame[number - 1]


def test_single_2d_dicom(tmp_path):
    ds = make_dicom(np.zeros((3, 4), np.uint16), sop_class=DX_STORAGE, modality="DX")
    image = io.read_image(save(ds, tmp_path / "xray"))
    labels = np.array([[0, 1, 1, 0], [0, 2, 2, 0], [0, 0, 0, 0]], np.uint8)
    seg = hd.seg.segread(io.write_dicom_seg(tmp_path / "x.dcm", labels, image.source_files))
    pixels = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], segment_numbers=[1, 2])
    np.testing.assert_array_equal(pixels[0], np.stack([labels == 1, labels == 2], axis=-1))


def test_empty_bad_and_failed_writes_leave_no_file(tmp_path, monkeypatch):
    image = io.read_image(ct_series(tmp_path / "ct"))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="empty"):
        io.write_dicom_seg(out / "a.dcm", np.zeros(image.shape, np.uint8), image.source_files)
    with pytest.raises(ValueError, match="does not match"):
        io.write_dicom_seg(out / "b.dcm", np.ones((3, 6, 8), np.uint8), image.source_files)

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half a dicom")
        raise OSError("disk full")

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.write_dicom_seg(out / "c.dcm", two_labels(image.shape), image.source_files)
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------- geometry through the CLI


@pytest.fixture()
def box_filler() -> Models:
    """``segment`` without weights: ``BoxFiller`` in LiteMedSAM's place (torch not loaded)."""
    return Models(None, BoxFiller(), "torch")


def segment(source: Path, out: Path, models: Models) -> None:
    # Box x 2..5, y 1..3 on slice 1, that slice only.
    outcomes = segment_files(
        [source], out, boxes=[(2, 1, 5, 3)], slice_index=1, propagate=False, progress=False,
        models=models,
    )  # fmt: skip
    assert [o.error for o in outcomes] == [None]


def expected_mask(shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[1, 1:4, 2:6] = 1
    return mask


def test_dicom_series_to_nifti_and_seg_keeps_the_geometry(tmp_path, box_filler):
    folder = ct_series(tmp_path / "ct")
    segment(folder, tmp_path / "out", box_filler)
    image = io.read_image(folder)  # its affine comes from SimpleITK's LPS geometry
    written = nib.load(tmp_path / "out" / "ct_seg.nii.gz")
    np.testing.assert_allclose(written.affine, image.geometry.affine, atol=1e-6)
    mask = np.asarray(written.dataobj).transpose(2, 1, 0)  # nibabel (x, y, z) → (z, y, x)
    np.testing.assert_array_equal(mask, expected_mask(image.shape))

    # Voxel (x, y, z) of the mask is where the DICOM header puts pixel (column x, row y) of
    # the slice at z: ImagePositionPatient + x * 0.7 mm * row cosines + y * 0.5 mm * column
    # cosines, LPS → RAS.
    sources = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, folder.iterdir())}
    at_z = {slice_of(ds): ds for ds in sources.values()}
    for z, y, x in np.argwhere(mask)[[0, -1]]:
        ds = at_z[z]
        lps = np.asarray(ds.ImagePositionPatient) + x * 0.7 * ROW_COS + y * 0.5 * COL_COS
        world = written.affine @ [x, y, z, 1.0]
        np.testing.assert_allclose(world[:3], lps * [-1, -1, 1], atol=1e-4)

    seg = hd.seg.segread(tmp_path / "out" / "ct_seg.dcm")
    assert_frames_on_source_slices(seg, sources)
    pixels = seg.get_pixels_by_source_instance([at_z[k].SOPInstanceUID for k in range(4)])
    np.testing.assert_array_equal(pixels[..., 0], expected_mask(image.shape))
    assert seg.get_segment_description(1).segment_label == "label 1"


def test_oblique_nifti_output_keeps_the_affine(tmp_path, box_filler):
    data = np.arange(8 * 6 * 4, dtype=np.int16).reshape(8, 6, 4)  # (x, y, z), anisotropic
    source = nib.Nifti1Image(data, oblique_affine())
    source.header.set_sform(oblique_affine(), code=1)
    nib.save(source, tmp_path / "scan.nii.gz")
    segment(tmp_path / "scan.nii.gz", tmp_path / "out", box_filler)

    written = nib.load(tmp_path / "out" / "scan_seg.nii.gz")
    np.testing.assert_array_equal(written.affine, oblique_affine())
    mask = np.asarray(written.dataobj)
    assert mask.shape == data.shape
    np.testing.assert_array_equal(mask.transpose(2, 1, 0), expected_mask((4, 6, 8)))
    x, y, z = np.argwhere(mask)[-1]  # the same index is the same point in both files
    np.testing.assert_array_equal(written.affine @ [x, y, z, 1], source.affine @ [x, y, z, 1])
    assert not (tmp_path / "out" / "scan_seg.dcm").exists()  # DICOM-SEG only for DICOM input


def test_series_without_frame_of_reference_keeps_the_other_outputs(tmp_path, box_filler):
    folder = write_ct_series(tmp_path / "ct")  # no Frame of Reference UID: no DICOM-SEG
    with pytest.warns(UserWarning, match="Frame Of Reference.*no DICOM-SEG written"):
        segment(folder, tmp_path / "out", box_filler)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["ct.json", "ct_overlay.png", "ct_seg.nii.gz"]


def test_nothing_found_writes_no_seg(tmp_path):
    from automedseg.api import write_result
    from automedseg.types import Boxes, Result

    image = io.read_image(ct_series(tmp_path / "ct"))
    empty = Result(np.zeros(image.shape, np.uint8), Boxes(np.zeros((0, 4)), [], []))
    written: list[Path] = []
    write_result(image, empty, tmp_path / "out", "ct", written)
    assert sorted(p.name for p in written) == ["ct.json", "ct_overlay.png", "ct_seg.nii.gz"]


def segment_for_liver_task(tmp_path: Path, box_filler) -> list:
    """A CT series segmented (one fixed box) for a task whose label 1 is "liver" with its
    SNOMED codes; the SEG is tmp_path/out/ct_seg.dcm."""
    folder = ct_series(tmp_path / "ct")
    finder = FixedBoxes(Boxes.from_list([(2, 1, 5, 3)]))
    liver = {"category": ["91723000", "SCT", "Anatomical Structure"],
             "type": ["10200004", "SCT", "Liver"]}  # fmt: skip
    task = Task("liver", None, about={"labels": {"1": "liver"}, "codes": {"1": liver}})
    models = Models(finder, box_filler.segmenter, "torch", task)
    return segment_files([folder], tmp_path / "out", propagate=False, progress=False,
                         models=models)  # fmt: skip


def test_a_tasks_label_names_name_the_dicom_seg_segments(tmp_path, box_filler):
    """Automatic prompts: the segments carry the task's label names (task.json), not
    "label 1"."""
    outcomes = segment_for_liver_task(tmp_path, box_filler)
    assert [o.error for o in outcomes] == [None]
    seg = pydicom.dcmread(tmp_path / "out" / "ct_seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver"]
    segment = seg.SegmentSequence[0]
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"
    assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentAlgorithmName
    assert seg.SeriesDescription == "automedseg liver (LiteMedSAM)"


def test_the_dicom_seg_validates_with_dciodvfy(tmp_path, box_filler):
    """dicom3tools' dciodvfy (Debian package dicom3tools; CI installs it) finds no error in
    the SEG of a CT series segmented for a task with codes."""
    import os
    import shutil
    import subprocess

    if shutil.which("dciodvfy") is None:
        if os.environ.get("AUTOMEDSEG_REQUIRE_DCIODVFY"):
            pytest.fail("dciodvfy is required here (apt-get install dicom3tools)")
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    segment_for_liver_task(tmp_path, box_filler)
    done = subprocess.run(["dciodvfy", str(tmp_path / "out" / "ct_seg.dcm")],
                          capture_output=True, text=True)  # fmt: skip
    report = done.stdout + done.stderr
    assert "Segmentation" in report  # it recognised the IOD
    assert [line for line in report.splitlines() if line.startswith("Error")] == [], report
