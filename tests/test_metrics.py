"""Hand-computed metric values on tiny masks (DESIGN.md example 10).

MONAI conventions these numbers rely on (checked against monai 1.6):
- the boundary of a mask is ``mask & ~erode(mask)``, so a single voxel, a 1-voxel line and every
  voxel of a 2x2 square are boundary, while the centre of a 3x3 square is not;
- surface distances are between boundary-voxel centres, each axis scaled by ``spacing``
  (array order), so a one-row shift with row spacing 2 mm is 2 mm, not 1 or 0;
- hd95 is ``torch.quantile(d, 0.95)`` with linear interpolation, per direction, then the max.
  With n distances the value sits at sorted position 0.95 * (n - 1), which is why a single
  outlier among few boundary voxels gives an interpolated, not an observed, distance.
"""

import math

import numpy as np
import pytest

from automedseg.evaluate.metrics import (
    average_precision,
    best_f1_operating_point,
    box_iou,
    detection_hits,
    detection_metrics,
    detection_scores,
    dice,
    hd95,
    iou,
    label_metrics,
    match_detections,
    nsd,
)


def mask(shape, *idx):
    m = np.zeros(shape, dtype=bool)
    for i in idx:
        m[i] = True
    return m


# --- dice / iou -------------------------------------------------------------------------


def test_dice_iou_3x3_partial_overlap():
    pred = mask((3, 3), (0, 0), (0, 1))  # 2 px
    gt = mask((3, 3), (0, 1), (1, 1), (1, 2))  # 3 px, overlap 1 px
    assert dice(pred, gt) == pytest.approx(2 * 1 / (2 + 3))  # 0.4
    assert iou(pred, gt) == pytest.approx(1 / 4)  # union 4


def test_dice_iou_2x2_identical_and_disjoint():
    a = mask((2, 2), (0, 0), (1, 1))
    b = mask((2, 2), (0, 1), (1, 0))
    assert dice(a, a) == pytest.approx(1.0)
    assert iou(a, a) == pytest.approx(1.0)
    assert dice(a, b) == pytest.approx(0.0)
    assert iou(a, b) == pytest.approx(0.0)


def test_dice_iou_4x4_gt_inside_pred():
    pred = np.zeros((4, 4), dtype=bool)
    pred[0:3, 0:3] = True  # 9 px
    gt = np.zeros((4, 4), dtype=bool)
    gt[1:3, 1:3] = True  # 4 px, all inside pred
    assert dice(pred, gt) == pytest.approx(8 / 13)
    assert iou(pred, gt) == pytest.approx(4 / 9)


def test_dice_iou_3d_half_overlap():
    pred = np.zeros((3, 2, 2), dtype=bool)
    pred[0:2] = True  # 8 voxels
    gt = np.zeros((3, 2, 2), dtype=bool)
    gt[1:3] = True  # 8 voxels, overlap 4
    assert dice(pred, gt) == pytest.approx(0.5)
    assert iou(pred, gt) == pytest.approx(4 / 12)


def test_dice_iou_accept_integer_masks():
    assert dice(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 0]])) == pytest.approx(2 / 4)


@pytest.mark.parametrize("fn", [dice, iou])
def test_dice_iou_empty(fn):
    empty = np.zeros((2, 2), dtype=bool)
    full = np.ones((2, 2), dtype=bool)
    assert fn(empty, empty) == 1.0
    assert fn(empty, empty, empty=0.0) == 0.0
    assert math.isnan(fn(empty, empty, empty=float("nan")))
    assert fn(full, empty) == 0.0  # gt empty, pred not
    assert fn(empty, full) == 0.0  # pred empty, gt not


