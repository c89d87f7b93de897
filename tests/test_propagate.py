"""Propagation along axis 0: seeding, following, stopping and re-seeding."""

from __future__ import annotations

import numpy as np
import pytest

from automedseg.pipeline.propagate import ENCODE_CHUNK, Propagation, grow, mask_box
from automedseg.types import Boxes


class ThresholdSegmenter:
    """A stand-in segmenter: inside the box, the pixels brighter than 0.5."""

    def __init__(self):
        self.encodes = 0

    def set_image(self, image):
        self.image, self.encodes = image, self.encodes + 1

    def encoded(self):
        return self.image

    def use(self, state):
        self.image = state

    def predict(self, boxes):
        masks = np.zeros((len(boxes), *self.image.shape[:2]), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, np.asarray(boxes).astype(int), strict=True):
            mask[y0 : y1 + 1, x0 : x1 + 1] = self.image[y0 : y1 + 1, x0 : x1 + 1] > 0.5
        return masks


class OnePlaneFinder:
    """A stand-in prompter that sees objects only on the planes it is told."""

    uses_embedding = False
    labels = {1: "thing"}
    score_threshold = 0.5

    def __init__(self, boxes_by_plane):
        self.boxes_by_plane = boxes_by_plane
        self.plane = -1

    def find(self, image, embedding=None):
        self.plane += 1
        rows = self.boxes_by_plane.get(self.plane, [])
        if not rows:
            return Boxes(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))
        return Boxes(np.array([r[:4] for r in rows]), [r[4] for r in rows], [r[5] for r in rows])


def moving_disk(depth=12, size=32):
    volume = np.zeros((depth, size, size), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for z in range(2, depth - 2):
        volume[z][(yy - 10 - z) ** 2 + (xx - 12) ** 2 <= 16] = 1.0
    return volume


def test_one_seed_follows_the_object_both_ways_and_stops_where_it_ends():
    volume = moving_disk()
    finder = OnePlaneFinder({6: [(8, 12, 16, 20, 1, 0.9)]})
    segmenter = ThresholdSegmenter()
    labels, objects = Propagation(finder, segmenter).run(volume)
    np.testing.assert_array_equal(labels > 0, volume > 0.5)
    assert len(objects) == 1 and sorted(objects[0].masks) == list(range(2, 10))
    assert segmenter.encodes == 10  # slices 2..9 plus 1 and 10 where it vanished; once each


def test_an_object_that_disappears_and_reappears_is_reseeded():
    volume = moving_disk()
    volume[5:7] = 0.0  # gone on slices 5 and 6
    finder = OnePlaneFinder({3: [(8, 9, 16, 17, 1, 0.9)], 9: [(8, 15, 16, 23, 1, 0.7)]})
    segmenter = ThresholdSegmenter()
    labels, objects = Propagation(finder, segmenter).run(volume)
    np.testing.assert_array_equal(labels > 0, volume > 0.5)
    assert [o.seed_plane for o in objects] == [3, 9]
    assert segmenter.encodes == 10  # 1..5 for the first object, 6..10 for the second


def test_weak_boxes_do_not_seed_and_covered_boxes_do_not_duplicate():
    volume = moving_disk()
    finder = OnePlaneFinder(
        {6: [(8, 12, 16, 20, 1, 0.9)], 7: [(8, 13, 16, 21, 1, 0.8)], 0: [(0, 0, 5, 5, 1, 0.2)]}
    )
    _, objects = Propagation(finder, ThresholdSegmenter()).run(volume)
    assert len(objects) == 1


def test_without_following_only_the_planes_with_boxes_are_segmented():
    volume = moving_disk()
    finder = OnePlaneFinder({4: [(8, 10, 16, 18, 1, 0.9)], 6: [(8, 12, 16, 20, 1, 0.8)]})
    segmenter = ThresholdSegmenter()
    labels, objects = Propagation(finder, segmenter, follow=False).run(volume)
    assert [o.seed_plane for o in objects] == [4, 6]
    assert [sorted(o.masks) for o in objects] == [[4], [6]]
    np.testing.assert_array_equal(labels[[4, 6]] > 0, volume[[4, 6]] > 0.5)
    assert not labels[[0, 1, 2, 3, 5, 7, 8, 9, 10, 11]].any()


def test_box_helpers():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:8] = True
    assert mask_box(mask).tolist() == [3, 2, 7, 4]
    assert grow(np.array([3, 2, 7, 4.0]), 0.2, (10, 10)).tolist() == pytest.approx([2, 1, 8, 5])
    assert grow(np.array([0, 0, 9, 9.0]), 0.5, (10, 10)).tolist() == [0, 0, 9, 9]


