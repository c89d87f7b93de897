from __future__ import annotations

import numpy as np
import pytest

from automedseg.errors import PromptError
from automedseg.pipeline import check_boxes, segment_image
from automedseg.prompt.oracle import oracle_boxes
from automedseg.types import Boxes, Image


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
    result = segment_image(image, boxes, BoxFiller())
    assert result.label_map[4, 4] == 1  # the higher score wins the overlap
    assert result.label_map[9, 9] == 2 and result.label_map[0, 9] == 0


def test_volume_is_segmented_on_the_chosen_slice_only():
    volume = Image(np.random.default_rng(2).random((5, 8, 8)).astype(np.float32), 3)
    result = segment_image(volume, Boxes.from_list([(1, 1, 3, 3)]), BoxFiller(), slice_index=3)
    assert result.slice_index == 3
    assert result.label_map.shape == (5, 8, 8)
    assert result.label_map[3].sum() == 9 and result.label_map.sum() == 9
    with pytest.raises(PromptError, match="slice 5 is outside"):
        segment_image(volume, Boxes.from_list([(1, 1, 3, 3)]), BoxFiller(), slice_index=5)


def test_oracle_boxes_one_per_component_and_label():
    labels = np.zeros((6, 8), np.uint8)
    labels[0:2, 0:2] = 1
    labels[4:6, 5:8] = 1
    labels[2:4, 3:5] = 2
    boxes = oracle_boxes(labels)
    assert boxes.xyxy.tolist() == [[0, 0, 1, 1], [5, 4, 7, 5], [3, 2, 4, 3]]
    assert boxes.labels.tolist() == [1, 1, 2]
    assert len(oracle_boxes(np.zeros((4, 4), np.uint8))) == 0