def test_shape_and_spacing_validation():
    with pytest.raises(ValueError):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        hd95(mask((2, 2), (0, 0)), mask((2, 2), (0, 0)), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        nsd(mask((2, 2), (0, 0)), mask((2, 2), (0, 0)), spacing=(0.0, 1.0), tolerance_mm=1.0)


# --- hd95 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        ((1, 0), 2.0),  # one row at 2 mm/row
        ((0, 1), 1.0),  # one column at 1 mm/col
        ((0, 3), 3.0),
        ((1, 1), math.sqrt(2.0**2 + 1.0**2)),
    ],
)
def test_hd95_single_pixels_2d_anisotropic(other, expected):
    pred = mask((3, 4), (0, 0))
    gt = mask((3, 4), other)
    assert hd95(pred, gt, spacing=(2.0, 1.0)) == pytest.approx(expected)
    assert hd95(gt, pred, spacing=(2.0, 1.0)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        ((1, 0, 0), 3.0),  # z, 3 mm slices
        ((0, 1, 0), 1.0),  # y
        ((0, 0, 2), 1.0),  # x, 2 voxels of 0.5 mm
        ((1, 1, 2), math.sqrt(9.0 + 1.0 + 1.0)),
    ],
)
def test_hd95_single_voxels_3d_anisotropic(other, expected):
    pred = mask((2, 2, 3), (0, 0, 0))
    gt = mask((2, 2, 3), other)
    assert hd95(pred, gt, spacing=(3.0, 1.0, 0.5)) == pytest.approx(expected)


def test_hd95_identical_is_zero():
    m = np.zeros((4, 4), dtype=bool)
    m[1:3, 1:4] = True
    assert hd95(m, m, spacing=(1.0, 1.0)) == pytest.approx(0.0)


def test_hd95_3x3_square_shifted_one_row():
    # gt rows 0-2, pred rows 1-3 (cols 0-2). Boundary = 8 voxels each (centre excluded).
    # pred->gt distances (mm, spacing 2x1): 0,1,0, 0,0, 2,2,2; gt->pred symmetric.
    # Sorted [0,0,0,0,1,2,2,2]: position 0.95*7 = 6.65 lies between two 2s -> 2.0.
    gt = np.zeros((5, 5), dtype=bool)
    gt[0:3, 0:3] = True
    pred = np.zeros((5, 5), dtype=bool)
    pred[1:4, 0:3] = True
    assert hd95(pred, gt, spacing=(2.0, 1.0)) == pytest.approx(2.0)


def test_hd95_is_interpolated_percentile_not_max():
    # gt: a 10-pixel line on row 0; pred: the same line plus one outlier 10 rows below.
    # pred->gt: ten 0s and one 10 -> quantile at position 0.95*10 = 9.5 -> 0.5*10 = 5.0.
    # gt->pred: all 0. The (100th-percentile) Hausdorff distance would be 10.
    gt = np.zeros((11, 10), dtype=bool)
    gt[0, :] = True
    pred = gt.copy()
    pred[10, 0] = True
    assert hd95(pred, gt, spacing=(1.0, 1.0)) == pytest.approx(5.0)


@pytest.mark.parametrize("shape", [(3, 3), (2, 3, 3)])
def test_hd95_empty(shape):
    empty = np.zeros(shape, dtype=bool)
    one = np.zeros(shape, dtype=bool)
    one.flat[0] = True
    spacing = (1.0,) * len(shape)
    assert hd95(empty, empty, spacing) == 0.0
    assert math.isnan(hd95(one, empty, spacing))
    assert math.isnan(hd95(empty, one, spacing))


# --- nsd --------------------------------------------------------------------------------


def test_nsd_single_pixels_2d_anisotropic():
    pred = mask((3, 3), (0, 0))
    row = mask((3, 3), (1, 0))  # 2 mm away
    col = mask((3, 3), (0, 1))  # 1 mm away
    assert nsd(pred, row, spacing=(2.0, 1.0), tolerance_mm=2.0) == pytest.approx(1.0)  # d <= tol
    assert nsd(pred, row, spacing=(2.0, 1.0), tolerance_mm=1.5) == pytest.approx(0.0)
    assert nsd(pred, col, spacing=(2.0, 1.0), tolerance_mm=1.5) == pytest.approx(1.0)


def test_nsd_3x3_square_shifted_one_row():
    # Same geometry as the hd95 test: 16 boundary distances, 6 of them 2 mm, 2 of them 1 mm.
    gt = np.zeros((5, 5), dtype=bool)
    gt[0:3, 0:3] = True
    pred = np.zeros((5, 5), dtype=bool)
    pred[1:4, 0:3] = True
    assert nsd(pred, gt, spacing=(2.0, 1.0), tolerance_mm=2.0) == pytest.approx(1.0)
    assert nsd(pred, gt, spacing=(2.0, 1.0), tolerance_mm=1.5) == pytest.approx(10 / 16)
    assert nsd(pred, gt, spacing=(2.0, 1.0), tolerance_mm=0.5) == pytest.approx(8 / 16)