def test_litemedsam_recovers_a_moving_sphere_from_one_seeded_slice(litemedsam):
    from automedseg.segment.litemedsam import LiteMedSAMPredictor

    depth, size = 14, 64
    zz, yy, xx = np.mgrid[:depth, :size, :size]
    sphere = (zz - 7) ** 2 * 4 + (yy - 24 - zz) ** 2 + (xx - 30 - zz) ** 2 <= 14**2
    rng = np.random.default_rng(0)
    volume = np.where(sphere, 0.75, 0.25) + rng.normal(0, 0.03, sphere.shape)
    volume = volume.astype(np.float32)
    ys, xs = np.nonzero(sphere[7])
    seed = (xs.min(), ys.min(), xs.max(), ys.max(), 1, 0.9)
    labels, objects = Propagation(OnePlaneFinder({7: [seed]}), LiteMedSAMPredictor(litemedsam)).run(
        volume
    )
    found = labels > 0
    dice = 2 * (found & sphere).sum() / (found.sum() + sphere.sum())
    assert len(objects) == 1 and dice >= 0.9


def test_an_object_the_prompter_contradicts_stops_and_its_unconfirmed_planes_go():
    volume = moving_disk()  # a disk on slices 2..9, which the prompter finds on each of them
    volume[:, 26:30, 26:30] = 1.0  # a bright square on every slice: only a false box finds it
    finder = OnePlaneFinder({z: [(8, 6 + z, 16, 14 + z, 1, 0.9)] for z in range(2, 10)})
    finder.boxes_by_plane[5].append((25, 25, 30, 30, 1, 0.8))  # the false box, slice 5 only
    _, objects = Propagation(finder, ThresholdSegmenter(), patience=2).run(volume)
    disk, square = sorted(objects, key=lambda o: -o.seed_score)
    assert sorted(disk.masks) == list(range(2, 10))
    assert sorted(square.masks) == [5]  # contradicted on 2..4 and 6..8: those planes dropped
    lenient = Propagation(OnePlaneFinder(dict(finder.boxes_by_plane)), ThresholdSegmenter(),
                          patience=20)  # fmt: skip
    _, objects = lenient.run(volume)
    assert len(max(objects, key=lambda o: len(o.masks)).masks) == 12  # the old behaviour


def test_kept_encodings_are_bounded_and_empty_planes_are_not_kept():
    class EmbeddingFinder(OnePlaneFinder):
        uses_embedding = True

    volume = moving_disk()
    finder = EmbeddingFinder({z: [(8, 6 + z, 16, 14 + z, 1, 0.9)] for z in range(2, 10)})
    segmenter = ThresholdSegmenter()
    segmenter.embedding = None
    propagation = Propagation(finder, segmenter, max_states=3)
    labels, _ = propagation.run(volume)
    np.testing.assert_array_equal(labels > 0, volume > 0.5)
    assert len(propagation._states) <= 3 and segmenter.encodes > len(volume)


class BoxFiller(ThresholdSegmenter):
    """A stand-in segmenter that fills whatever box it is given (SAM's habit on weak edges)."""

    def predict(self, boxes):
        masks = np.zeros((len(boxes), *self.image.shape[:2]), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, np.asarray(boxes).astype(int), strict=True):
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return masks


def test_the_prompters_matching_box_stops_the_carried_box_from_drifting():
    volume = np.full((8, 40, 40), 0.2, np.float32)
    truth = (10, 10, 19, 19)
    finder = OnePlaneFinder({z: [(*truth, 1, 0.9)] for z in range(8)})
    labels, _ = Propagation(finder, BoxFiller(), margin=0.2).run(volume)
    assert all(tuple(mask_box(plane > 0)) == truth for plane in labels)
    finder = OnePlaneFinder({z: [(*truth, 1, 0.9)] for z in range(8)})
    carried, _ = Propagation(finder, BoxFiller(), margin=0.2, snap=False).run(volume)
    assert max((plane > 0).sum() for plane in carried) > 100  # grown by the margin


