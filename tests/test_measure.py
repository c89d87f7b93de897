from __future__ import annotations

import numpy as np
import pytest

from automedseg.measure import longest_diameter_mm, measure_objects


def test_longest_diameter_uses_the_spacing_of_each_axis():
    mask = np.zeros((5, 7), bool)
    mask[1, 1:6] = True  # a row of 5 pixels: centres 4 columns apart
    assert longest_diameter_mm(mask, (1.0, 0.5)) == pytest.approx(2.0)
    square = np.zeros((4, 4), bool)
    square[0:4, 0:4] = True  # the diagonal of 3 x 3 pixel steps at 2 mm
    assert longest_diameter_mm(square, (2.0, 2.0)) == pytest.approx(np.hypot(6, 6))
    single = np.zeros((3, 3), bool)
    single[1, 1] = True
    assert longest_diameter_mm(single, (1.0, 1.0)) == 0.0


def test_measure_objects_volume_slices_and_axial_diameter():
    instances = np.zeros((4, 6, 6), np.uint8)
    instances[1:3, 1:4, 1:3] = 1  # 2 slices x 3 x 2 voxels
    instances[3, 0, 0:6] = 2
    sizes = measure_objects(instances, (2.0, 1.0, 1.0))
    assert sizes[1]["volume_ml"] == pytest.approx(12 * 2.0 / 1000)
    assert sizes[1]["slices"] == [1, 2]
    assert sizes[1]["longest_axial_diameter_mm"] == pytest.approx(np.hypot(2, 1), abs=0.005)
    assert sizes[2]["longest_axial_diameter_mm"] == pytest.approx(5.0)
    flat = measure_objects(instances[1], (0.5, 0.5))
    assert flat[1]["area_mm2"] == pytest.approx(6 * 0.25)


def test_without_a_known_pixel_size_sizes_are_in_pixels():
    flat = np.zeros((4, 5), int)
    flat[1:3, 1:4] = 1
    assert measure_objects(flat, None) == {
        1: {"area_px": 6.0, "longest_diameter_px": pytest.approx(np.hypot(1, 2), abs=0.005)}
    }
    volume = np.zeros((3, 4, 4), int)
    volume[1, 0:2, 0:2] = 1
    sizes = measure_objects(volume, None)[1]
    assert sizes["voxels"] == 4 and "volume_ml" not in sizes and sizes["slices"] == [1, 1]


def test_longest_diameter_is_the_largest_distance_between_any_two_pixels():
    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = rng.random((rng.integers(1, 15), rng.integers(1, 15))) > rng.uniform(0.3, 0.95)
        spacing = (float(rng.uniform(0.3, 3)), float(rng.uniform(0.3, 3)))
        points = np.argwhere(mask) * np.asarray(spacing)
        every_pair = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)).max(initial=0.0)
        assert longest_diameter_mm(mask, spacing) == pytest.approx(every_pair)