def test_nsd_single_voxels_3d_anisotropic():
    pred = mask((2, 2, 2), (0, 0, 0))
    gt = mask((2, 2, 2), (1, 0, 0))  # 3 mm away along z
    assert nsd(pred, gt, spacing=(3.0, 1.0, 1.0), tolerance_mm=3.0) == pytest.approx(1.0)
    assert nsd(pred, gt, spacing=(3.0, 1.0, 1.0), tolerance_mm=2.5) == pytest.approx(0.0)
    assert nsd(pred, gt, spacing=(1.0, 1.0, 1.0), tolerance_mm=2.5) == pytest.approx(1.0)


def test_nsd_empty():
    empty = np.zeros((3, 3), dtype=bool)
    one = mask((3, 3), (1, 1))
    assert nsd(empty, empty, (1.0, 1.0), tolerance_mm=1.0) == 1.0
    assert nsd(one, empty, (1.0, 1.0), tolerance_mm=1.0) == 0.0
    assert nsd(empty, one, (1.0, 1.0), tolerance_mm=1.0) == 0.0


# --- label_metrics ----------------------------------------------------------------------


def test_label_metrics_two_labels_and_an_absent_one():
    gt = np.array(
        [
            [1, 1, 0, 0],
            [1, 1, 0, 0],
            [0, 0, 2, 2],
            [0, 0, 2, 2],
        ]
    )
    pred = np.array(
        [
            [1, 1, 0, 0],
            [1, 0, 2, 2],
            [0, 0, 2, 2],
            [0, 0, 0, 0],
        ]
    )
    out = label_metrics(pred, gt, labels=[1, 2, 3], spacing=(2.0, 1.0), tolerance_mm=1.0)
    assert set(out) == {1, 2, 3}
    # Label 1: pred is gt minus (1,1). gt->pred distances 0,0,0,1 mm (nearest to (1,1) is
    # (1,0), 1 mm; (0,1) is 2 mm) -> quantile at 0.95*3 = 2.85 -> 0.85 mm.
    assert out[1] == pytest.approx(
        {"dice": 6 / 7, "iou": 3 / 4, "hd95": 0.85, "nsd": 1.0, "gt_voxels": 4, "pred_voxels": 3}
    )
    # Label 2: 2x2 block shifted up one row (2 mm): half of the 8 boundary distances are 2 mm.
    assert out[2] == pytest.approx(
        {"dice": 0.5, "iou": 1 / 3, "hd95": 2.0, "nsd": 0.5, "gt_voxels": 4, "pred_voxels": 4}
    )
    # Label 3 is in neither map: the both-empty conventions.
    assert out[3] == pytest.approx(
        {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0, "gt_voxels": 0, "pred_voxels": 0}
    )


# --- boxes and detections ---------------------------------------------------------------


def test_box_iou_inclusive_corners():
    a = np.array([[0, 0, 1, 1], [3, 3, 3, 3]])
    b = np.array([[0, 0, 1, 1], [1, 1, 2, 2], [5, 5, 6, 6], [3, 3, 3, 3]])
    out = box_iou(a, b)
    assert out.shape == (2, 4)
    # 2x2 boxes (4 px) sharing one pixel: 1 / (4 + 4 - 1).
    assert out[0] == pytest.approx([1.0, 1 / 7, 0.0, 0.0])
    # A single-pixel box has area 1 (with exclusive corners it would be 0 -> undefined).
    assert out[1] == pytest.approx([0.0, 0.0, 0.0, 1.0])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_box_iou_rejects_inverted_box():
    with pytest.raises(ValueError):
        box_iou(np.array([[2, 0, 1, 1]]), np.array([[0, 0, 1, 1]]))


def test_match_detections_duplicate_and_miss():
    gt = np.array([[0, 0, 9, 9], [20, 20, 29, 29]])
    pred = np.array([[0, 0, 9, 9], [0, 0, 9, 8]])  # two detections of gt 0, none of gt 1
    assert match_detections(pred, np.array([0.9, 0.8]), gt) == (1, 1, 1)


