from __future__ import annotations

import numpy as np
import pytest
import torch

from automedseg import intensity
from automedseg.errors import InputError, WeightsError
from automedseg.intensity import UnitPlanes, to_unit_range
from automedseg.segment.litemedsam import (
    LiteMedSAMPredictor,
    build_litemedsam,
    load_litemedsam,
    packaged_weights_path,
    postprocess,
    preprocess,
)
from automedseg.types import Image


def disk(shape: tuple[int, int], center: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_preprocess_keeps_aspect_and_pads_bottom_right():
    image = np.zeros((100, 50), np.float32)
    image[10:20, 5:10] = 1.0
    tensor, resized = preprocess(image)
    assert tensor.shape == (1, 3, 256, 256)
    assert resized == (256, 128)
    assert float(tensor.max()) == pytest.approx(1.0)
    assert float(tensor[..., :, 128:].abs().max()) == 0.0  # right padding


def test_postprocess_crops_to_resized_region_then_upsamples():
    logits = -torch.ones(1, 1, 256, 256)
    logits[..., :128, :256] = 1.0  # the resized image is the top half
    masks = postprocess(logits, (128, 256), (50, 100))
    assert masks.shape == (1, 50, 100)
    assert bool(masks.all())  # everything inside the crop was positive


def test_real_weights_segment_a_synthetic_disk(litemedsam):
    truth = disk((96, 128), center=(40, 70), radius=18)
    image = np.where(truth, 0.8, 0.2).astype(np.float32)
    predictor = LiteMedSAMPredictor(litemedsam)
    predictor.set_image(image)
    masks = predictor.predict(np.array([[52, 22, 88, 58]], np.float32))
    assert masks.shape == (1, 96, 128)
    assert dice(masks[0], truth) > 0.9


def test_one_encoder_pass_serves_many_boxes():
    model = build_litemedsam().eval()
    calls = []
    model.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    predictor = LiteMedSAMPredictor(model)
    predictor.set_image(np.random.default_rng(0).random((40, 60, 3), dtype=np.float32))
    masks = predictor.predict(np.array([[0, 0, 10, 10], [20, 5, 59, 39], [3, 3, 4, 4]]))
    assert masks.shape == (3, 40, 60) and masks.dtype == bool
    assert len(calls) == 1


def test_corrupted_weights_fail_the_sha256_check(tmp_path):
    data = bytearray(packaged_weights_path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "lite_medsam.pth"
    bad.write_bytes(bytes(data))
    from automedseg.segment.litemedsam import PACKAGED_WEIGHTS_SHA256

    with pytest.raises(WeightsError, match="SHA-256 mismatch") as info:
        load_litemedsam(bad, sha256=PACKAGED_WEIGHTS_SHA256)
    assert str(bad) in str(info.value)


def test_truncated_weights_are_not_a_checkpoint(tmp_path):
    bad = tmp_path / "cut.pth"
    bad.write_bytes(packaged_weights_path().read_bytes()[:5000])
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_litemedsam(bad)


def test_weights_of_another_shape_are_refused(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"image_encoder.patch_embed.seq.0.c.weight": torch.zeros(3, 3)}, other)
    with pytest.raises(WeightsError, match="do not fit LiteMedSAM"):
        load_litemedsam(other)


def test_intensity_ct_uses_the_window():
    hu = np.array([[-1000.0, -160.0], [40.0, 240.0]], np.float32)
    unit = to_unit_range(Image(hu, 2, modality="CT", window=(40.0, 400.0)))
    np.testing.assert_allclose(unit, [[0.0, 0.0], [0.5, 1.0]])


def test_intensity_rgb_divides_by_255_and_gray_clips_percentiles():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = 255
    assert to_unit_range(Image(rgb, 2, modality="RGB")).max() == 1.0
    gray = np.arange(1, 1001, dtype=np.uint16).reshape(10, 100)
    unit = to_unit_range(Image(gray, 2, modality="MR"))
    assert unit.min() == 0.0 and unit.max() == 1.0
    assert (unit == 0.0).sum() == 5 and (unit == 1.0).sum() == 5  # 0.5% clipped at each end


def test_a_large_volume_takes_its_percentiles_from_a_sample(monkeypatch):
    rng = np.random.default_rng(0)
    volume = rng.gamma(2.0, 100.0, (40, 64, 64)).astype(np.int16)
    full = np.percentile(volume[volume != 0], intensity.PERCENTILES)
    monkeypatch.setattr(intensity, "PERCENTILE_SAMPLE", volume.size // 10)
    lo, hi = intensity.intensity_range(Image(volume, 3, modality="MR"))
    assert abs(lo - full[0]) <= 2 and abs(hi - full[1]) <= 0.02 * full[1]
    assert (lo, hi) != tuple(full)  # the sample was used, not the whole volume


def test_constant_image_is_refused():
    with pytest.raises(InputError, match="constant"):
        to_unit_range(Image(np.full((8, 8), 7, np.uint8), 2))
    with pytest.raises(InputError, match="constant"):
        UnitPlanes(Image(np.full((3, 8, 8), 7, np.int16), 3))


def test_unit_planes_scale_each_plane_as_the_whole_volume_is_scaled():
    volume = np.random.default_rng(1).normal(100, 40, (5, 6, 7)).astype(np.int16)
    image = Image(volume, 3, modality="MR")
    planes = UnitPlanes(image)
    assert len(planes) == 5 and planes.shape == (5, 6, 7)
    whole = to_unit_range(image)
    for z, plane in enumerate(planes):
        assert plane.dtype == np.float32
        np.testing.assert_array_equal(plane, whole[z])
