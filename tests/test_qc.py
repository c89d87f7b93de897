"""Quality control (``pipeline.qc``): the domain distance, stability and flags."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from automedseg.pipeline.qc import DomainModel, assess, pooled, stability
from automedseg.types import Boxes, Image, Result
from test_propagate import ThresholdSegmenter


def test_the_domain_distance_is_about_one_inside_and_large_outside():
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (400, 32)) * np.linspace(3, 0.2, 32) + 5
    model = DomainModel.fit(train, components=6)
    inside = [model.distance(f) for f in rng.normal(0, 1, (200, 32)) * np.linspace(3, 0.2, 32) + 5]
    assert 0.7 < np.median(inside) < 1.3
    assert model.distance(np.full(32, 5.0) + 20.0) > 5 * np.percentile(inside, 99)
    assert set(model.arrays()) == {"mean", "directions", "spreads", "residual"}


def test_pooled_takes_channel_means_of_numpy_or_torch():
    import torch

    embedding = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    np.testing.assert_allclose(pooled(embedding), [5.5, 17.5])
    np.testing.assert_allclose(pooled(torch.from_numpy(embedding)), [5.5, 17.5])


class Embedder(ThresholdSegmenter):
    """``ThresholdSegmenter`` with an embedding: the plane's mean as one channel."""

    @property
    def embedding(self):
        return np.full((1, 1, 2, 2), float(np.mean(self.image)))


def disk(shape=(32, 32), centre=(16, 16), radius=6):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).astype(np.float32)


def test_a_clear_object_is_stable_and_an_odd_image_is_out_of_domain():
    image = Image(disk() * 200, 2)
    mask = disk() > 0.5
    box = np.array([7, 7, 25, 25], np.float32)  # the disk with room around it
    segmenter = Embedder()
    segmenter.set_image(disk())
    assert stability(disk(), mask, box, segmenter) == 1.0
    result = Result(mask.astype(np.uint8), Boxes(box[None], [1], [0.9]),
                    instance_map=mask.astype(np.uint8))  # fmt: skip
    model = DomainModel(np.array([0.11]), np.zeros((0, 1)), np.zeros(0), 0.01, threshold=3.0)
    found = assess(image, result, segmenter, model)
    assert found.in_domain is True and found.flags == [] and found.stability == [1.0]
    odd = replace(model, mean=np.array([0.9]))
    flagged = assess(image, result, segmenter, odd)
    assert flagged.in_domain is False and flagged.flags == ["out_of_domain"]
    assert flagged.record()["domain_distance"] > 3.0


def test_flags_for_nothing_found_an_object_at_the_edge_and_an_unstable_mask():
    image = Image(disk(centre=(16, 3)) * 200, 2)
    empty = Result(np.zeros((32, 32), np.uint8), Boxes(np.zeros((0, 4)), [], []))
    assert assess(image, empty, Embedder(), None).flags == ["nothing_found"]
    edge = disk(centre=(16, 3)) > 0.5
    box = np.array([0, 10, 9, 22], np.float32)
    at_edge = Result(edge.astype(np.uint8), Boxes(box[None], [1], [0.9]),
                     instance_map=edge.astype(np.uint8))  # fmt: skip
    assert "touches_border" in assess(image, at_edge, Embedder(), None).flags
    square = np.zeros((48, 48), bool)
    square[8:40, 8:40] = True  # a mask that is its box: it moves with any jitter
    flat = Image(np.where(square, 200, 100).astype(np.float32) + disk((48, 48)), 2)
    box = np.array([8, 8, 39, 39], np.float32)
    follows_box = Result(square.astype(np.uint8), Boxes(box[None], [1], [0.9]),
                         instance_map=square.astype(np.uint8))  # fmt: skip
    from conftest import BoxFiller

    class BoxEmbedder(BoxFiller):
        embedding = np.zeros((1, 1, 2, 2))

    found = assess(flat, follows_box, BoxEmbedder(), None)
    assert found.flags == ["low_confidence"] and found.stability[0] < 0.85


@pytest.mark.slow
def test_fit_domain_writes_a_checked_model_that_flags_another_kind_of_image(tmp_path):
    """The real LiteMedSAM, a copy of the shipped lungs task, a synthetic data set of disks:
    fitted and calibrated on it, its validation mostly passes, a colonoscopy photo does not."""
    import json
    import shutil

    from automedseg import io
    from automedseg.errors import WeightsError
    from automedseg.pipeline.qc import assess
    from automedseg.tasks import MODELS_DIR, load_models, task_in
    from automedseg.train.domain import fit_domain
    from conftest import EXAMPLES, write_disks

    folder = tmp_path / "lungs"
    shutil.copytree(MODELS_DIR / "lungs", folder)
    write_disks(tmp_path / "data", n=10)
    entry = fit_domain(task_in(folder), tmp_path / "data", runtime="torch", progress=False)
    assert json.loads((folder / "task.json").read_text())["domain"] == entry
    assert entry["fitted_on"]["planes"] == 8 and entry["calibration"]["validation_cases"] == 2
    models = load_models(task_in(folder), runtime="torch")
    photo = io.read_image(sorted((EXAMPLES / "kvasir_seg" / "images").glob("*.jpg"))[0])
    empty = Result(np.zeros(photo.shape, np.uint8), Boxes(np.zeros((0, 4)), [], []))
    assert assess(photo, empty, models.segmenter, models.domain).in_domain is False
    (folder / "domain.npz").write_bytes(b"altered")
    with pytest.raises(WeightsError, match="altered"):
        load_models(task_in(folder), runtime="torch")