def test_match_detections_greedy_by_score_not_input_order():
    # All boxes span rows 0-9; columns: gt1 0-9, gt2 4-13, a 1-10, b 0-7.
    # IoU(a, gt1) = 9/11, IoU(a, gt2) = 7/13 (~0.54), IoU(b, gt1) = 8/10, IoU(b, gt2) = 4/14.
    gt = np.array([[0, 0, 9, 9], [4, 0, 13, 9]])
    pred = np.array([[0, 0, 7, 9], [1, 0, 10, 9]])  # b first, a second
    # a (score 0.9) goes first and takes gt1; b cannot reach gt2 -> 1 tp, 1 fp, 1 fn.
    assert match_detections(pred, np.array([0.5, 0.9]), gt) == (1, 1, 1)
    # With b scored higher, b takes gt1 and a still reaches gt2 (7/13 >= 0.5).
    assert match_detections(pred, np.array([0.9, 0.5]), gt) == (2, 0, 0)
    assert match_detections(pred, np.array([0.9, 0.5]), gt, iou_threshold=0.9) == (0, 2, 2)


def test_match_detections_empty():
    gt = np.array([[0, 0, 9, 9]])
    assert match_detections(np.zeros((0, 4)), np.zeros(0), gt) == (0, 0, 1)
    assert match_detections(gt, np.array([0.5]), np.zeros((0, 4))) == (0, 1, 0)
    assert match_detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4))) == (0, 0, 0)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((1, 1, 1), (0.5, 0.5, 0.5)),
        ((2, 0, 2), (1.0, 0.5, 2 / 3)),
        ((3, 1, 0), (0.75, 1.0, 6 / 7)),
        ((0, 0, 0), (1.0, 1.0, 1.0)),  # nothing to find, nothing found
        ((0, 0, 3), (0.0, 0.0, 0.0)),  # no predictions, missed everything
        ((0, 2, 0), (0.0, 0.0, 0.0)),  # predictions on an image without objects
    ],
)
def test_detection_scores(counts, expected):
    out = detection_scores(*counts)
    assert (out["precision"], out["recall"], out["f1"]) == pytest.approx(expected)


# --- ranked detections: AP and the F1-best threshold ------------------------------------


def test_detection_hits_in_input_order():
    # the greedy example above: a (score 0.9, second) takes gt1, b cannot reach gt2
    gt = np.array([[0, 0, 9, 9], [4, 0, 13, 9]])
    pred = np.array([[0, 0, 7, 9], [1, 0, 10, 9]])
    assert detection_hits(pred, np.array([0.5, 0.9]), gt).tolist() == [False, True]
    assert detection_hits(pred, np.array([0.9, 0.5]), gt).tolist() == [True, True]
    assert detection_hits(pred, np.array([0.9, 0.5]), np.zeros((0, 4))).tolist() == [False] * 2


def test_average_precision_by_hand():
    # ranked hit, miss, hit: precision 1, 1/2, 2/3; the envelope is 1, 2/3, 2/3
    scores, hits = np.array([0.6, 0.9, 0.8]), np.array([True, True, False])  # any input order
    # 2 true boxes: recall 1/2, 1/2, 1 → 1 at recall 0…0.50 (51 points), 2/3 at 0.51…1 (50)
    assert average_precision(scores, hits, 2) == pytest.approx((51 + 50 * 2 / 3) / 101)
    # 3 true boxes: recall 1/3, 1/3, 2/3 → 1 at 0…0.33 (34), 2/3 at 0.34…0.66 (33), 0 after
    assert average_precision(scores, hits, 3) == pytest.approx((34 + 33 * 2 / 3) / 101)
    assert average_precision(np.array([0.5]), np.array([True]), 1) == 1.0
    assert average_precision(np.zeros(0), np.zeros(0, bool), 2) == 0.0
    assert average_precision(scores, hits, 0) == 0.0
    with pytest.raises(ValueError):
        average_precision(scores, hits[:2], 2)


