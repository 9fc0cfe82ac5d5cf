"""trainer/metrics.py on cases worked out by hand: IoU, both confusion matrices, COCO AP and curves, accuracies."""
import numpy as np
import pytest

from trainer.metrics import (IOU, TOP_K_ACCURACY, accuracies, class_confusion, coco_ap, coco_iou, cocoeval,
                             detection_confusion, iou, pr_curves)
from trainer.report.model import MIN_SCORE

# Two images, classes a (1) and b (2). Image 1: a at (0,0), b at (20,20); image 2: a at (0,0).
TRUTH = {"images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 64},
                    {"id": 2, "file_name": "2.jpg", "width": 64, "height": 64}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
                         {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10], "area": 100,
                          "iscrowd": 0},
                         {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
         "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},    # a found
    {"image_id": 1, "category_id": 1, "bbox": [21, 20, 10, 10], "score": 0.8},  # b called a (IoU 0.82)
    {"image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10], "score": 0.7},  # b where nothing is
    {"image_id": 2, "category_id": 1, "bbox": [0, 1, 10, 10], "score": 0.3},    # a found, below MIN_SCORE
]


def test_confusion_matrix_counts_hits_confusions_misses_and_false_detections():
    assert IOU == 0.5 and MIN_SCORE == 0.5
    matrix, per_image = detection_confusion(TRUTH, DETECTIONS, [1, 2], MIN_SCORE)
    assert matrix.tolist() == [[1, 0, 1],   # a: found once, missed once (image 2's detection scores 0.3)
                               [1, 0, 0],   # b: called a
                               [0, 1, 0]]   # background: one false b
    assert per_image == {1: (1, 2), 2: (1, 0)}  # (missed, false) per image


def test_pr_curves_are_pycocotools_interpolated_precision_at_iou_half():
    curves = pr_curves(TRUTH, DETECTIONS)
    # a: detections by score TP, FP, TP over 2 boxes: (recall, precision) = (.5, 1), (.5, .5), (1, 2/3);
    # COCO's interpolated precision is 1 up to recall 0.5 and 2/3 up to recall 1.
    recall, precision = curves[1]
    assert len(recall) == 101 and recall[0] == 0 and recall[-1] == 1
    assert all(p == pytest.approx(1) for r, p in zip(recall, precision) if r <= 0.5)
    assert all(p == pytest.approx(2 / 3) for r, p in zip(recall, precision) if r > 0.5)
    assert len(curves[2][0]) == 0  # b: its only detection is false: no point with precision > 0


def test_no_detections_means_every_box_missed_and_no_curve():
    matrix, per_image = detection_confusion(TRUTH, [], [1, 2], MIN_SCORE)
    assert matrix.tolist() == [[0, 0, 2], [0, 0, 1], [0, 0, 0]]
    assert per_image == {1: (2, 0), 2: (1, 0)}
    assert {category: len(recall) for category, (recall, _) in pr_curves(TRUTH, []).items()} == {1: 0, 2: 0}


def test_iou_of_corner_boxes_and_of_coco_boxes():
    assert iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)  # overlap 1, union 4 + 4 - 1
    assert iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert iou((0, 0, 2, 2), (0, 2, 2, 4)) == 0.0  # touching edges
    assert iou((0, 0, 2, 2), (5, 5, 6, 6)) == 0.0
    assert iou((1, 1, 1, 1), (1, 1, 1, 1)) == 0.0  # no area: no union
    assert coco_iou([20, 20, 10, 10], [21, 20, 10, 10]) == pytest.approx(9 / 11)  # 90 / (100 + 100 - 90)
    assert coco_iou([0, 0, 4, 2], [2, 0, 4, 2]) == pytest.approx(1 / 3)
    assert coco_iou([0, 0, 4, 2], [2, 0, 4, 2]) == iou((0, 0, 2, 4), (0, 2, 2, 6))


def test_class_confusion_counts_true_rows_and_predicted_columns():
    matrix = class_confusion(np.array([[0], [0], [1], [2], [2], [2]]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert matrix.dtype == np.int64
    assert matrix.tolist() == [[1, 1, 0],
                               [0, 1, 0],
                               [1, 0, 2]]


def test_accuracies_top_1_and_top_k_only_with_more_than_k_classes():
    ranked = np.array([[0, 1, 2, 3, 4, 5], [2, 1, 0, 3, 4, 5], [5, 4, 3, 1, 0, 2]])
    assert accuracies(ranked, np.array([0, 1, 2])) == {"accuracy": pytest.approx(1 / 3),
                                                       TOP_K_ACCURACY: pytest.approx(2 / 3)}
    assert accuracies(ranked[:, :5], np.array([0, 1, 2])) == {"accuracy": pytest.approx(1 / 3)}
    assert TOP_K_ACCURACY == "top_5_accuracy"  # Model Garden's name, which metrics.json keeps


def test_coco_ap_of_perfect_missed_and_half_found_detections():
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in TRUTH["annotations"]]
    assert coco_ap(TRUTH, perfect) == (1.0, 1.0)
    missed = [{**detection, "bbox": [50, 50, 10, 10]} for detection in perfect]
    assert coco_ap(TRUTH, missed) == (0.0, 0.0)
    assert coco_ap(TRUTH, []) == (0.0, 0.0)
    assert coco_ap({**TRUTH, "annotations": []}, perfect) == (0.0, 0.0)
    # Class a: one of its two boxes found: precision 1 at the 51 recall points 0, 0.01 .. 0.5 of 101, then 0;
    # class b found: 1.
    half = [detection for detection in perfect if detection["image_id"] == 1]
    assert coco_ap(TRUTH, half) == (pytest.approx((51 / 101 + 1) / 2), pytest.approx((51 / 101 + 1) / 2))


def test_cocoeval_prints_nothing(capfd):
    evaluation = cocoeval(TRUTH, DETECTIONS)
    pr_curves(TRUTH, DETECTIONS)
    coco_ap(TRUTH, DETECTIONS)
    assert capfd.readouterr() == ("", "")
    # AP50: a's detections by score TP, FP, TP (see the curves above): 51 points at precision 1, 50 at 2/3; b: 0.
    assert evaluation.stats[1] == pytest.approx((51 + 50 * 2 / 3) / 101 / 2)
