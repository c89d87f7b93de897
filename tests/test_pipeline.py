from __future__ import annotations

import numpy as np
import pytest

from automedseg.errors import PromptError
from automedseg.pipeline import segment_image, segment_plane
from automedseg.prompt.oracle import FixedBoxes, oracle_boxes
from automedseg.types import Boxes, Image, check_boxes


class BoxFiller:
    """A stand-in segmenter: the mask is the box itself."""

    def set_image(self, image):
        self.shape = image.shape[:2]

    def predict(self, boxes_xyxy):
        masks = np.zeros((len(boxes_xyxy), *self.shape), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes_xyxy.astype(int), strict=False):
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return masks


@pytest.mark.parametrize(
    "box, message",
    [
        ((10, 2, 5, 8), "inverted"),
        ((2, 9, 5, 3), "inverted"),
        ((-1, 0, 5, 5), "outside"),
        ((0, 0, 21, 5), "outside"),
        ((0, 0, 5, float("nan")), "non-finite"),
    ],
)
def test_bad_boxes_are_refused(box, message):
    with pytest.raises(PromptError, match=message):
        check_boxes(Boxes.from_list([box]), (10, 20))


def test_box_edges_equal_to_size_are_clipped_to_the_last_pixel():
    boxes = check_boxes(Boxes.from_list([(0, 0, 20, 10)]), (10, 20))
    assert boxes.xyxy.tolist() == [[0, 0, 19, 9]]


def test_overlapping_objects_resolved_by_score():
    image = Image(np.random.default_rng(1).random((10, 10)).astype(np.float32), 2)
    boxes = Boxes(np.array([[0, 0, 5, 5], [3, 3, 9, 9]]), np.array([1, 2]), np.array([0.9, 0.5]))
    result = segment_image(image, FixedBoxes(boxes), BoxFiller())
    assert result.label_map[4, 4] == 1  # the higher score wins the overlap
    assert result.label_map[9, 9] == 2 and result.label_map[0, 9] == 0


def test_volume_is_segmented_on_the_chosen_slice_only():
    volume = Image(np.random.default_rng(2).random((5, 8, 8)).astype(np.float32), 3)
    box = FixedBoxes(Boxes.from_list([(1, 1, 3, 3)]))
    result = segment_image(volume, box, BoxFiller(), slice_index=3, propagate=False)
    assert result.slice_index == 3
    assert result.label_map.shape == (5, 8, 8)
    assert result.label_map[3].sum() == 9 and result.label_map.sum() == 9
    with pytest.raises(PromptError, match="slice 5 is outside"):
        segment_image(volume, box, BoxFiller(), slice_index=5)


class BrightSpotFinder:
    """A stand-in prompter: a box around the pixels above 0.5, if any."""

    uses_embedding = False
    labels = {1: "spot"}
    score_threshold = 0.5

    def find(self, image, embedding=None):
        ys, xs = np.nonzero(image > 0.5)
        if len(xs) == 0:
            return Boxes(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))
        return Boxes(np.array([[xs.min(), ys.min(), xs.max(), ys.max()]]), 1, 0.8)


def test_automatic_volume_prompts_every_slice_and_skips_empty_ones():
    array = np.zeros((4, 8, 8), np.float32)
    array[1, 2:4, 2:5] = 1.0
    array[3, 5:7, 0:2] = 1.0
    segmenter = BoxFiller()
    calls = []
    original = segmenter.set_image
    segmenter.set_image = lambda image: (calls.append(1), original(image))
    result = segment_image(Image(array, 3), BrightSpotFinder(), segmenter, propagate=False)
    np.testing.assert_array_equal(result.label_map > 0, array > 0.5)
    assert result.box_slices.tolist() == [1, 3]
    assert len(calls) == 2  # the encoder ran only where the prompter found something


def test_segment_plane_reports_time_per_stage():
    times = {}
    plane = np.zeros((8, 8), np.float32)
    plane[2:4, 2:4] = 1.0
    seg = segment_plane(plane, BrightSpotFinder(), BoxFiller(), times)
    assert len(seg.boxes) == 1 and set(times) == {"prompter", "encoder", "decoder"}
    assert all(v >= 0 for v in times.values())


def test_a_users_box_on_one_slice_is_propagated_through_the_volume():
    from test_propagate import ThresholdSegmenter, moving_disk

    volume = moving_disk()
    box = FixedBoxes(Boxes.from_list([(8, 12, 16, 20)]))
    result = segment_image(Image(volume, 3), box, ThresholdSegmenter(), slice_index=6)
    np.testing.assert_array_equal(result.label_map > 0, volume > 0.5)
    assert result.box_slices.tolist() == [6]
    assert result.instance_map.max() == 1


def test_oracle_boxes_one_per_component_and_label():
    labels = np.zeros((6, 8), np.uint8)
    labels[0:2, 0:2] = 1
    labels[4:6, 5:8] = 1
    labels[2:4, 3:5] = 2
    boxes = oracle_boxes(labels)
    assert boxes.xyxy.tolist() == [[0, 0, 1, 1], [5, 4, 7, 5], [3, 2, 4, 3]]
    assert boxes.labels.tolist() == [1, 1, 2]
    assert len(oracle_boxes(np.zeros((4, 4), np.uint8))) == 0