def test_best_f1_operating_point_by_hand():
    scores, hits = np.array([0.9, 0.8, 0.6]), np.array([True, False, True])
    # cut after 0.9: P 1, R 1/2, F1 2/3; after 0.8: F1 1/2; after 0.6: P 2/3, R 1, F1 0.8
    best = best_f1_operating_point(scores, hits, 2)
    assert best == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "score_threshold": 0.3}
    )  # the threshold sits midway between 0.6 and the floor, 0
    assert best_f1_operating_point(scores, hits, 2, score_floor=0.5)["score_threshold"] == 0.55
    # one true box: cutting after 0.9 is perfect; midway to the next score, 0.8
    assert best_f1_operating_point(scores, hits, 1) == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "f1": 1.0, "score_threshold": 0.85}
    )
    # equal scores are never split: hit and miss at 0.7 are kept or dropped together
    tied = best_f1_operating_point(np.array([0.9, 0.7, 0.7]), np.array([True, True, False]), 2)
    assert tied["f1"] == pytest.approx(0.8) and tied["score_threshold"] == pytest.approx(0.35)
    assert best_f1_operating_point(np.zeros(0), np.zeros(0, bool), 2) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "score_threshold": None,
    }
    assert set(best_f1_operating_point(scores, hits, 0).values()) == {None}


def test_detection_metrics_by_hand():
    truths = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 0]))]
    # 0.9 hits the first box, 0.8 is a duplicate of it (false), 0.6 hits the second box
    predictions = [
        (
            np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 30, 31]]),
            np.array([0.9, 0.8, 0.6]),
            np.array([0, 0, 0]),
        )
    ]
    m = detection_metrics(predictions, truths)
    # the ranked hits of test_average_precision_by_hand and test_best_f1_operating_point_by_hand
    assert m["mAP50"] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    assert m["ap50_per_class"] == {0: m["mAP50"]}
    assert m["score_threshold"] == pytest.approx(0.3)
    assert m["recall"] == 1.0 and m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.8)
    one_hit = detection_metrics([(p[:1], s[:1], c[:1]) for p, s, c in predictions], truths[:1])
    assert one_hit["f1"] == pytest.approx(2 / 3) and one_hit["score_threshold"] == 0.45
    two = detection_metrics(predictions, [(truths[0][0][:1], truths[0][1][:1])], score_floor=0.1)
    assert two["f1"] == 1.0 and two["score_threshold"] == pytest.approx(0.85)
    empty = detection_metrics([(np.zeros((0, 4)), np.zeros(0), np.zeros(0))], truths)
    assert empty["mAP50"] == 0.0 and empty["recall"] == 0.0
    nothing = detection_metrics(predictions, [(np.zeros((0, 4)), np.zeros(0))])
    assert nothing["mAP50"] is None and nothing["ap50_per_class"] == {}


def test_detection_metrics_averages_classes_with_ground_truth():
    # class 0 found (AP 1), class 1 missed (AP 0), class 2 has no ground truth: its detection
    # is a pooled false positive but no AP of its own
    truths = [(np.array([[0, 0, 9, 9], [20, 20, 29, 29]]), np.array([0, 1]))]
    predictions = [(np.array([[0, 0, 9, 9], [40, 40, 49, 49]]), np.array([0.9, 0.8]), [0, 2])]
    m = detection_metrics(predictions, truths)
    assert m["ap50_per_class"] == {0: 1.0, 1: 0.0} and m["mAP50"] == 0.5
    # pooled: hit at 0.9 (P 1, R 1/2, F1 2/3) beats keeping the miss at 0.8 (F1 1/2)
    assert m["f1"] == pytest.approx(2 / 3) and m["score_threshold"] == pytest.approx(0.85)


def test_plane_dice_averages_over_planes_where_either_mask_is_present():
    from automedseg.evaluate.metrics import plane_dice

    gt = np.zeros((3, 2, 2), bool)
    pred = np.zeros((3, 2, 2), bool)
    gt[0, 0, :] = True  # plane 0: gt 2 px, pred 1 px inside → 2*1/3
    pred[0, 0, 0] = True
    pred[1, 1, 1] = True  # plane 1: a false positive → 0
    # plane 2: both empty → not counted
    assert plane_dice(pred, gt) == pytest.approx((2 / 3 + 0.0) / 2)
    assert np.isnan(plane_dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))))
