"""The scores shared by train, export evaluation, the report and predict: COCO AP, IoU, confusion matrices, top-k.

One place for the numbers, so that export's AP and the report's curves come from the
same COCOeval (in memory, and silent: pycocotools prints its progress and its table),
and every box match uses the same IoU.
"""
import contextlib
import io

import numpy as np

TOP_K = 5  # classifiers also report top-5 accuracy when they have more than 5 classes
TOP_K_ACCURACY = f"top_{TOP_K}_accuracy"
IOU = 0.5  # a detection matches a box at IoU >= 0.5 (COCO's AP50): the report's curves and matrix, predict


def cocoeval(truth, detections):
    """pycocotools' COCOeval of DETECTIONS (a non-empty COCO results list) against TRUTH (a COCO dict),
    evaluated, accumulated and summarized (.stats), with no file written and nothing printed."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = truth
        ground.createIndex()
        evaluation = COCOeval(ground, ground.loadRes(detections), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def coco_ap(truth, detections):
    """(AP, AP50) from pycocotools, as Model Garden's COCO evaluator computes them; 0 without boxes or detections."""
    if not detections or not truth["annotations"]:
        return 0.0, 0.0
    stats = cocoeval(truth, detections).stats
    return max(float(stats[0]), 0.0), max(float(stats[1]), 0.0)


def pr_curves(truth, detections):
    """{category id: (recall points, interpolated precision)} at IOU, from pycocotools' COCOeval."""
    if not detections:  # pycocotools cannot load an empty result list
        return {category["id"]: (np.array([]), np.array([])) for category in truth["categories"]}
    evaluation = cocoeval(truth, detections)
    recall = evaluation.params.recThrs
    threshold = int(np.argmin(np.abs(evaluation.params.iouThrs - IOU)))
    curves = {}
    for index, category_id in enumerate(evaluation.params.catIds):
        precision = evaluation.eval["precision"][threshold, :, index, 0, -1]  # area "all", most detections
        valid = precision > -1
        # COCO fills precision with 0 beyond the highest recall reached; the curve stops there.
        reached = valid & (np.maximum.accumulate(precision[::-1])[::-1] > 0)
        curves[category_id] = (recall[reached], precision[reached])
    return curves


def iou(a, b):
    """IoU of two (ymin, xmin, ymax, xmax) boxes, the order the detectors give."""
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(height, 0) * max(width, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def coco_iou(a, b):
    """IoU of two COCO [x, y, width, height] boxes."""
    return iou(*((y, x, y + h, x + w) for x, y, w, h in (a, b)))


def detection_confusion(truth, detections, category_ids, min_score):
    """(matrix, {image id: (missed, false)}) at IOU for detections scoring >= MIN_SCORE.

    Rows: true classes then background; columns: predicted classes then background.
    Each image's detections, best score first, take the unmatched ground-truth box of
    any class they overlap most (IoU >= IOU): same class on the diagonal, another class
    off it; a detection matching nothing is a false one (background row), a box no
    detection matches is missed (background column).
    """
    index = {category_id: i for i, category_id in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=int)
    boxes = {image["id"]: [] for image in truth["images"]}
    for annotation in truth["annotations"]:
        boxes[annotation["image_id"]].append(annotation)
    found = {image_id: [] for image_id in boxes}
    for detection in detections:
        if detection["score"] >= min_score and detection["image_id"] in found:
            found[detection["image_id"]].append(detection)
    per_image = {}
    for image_id, annotations in boxes.items():
        taken = [False] * len(annotations)
        missed = false = 0
        for detection in sorted(found[image_id], key=lambda d: -d["score"]):
            overlaps = [coco_iou(detection["bbox"], a["bbox"]) if not taken[i] else -1
                        for i, a in enumerate(annotations)]
            best = int(np.argmax(overlaps)) if overlaps else -1
            predicted = index[detection["category_id"]]
            if best < 0 or overlaps[best] < IOU:
                matrix[background, predicted] += 1
                false += 1
                continue
            taken[best] = True
            actual = index[annotations[best]["category_id"]]
            matrix[actual, predicted] += 1
            if actual != predicted:
                missed += 1
                false += 1
        for annotation, matched in zip(annotations, taken):
            if not matched:
                matrix[index[annotation["category_id"]], background] += 1
                missed += 1
        per_image[image_id] = (missed, false)
    return matrix, per_image


def class_confusion(truth, predicted, num_classes):
    """[[count]] (int64) of a classifier's labels: rows the true label id, columns the predicted one (ids from 0)."""
    matrix = np.zeros([num_classes, num_classes], np.int64)
    np.add.at(matrix, (np.ravel(truth), np.ravel(predicted)), 1)
    return matrix


def accuracies(ranked, truth):
    """{"accuracy"[, TOP_K_ACCURACY]}: the share of images whose label id (TRUTH) is first in RANKED (label ids
    by falling score, a row per image), and with more than TOP_K classes the share where it is in the first TOP_K."""
    scores = {"accuracy": float(np.mean(ranked[:, 0] == truth)) if len(truth) else 0.0}
    if ranked.shape[1] > TOP_K:
        scores[TOP_K_ACCURACY] = float(np.mean((ranked[:, :TOP_K] == truth[:, None]).any(axis=1)))
    return scores
