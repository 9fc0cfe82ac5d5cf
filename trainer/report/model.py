"""The report's model section: the last evaluation, precision-recall, the confusion matrix and the worst images."""
import json

import numpy as np

from trainer.export.formats import REFERENCE
from trainer.metrics import IOU, TOP_K, TOP_K_ACCURACY, detection_confusion, pr_curves
from trainer.report.page import cell, new_figure
from trainer.report.records import SAMPLE_IMAGES, add_jpegs, image_grid, read_records
from trainer.run_dir import Metrics, RunDir, load_labels

MIN_SCORE = 0.5      # detections counted in the confusion matrix, worst images and drawings
WORST_IMAGES = 8


def selection_line(page, metrics):
    """One line: the evaluation exported (the best by its metric) and the last, whose metrics the section shows."""
    best = metrics.best
    if best:
        page.text(f"Exported: the best evaluation by {best['metric']}, step {best['step']} ({cell(best['value'])}, "
                  f"model/{best['checkpoint']}); the metrics below are the last evaluation's, step {metrics.step}.")


def section(page, result_dir):
    """metrics.json's last evaluation; for a detector also the curves, matrix and grids of its detections."""
    page.heading("Model")
    run = RunDir(result_dir)
    if not run.metrics_json.is_file() or not run.labels_json.is_file():
        page.text(f"No evaluation yet: {run.metrics_json.name} is written after the first evaluation.", "missing")
        return
    record, labels = Metrics.load(run), load_labels(run)
    selection_line(page, record)
    metrics = record.evaluation  # the last evaluation's Model Garden metrics, by their names
    if not metrics.get("evaluated", True):
        page.text(f"No evaluation: {metrics.get('reason', 'trained without a validation split')}.", "warning")
    elif "accuracy" in metrics:  # a classifier: train's own confusion matrix of the validation split
        _classifier_metrics(page, metrics, labels)
        return
    else:
        page.text(f"Step {metrics['step']}: AP {cell(metrics['AP'])}, AP50 {cell(metrics['AP50'])}, "
                  f"AP75 {cell(metrics['AP75'])}, ARmax100 {cell(metrics['ARmax100'])}.")
        page.table(["class", "AP", "AP50", "AP75", "AR@100"],
                   [[label, *(metrics["per_class"].get(label, {}).get(key) for key in ("AP", "AP50", "AP75", "ARmax100"))]
                    for label in labels], "model-per-class")
    details = run.evaluation_details
    truth_path, detections_path = details / "groundtruth.json", details / f"{REFERENCE}_detections.json"
    if not (truth_path.is_file() and detections_path.is_file()):
        page.text(f"No detections to analyse yet: {detections_path} is written by the export stage's evaluation.",
                  "missing")
        return
    truth = json.loads(truth_path.read_text())
    detections = json.loads(detections_path.read_text())
    names = [category["name"] for category in sorted(truth["categories"], key=lambda c: c["id"])]
    ids = [category["id"] for category in sorted(truth["categories"], key=lambda c: c["id"])]
    curves = pr_curves(truth, detections)
    fig, ax = new_figure()
    for category_id, name in zip(ids, names):
        recall, precision = curves[category_id]
        if len(recall):
            ax.plot(recall, precision, label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    page.figure(fig, "model_pr", f"Precision-recall per class at IoU {IOU} (SavedModel, evaluated split)")
    matrix, per_image = detection_confusion(truth, detections, ids, MIN_SCORE)
    page.text(f"Confusion matrix at IoU {IOU}, detections scoring at least {MIN_SCORE}: rows are the true class, "
              f"columns the predicted one; 'background' is a missed box (row) or a false detection (column).")
    page.table(["true \\ predicted", *names, "background"],
               [[name, *row] for name, row in zip([*names, "background"], matrix.tolist())], "model-confusion")
    _confusion_figure(page, matrix, [*names, "background"], f"Confusion matrix at IoU {IOU}, score >= {MIN_SCORE}")
    _model_grids(page, result_dir, truth, detections, per_image, labels)


def _classifier_metrics(page, metrics, labels):
    """Accuracy, per-class accuracy and the confusion matrix that train computed on the validation split."""
    page.text(f"Step {metrics['step']}: accuracy {cell(metrics['accuracy'])}"
              + (f", top-{TOP_K} accuracy {cell(metrics[TOP_K_ACCURACY])}" if TOP_K_ACCURACY in metrics else "")
              + ".")
    page.table(["class", "accuracy", "images"],
               [[label, *(metrics["per_class"].get(label, {}).get(key) for key in ("accuracy", "images"))]
                for label in labels], "model-per-class")
    matrix = np.array(metrics["confusion_matrix"])
    page.text("Confusion matrix of the validation split: rows are the true class, columns the predicted one.")
    page.table(["true \\ predicted", *labels], [[name, *row] for name, row in zip(labels, matrix.tolist())],
               "model-confusion")
    _confusion_figure(page, matrix, labels, "Confusion matrix of the validation split")


def _confusion_figure(page, matrix, names, caption):
    fig, ax = new_figure()
    fig.set_size_inches(1.2 + 0.6 * len(names), 1 + 0.5 * len(names))
    ax.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        ax.text(column, row, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    page.figure(fig, "model_confusion", caption)


def _model_grids(page, result_dir, truth, detections, per_image, labels):
    """Validation images with ground truth (green) and predictions (red); then the worst ones."""
    records = {}
    for split in ("val", "train"):  # the export evaluates the train split when there is no val split
        records.update({record["id"]: record for record in read_records(result_dir, split)
                        if record["id"] in per_image and record["id"] not in records})
    boxes = {image_id: ([], []) for image_id in per_image}
    for annotation in truth["annotations"]:
        boxes[annotation["image_id"]][0].append((*annotation["bbox"], annotation["category_id"]))
    for detection in detections:
        if detection["score"] >= MIN_SCORE and detection["image_id"] in boxes:
            boxes[detection["image_id"]][1].append((*detection["bbox"], detection["category_id"], detection["score"]))
    shown = [image_id for image_id in sorted(per_image) if image_id in records][:SAMPLE_IMAGES]
    worst = sorted((i for i in per_image if sum(per_image[i]) and i in records), key=lambda i: -sum(per_image[i]))
    worst = worst[:WORST_IMAGES]
    add_jpegs(result_dir, records, set(shown) | set(worst))
    page.picture(image_grid([(records[i], *boxes[i]) for i in shown], labels), "model_samples",
                 f"Evaluated images: ground truth in green, predictions scoring >= {MIN_SCORE} in red")
    if not worst:
        page.text("No image has a missed or false box at this score.")
        return
    page.table(["image", "missed boxes", "false detections"],
               [[records[i]["filename"], *per_image[i]] for i in worst], "model-worst")
    page.picture(image_grid([(records[i], *boxes[i]) for i in worst], labels), "model_worst",
                 "The worst images (most missed + false boxes): check their labels first")
