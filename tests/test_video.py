"""Videos and frame folders: tiny synthetic files written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from automedseg.errors import InputError
from automedseg.io import frames as frames_module
from automedseg.io import (
    read_frames,
    read_image,
    read_video,
    write_frame_masks,
    write_overlay_video,
)
from automedseg.io import video as video_module

# Six well-separated colours, one per frame: a lossy codec keeps each within a few levels.
COLOURS = np.array(
    [[220, 30, 30], [30, 220, 30], [30, 30, 220], [220, 220, 30], [30, 220, 220], [128, 128, 128]],
    dtype=np.uint8,
)


def colour_frames(height: int = 32, width: int = 48) -> np.ndarray:
    """(6, H, W, 3) uint8: frame i is filled with COLOURS[i]."""
    return np.broadcast_to(COLOURS[:, None, None, :], (6, height, width, 3)).copy()


def encode_with_pyav(path: Path, frames: np.ndarray, codec: str = "mpeg4") -> Path:
    """Write frames with PyAV directly (independent of write_overlay_video)."""
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def assert_colours(array: np.ndarray, expected: np.ndarray, tolerance: float = 12) -> None:
    means = array.reshape(len(array), -1, 3).mean(axis=1)
    assert np.abs(means - expected).max() < tolerance, means


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(array).save(path)
    return path


def write_dicom_slice(path: Path, k: int, series_uid: str) -> Path:
    """One 4x5 CT slice at z = k mm of a series."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", series_uid
    ds.Modality, ds.PatientID = "CT", "test"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = 4, 5
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, float(k)]
    ds.PixelSpacing, ds.SliceThickness, ds.InstanceNumber = [1, 1], 1, k + 1
    ds.PixelData = np.full((4, 5), 100 * k, dtype="<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------- videos


def test_read_video_shape_names_and_colours(tmp_path):
    path = encode_with_pyav(tmp_path / "clip.mp4", colour_frames())
    image = read_video(path)
    assert image.array.shape == (6, 32, 48, 3)
    assert image.array.dtype == np.uint8
    assert image.spatial_dims == 3 and image.modality == "RGB"
    assert image.frame_names == ["0000", "0001", "0002", "0003", "0004", "0005"]
    assert np.array_equal(image.geometry.affine, np.eye(4))
    assert image.source == path
    assert_colours(image.array, COLOURS)


def test_text_file_named_mp4_is_refused(tmp_path):
    pytest.importorskip("av")
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")
    with pytest.raises(InputError, match="cannot decode the video") as info:
        read_image(path)
    assert info.value.path == path
    assert str(path) in str(info.value)


def test_write_overlay_video_round_trip_with_odd_size(tmp_path):
    pytest.importorskip("av")
    frames = colour_frames(31, 47)
    out = write_overlay_video(tmp_path / "overlay.mp4", frames, fps=5)
    assert out == tmp_path / "overlay.mp4"
    assert sorted(tmp_path.iterdir()) == [out]  # no temporary file left behind
    image = read_video(out)
    assert image.array.shape == (6, 32, 48, 3)  # padded to even size
    assert_colours(image.array[:, :31, :47], COLOURS)


def test_write_overlay_video_falls_back_to_gif(tmp_path, monkeypatch):
    monkeypatch.setattr(video_module, "_MP4_CODECS", ("no-such-encoder",))
    frames = colour_frames(8, 10)
    out = write_overlay_video(tmp_path / "overlay.mp4", frames, fps=10)
    assert out == tmp_path / "overlay.gif"
    assert sorted(tmp_path.iterdir()) == [out]
    with PILImage.open(out) as gif:
        assert gif.n_frames == 6
        gif.seek(2)
        assert np.array_equal(np.asarray(gif.convert("RGB"))[0, 0], COLOURS[2])


def test_write_overlay_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_overlay_video(tmp_path / "x.mp4", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_overlay_video(tmp_path / "x.mp4", np.zeros((2, 4, 4, 3), np.float32))
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- frame folders


def test_gray_frame_folder_round_trip(tmp_path):
    frames = (np.arange(3)[:, None, None] * 50 + np.arange(20).reshape(4, 5)).astype(np.uint8)
    for index, frame in enumerate(frames):
        save_png(tmp_path / f"{index:04d}.png", frame)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    image = read_frames(tmp_path)
    assert image.array.shape == (3, 4, 5) and image.array.dtype == np.uint8
    assert np.array_equal(image.array, frames)
    assert image.spatial_dims == 3 and image.modality == "OT"
    assert image.frame_names == ["0000", "0001", "0002"]


def test_rgb_frame_folder_in_natural_order(tmp_path):
    frames = colour_frames(4, 6)[:3]
    for number, frame in zip((2, 10, 1), frames[[1, 2, 0]], strict=True):
        save_png(tmp_path / f"frame_{number}.png", frame)
    image = read_frames(tmp_path)
    assert image.array.shape == (3, 4, 6, 3) and image.modality == "RGB"
    assert image.frame_names == ["frame_1", "frame_2", "frame_10"]
    assert np.array_equal(image.array, frames)


def test_frame_of_another_size_is_refused(tmp_path):
    for index in range(3):
        save_png(tmp_path / f"{index:04d}.png", np.zeros((4, 5), np.uint8))
    odd = save_png(tmp_path / "0003.png", np.zeros((4, 6), np.uint8))
    save_png(tmp_path / "0004.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(InputError, match="6x4 gray uint8 but the first frame") as info:
        read_frames(tmp_path)
    assert info.value.path == odd


def test_gray_and_colour_frames_are_refused(tmp_path):
    save_png(tmp_path / "a.png", np.zeros((4, 5), np.uint8))
    odd = save_png(tmp_path / "b.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(InputError, match="RGB") as info:
        read_frames(tmp_path)
    assert info.value.path == odd


def test_write_frame_masks(tmp_path):
    labels = np.zeros((3, 4, 5), np.uint16)
    labels[0, 1, 1], labels[1, 2, 2], labels[2, 3, 4] = 1, 6, 300
    paths = write_frame_masks(tmp_path / "masks", labels, ["0007", "0008", "0009"])
    assert paths == [tmp_path / "masks" / f"{n}.png" for n in ("0007", "0008", "0009")]
    assert sorted((tmp_path / "masks").iterdir()) == paths
    for path, expected in zip(paths, labels, strict=True):
        assert np.array_equal(np.asarray(PILImage.open(path)), expected)


def test_write_frame_masks_cleans_up_on_failure(tmp_path, monkeypatch):
    folder = tmp_path / "masks"
    existing = save_png(folder / "0000.png", np.full((4, 5), 9, np.uint8))
    calls = []
    real_write = frames_module.write_label_png

    def failing_write(path, label_map):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_write(path, label_map)

    monkeypatch.setattr(frames_module, "write_label_png", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_frame_masks(folder, np.ones((4, 4, 5), np.uint8), ["0000", "0001", "0002", "0003"])
    assert sorted(folder.iterdir()) == [existing]  # nothing from this call, old file untouched
    assert np.asarray(PILImage.open(existing)).max() == 9


def test_write_frame_masks_checks_names(tmp_path):
    with pytest.raises(ValueError, match="2 frame names"):
        write_frame_masks(tmp_path, np.zeros((3, 2, 2), np.uint8), ["a", "b"])
    with pytest.raises(ValueError, match="cannot be a file name"):
        write_frame_masks(tmp_path, np.zeros((1, 2, 2), np.uint8), ["../a"])
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- read_image dispatch


def test_read_image_reads_a_frame_folder(tmp_path):
    for index in range(2):
        save_png(tmp_path / f"{index:04d}.jpg", np.full((8, 8, 3), 200, np.uint8))
    image = read_image(tmp_path)
    assert image.array.shape == (2, 8, 8, 3)
    assert image.frame_names == ["0000", "0001"]
    assert image.source == tmp_path


def test_read_image_prefers_dicom_over_frames(tmp_path):
    uid = generate_uid()
    for k in range(2):
        write_dicom_slice(tmp_path / f"slice{k}", k, uid)  # no extension: found by magic
    save_png(tmp_path / "preview.png", np.zeros((4, 5), np.uint8))
    image = read_image(tmp_path)
    assert image.modality == "CT" and image.frame_names is None
    assert image.array.shape == (2, 4, 5)


def test_read_image_folder_without_images_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM series and no frame images") as info:
        read_image(tmp_path)
    assert info.value.path == tmp_path


def test_read_image_reads_a_video(tmp_path):
    path = encode_with_pyav(tmp_path / "clip.MKV", colour_frames(16, 16), codec="libx264")
    image = read_image(path)
    assert image.array.shape == (6, 16, 16, 3)
    assert image.frame_names[-1] == "0005" and image.source == path