def test_a_mask_growing_past_max_growth_without_confirmation_ends_the_object():
    volume = np.full((9, 64, 64), 0.2, np.float32)
    seeds = {4: Boxes(np.array([[30.0, 30.0, 39.0, 39.0]]), [1], [0.9])}
    labels, objects = Propagation(None, BoxFiller(), seeds=seeds, margin=0.1).run(volume)
    assert sorted(objects[0].masks) == [3, 4, 5]  # 100 → 144 pixels kept, 225 > 2 × 100 not
    labels, objects = Propagation(None, BoxFiller(), seeds=seeds, margin=0.1, max_growth=None).run(
        volume
    )
    assert sorted(objects[0].masks) == list(range(9))


def test_progress_is_reported_per_plane():
    volume = moving_disk()
    seen = []
    finder = OnePlaneFinder({6: [(8, 12, 16, 20, 1, 0.9)]})
    Propagation(finder, ThresholdSegmenter(), on_progress=lambda *a: seen.append(a)).run(volume)
    prompting = [done for stage, done, total in seen if stage == "prompting"]
    assert prompting == list(range(1, 13)) and all(total == 12 for *_, total in seen)
    assert [done for stage, done, _ in seen if stage == "segmenting"] == list(range(1, 11))


class BatchThresholdSegmenter(ThresholdSegmenter):
    """``ThresholdSegmenter`` that can also encode several planes together."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def encode_many(self, images):
        self.batches.append(len(images))
        return list(images)


def test_planes_with_boxes_are_encoded_together_once_and_the_result_is_the_same():
    volume = moving_disk()
    boxes = {z: [(8, 8 + z, 16, 16 + z, 1, 0.9)] for z in range(3, 9)}
    plain_labels, _ = Propagation(OnePlaneFinder(boxes), ThresholdSegmenter()).run(volume)
    batched = BatchThresholdSegmenter()
    labels, _ = Propagation(OnePlaneFinder(boxes), batched).run(volume)
    np.testing.assert_array_equal(labels, plain_labels)
    assert batched.batches == [6]  # planes 3..8 at once
    assert batched.encodes == 4  # then planes 2 and 9 (the disk), 1 and 10 (gone), singly


def test_a_prompter_reading_the_embedding_has_the_planes_encoded_in_chunks():
    class EmbeddingFinder(OnePlaneFinder):
        uses_embedding = True

    volume = moving_disk()
    boxes = {z: [(8, 8 + z, 16, 16 + z, 1, 0.9)] for z in range(3, 9)}
    single = ThresholdSegmenter()
    single.embedding = None
    plain_labels, _ = Propagation(EmbeddingFinder(boxes), single).run(volume)
    batched = BatchThresholdSegmenter()
    batched.embedding = None
    labels, _ = Propagation(EmbeddingFinder(boxes), batched).run(volume)
    np.testing.assert_array_equal(labels, plain_labels)
    assert batched.batches == [ENCODE_CHUNK, len(volume) - ENCODE_CHUNK]
    assert single.encodes == len(volume) + 4 and batched.encodes == 4  # 2, 9, 1, 10 again


def test_encoding_for_a_prompter_that_reads_the_embedding_is_reported_as_prompting():
    class EmbeddingFinder(OnePlaneFinder):
        uses_embedding = True

    volume = moving_disk()
    segmenter = BatchThresholdSegmenter()
    segmenter.embedding = None
    seen = []
    finder = EmbeddingFinder({6: [(8, 12, 16, 20, 1, 0.9)]})
    Propagation(finder, segmenter, on_progress=lambda *a: seen.append(a)).run(volume)
    stages = [stage for stage, *_ in seen]
    assert stages[: len(volume)] == ["prompting"] * len(volume)  # no second bar in between
    assert [done for stage, done, _ in seen if stage == "prompting"] == list(range(1, 13))
