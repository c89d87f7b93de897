"""The numpy resampling and connected components against the libraries they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from automedseg.prompt.components import regions_of
from automedseg.resample import resize_antialiased, resize_bilinear


@pytest.mark.parametrize("shape", [(37, 53), (400, 90), (8, 8)])
def test_resizing_matches_torch_interpolate(shape):
    image = np.random.default_rng(0).random((61, 45, 3)).astype(np.float32)
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    expected = torch.nn.functional.interpolate(
        tensor, shape, mode="bilinear", align_corners=False, antialias=True
    )[0].permute(1, 2, 0).numpy()  # fmt: skip
    np.testing.assert_allclose(resize_antialiased(image, shape), expected, atol=1e-5)
    plain = torch.nn.functional.interpolate(tensor, shape, mode="bilinear", align_corners=False)
    got = resize_bilinear(image.transpose(2, 0, 1), shape)
    np.testing.assert_allclose(got, plain[0].numpy(), atol=1e-5)


def test_regions_are_scipy_ndimage_components_in_its_order():
    rng = np.random.default_rng(0)
    for case in range(300):
        mask = rng.random((rng.integers(1, 40), rng.integers(1, 40))) > rng.uniform(0.3, 0.99)
        if case % 3 == 0:
            mask = np.asfortranarray(mask)
        numbered, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        boxes = ndimage.find_objects(numbered)
        expected = [(box, numbered[box] == index) for index, box in enumerate(boxes, start=1)]
        found = regions_of(mask)
        assert [box for box, _ in found] == [box for box, _ in expected]
        for (_, inside), (_, truth) in zip(found, expected, strict=True):
            np.testing.assert_array_equal(inside, truth)
    sizes = [int(inside.sum()) for _, inside in regions_of(mask)]
    assert all(size >= 3 for size in (int(i.sum()) for _, i in regions_of(mask, 3)))
    assert len(regions_of(mask, 3)) == sum(size >= 3 for size in sizes)
