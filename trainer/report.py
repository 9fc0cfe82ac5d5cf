"""Report stage: RESULT_DIR/report.html, a page about the dataset, the training and the model's mistakes.

People would rather look at their data and at what the model gets wrong than read
JSON. The page and its PNGs (RESULT_DIR/report/) use relative links only and no
external resources, so it reads straight from a bucket. Every section comes from
files earlier stages wrote: data/report.json and the TFRecords, the TensorBoard
events, metrics.json, model_export/export.json and evaluation.json, and the
SavedModel's detections on the evaluated split (model_export/evaluation/). A
section whose files are not there yet says so. Written at the end of `run` and
after each evaluation while training.
"""
import contextlib
import html
import io
import json
from pathlib import Path

import numpy as np

from trainer import console

IOU = 0.5            # matching threshold of the PR curves, confusion matrix and worst images
MIN_SCORE = 0.5      # detections counted in the confusion matrix, worst images and drawings
SAMPLE_IMAGES = 12   # images in each grid
WORST_IMAGES = 8
TILE = 192           # grid tile side in pixels
FIGSIZE = (8, 3.6)
GT_COLOUR, PREDICTION_COLOUR = (0, 200, 0), (230, 30, 30)
PNG_DIR = "report"


def write_report(result_dir, best_effort=False):
    """Write RESULT_DIR/report.html and its PNGs in RESULT_DIR/report/; return the page's path.

    best_effort (while training): a failure is a warning, not the end of the training.
    """
    import matplotlib

    if best_effort:
        try:
            return write_report(result_dir)
        except Exception as err:  # the report must never stop a training run
            console.warn_failure("report: could not refresh report.html", err)
            return None
    result_dir = Path(result_dir)
    png_dir = result_dir / PNG_DIR
    png_dir.mkdir(exist_ok=True)
    page = _Page(png_dir)
    with matplotlib.rc_context({"text.parse_math": False}):  # labels are names: `$`, `$$` are not TeX
        _dataset_section(page, result_dir)
        _training_section(page, result_dir)
        _model_section(page, result_dir)
        _exports_section(page, result_dir)
    path = result_dir / "report.html"
    path.write_text(page.html(f"Training report: {result_dir.name}"))
    return path


def is_up_to_date(result_dir):
    """Whether report.html is newer than everything it is drawn from (a rerun of a complete run leaves it)."""
    result_dir = Path(result_dir)
    page = result_dir / "report.html"
    if not page.is_file():
        return False
    sources = [result_dir / "data" / "report.json", result_dir / "metrics.json",
               *(result_dir / "model").rglob("events.out.tfevents.*"), *(result_dir / "model_export").glob("*.json"),
               *(result_dir / "model_export" / "evaluation").glob("*.json")]
    newest = max((path.stat().st_mtime_ns for path in sources if path.is_file()), default=0)
    return page.stat().st_mtime_ns >= newest


class _Page:
    """HTML parts in order, and the PNGs they link to."""

    def __init__(self, png_dir):
        self.png_dir = png_dir
        self.parts = []

    def heading(self, text):
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text, css_class=""):
        self.parts.append(f'<p class="{css_class}">{html.escape(text)}</p>')

    def table(self, header, rows, name):
        cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
        self.parts.append(f'<table id="{name}"><tr>{cells}</tr>{body}</table>')

    def figure(self, fig, name, caption):
        fig.savefig(self.png_dir / f"{name}.png", dpi=96, bbox_inches="tight")
        self._image(name, caption)

    def picture(self, image, name, caption):
        image.save(self.png_dir / f"{name}.png")
        self._image(name, caption)

    def _image(self, name, caption):
        self.parts.append(f'<figure><img src="{PNG_DIR}/{name}.png" alt="{html.escape(caption)}">'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def html(self, title):
        style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em;color:#222}"
                 "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
                 "text-align:left}th{background:#eee}img{max-width:100%}figure{margin:1em 0}"
                 ".missing{color:#a60}.warning{color:#b00;font-weight:bold}")
        return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(self.parts)
                + "\n</body></html>\n")


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3f}"
    return "n/a" if value is None else str(value)


def _figure():
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed (Agg)

    fig = Figure(figsize=FIGSIZE)
    return fig, fig.subplots()


# --- dataset -----------------------------------------------------------------------------------------------------


def _dataset_section(page, result_dir):
    page.heading("Dataset")
    report_path = result_dir / "data" / "report.json"
    if not report_path.is_file():
        page.text(f"No dataset yet: {report_path} is missing (the prepare stage writes it).", "missing")
        return
    report = json.loads(report_path.read_text())
    labels = report["labels"]
    records = {split: _read_records(result_dir, split, lambda index, _: split == "train" and index < SAMPLE_IMAGES)
               for split in report["splits"]}
    if report.get("task") == "classification":
        _classes_section(page, report, records)
        return
    rows = []
    for split, counts in report["splits"].items():
        rows.append([split, counts["images"], counts["boxes"], counts["negatives"],
                     *(_images_with(records[split], label_id) for label_id in range(1, len(labels) + 1))])
    page.table(["split", "images", "boxes", "negatives", *(f"images with {label}" for label in labels)], rows,
               "dataset-counts")
    page.table(["split", *(f"{label} boxes" for label in labels)],
               [[split, *(counts["per_class"].get(label, 0) for label in labels)]
                for split, counts in report["splits"].items()], "dataset-boxes")
    _class_bars(page, report, "boxes")
    everything = [record for split in records.values() for record in split]
    if everything:
        _box_statistics(page, result_dir, everything)
        page.picture(_grid([(record, record["boxes"], []) for record in records.get("train", [])[:SAMPLE_IMAGES]],
                           labels), "dataset_samples", "Training images with their boxes")
    _issues(page, report)


def _classes_section(page, report, records):
    """The dataset of a classifier: images per class and split, a grid of labelled training images."""
    labels = report["labels"]
    page.table(["split", "images", *(f"{label} images" for label in labels)],
               [[split, counts["images"], *(counts["per_class"].get(label, 0) for label in labels)]
                for split, counts in report["splits"].items()], "dataset-counts")
    _class_bars(page, report, "images")
    if records.get("train"):
        page.picture(_grid([(record, record["boxes"], []) for record in records["train"][:SAMPLE_IMAGES]], labels),
                     "dataset_samples", "Training images with their labels")
    _issues(page, report)


def _class_bars(page, report, counted):
    """A bar chart of report.json's per-class counts (COUNTED: boxes, or a classifier's images) per split."""
    labels = report["labels"]
    fig, ax = _figure()
    width = 0.8 / max(len(report["splits"]), 1)
    for index, (split, counts) in enumerate(report["splits"].items()):
        ax.bar(np.arange(len(labels)) + index * width, [counts["per_class"].get(label, 0) for label in labels],
               width, label=f"{split} {counted}")
    ax.set_xticks(np.arange(len(labels)) + width * (len(report["splits"]) - 1) / 2, labels, rotation=30, ha="right")
    ax.set_ylabel(counted)
    ax.legend()
    page.figure(fig, "dataset_classes", f"{counted.capitalize()} per class and split")


def _issues(page, report):
    for kind in ("skipped", "repaired"):
        items = report.get(kind, [])
        page.text(f"{len(items)} {kind} image(s)" + (":" if items else "."))
        if items:
            page.table(["image", "reason"], [[item["image"], item["reason"]] for item in items], f"dataset-{kind}")
    for warning in report.get("warnings", []):
        page.text(f"warning: {warning if isinstance(warning, str) else json.dumps(warning)}", "warning")


def _images_with(records, label_id):
    return sum(1 for record in records if any(box[4] == label_id for box in record["boxes"]))


def _box_statistics(page, result_dir, records):
    """Boxes per image, and box sizes and aspect ratios as the model sees them (after its resize)."""
    size = _input_size(result_dir)
    counts = [len(record["boxes"]) for record in records]
    fig, ax = _figure()
    ax.hist(counts, bins=np.arange(max(counts) + 2) - 0.5)
    ax.set_xlabel("boxes per image")
    ax.set_ylabel("images")
    page.figure(fig, "dataset_boxes_per_image", "Boxes per image (all splits)")
    sides, ratios = [], []
    for record in records:
        # Model Garden scales each image to fit the input size, keeping its aspect ratio.
        scale = min(size[0] / record["height"], size[1] / record["width"]) if size else 1.0
        for x, y, w, h, _ in record["boxes"]:
            sides.append((w * scale, h * scale))
            ratios.append(w / h if h else np.nan)
    if not sides:
        return
    sides = np.array(sides)
    fig = _figure()[0]
    fig.clear()
    left, right = fig.subplots(1, 2)
    left.scatter(sides[:, 0], sides[:, 1], s=6, alpha=0.5)
    left.set_xlabel("box width (px)")
    left.set_ylabel("box height (px)")
    where = f"at the model's {size[1]}x{size[0]} input" if size else "in image pixels"
    left.set_title(where, fontsize=9)
    right.hist(np.log2(np.array(ratios)[np.isfinite(ratios)]), bins=24, range=(-3, 3))
    right.set_xlabel("log2(width / height)")
    right.set_ylabel("boxes")
    page.figure(fig, "dataset_box_sizes", f"Box sizes {where}, and aspect ratios")
    small = int(np.sum(np.minimum(sides[:, 0], sides[:, 1]) < 8))
    page.text(f"{len(sides)} boxes; median side {np.median(sides):.0f} px {where}; {small} box(es) under 8 px.")


def _input_size(result_dir):
    import yaml

    path = result_dir / "params.yaml"
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text())["task"]["model"]["input_size"][:2]


def _read_records(result_dir, split, keep_jpeg=lambda index, record: False):
    """[{"id", "filename", "width", "height", "jpeg", "boxes": [(x, y, w, h, label_id) in pixels]}] of a split.

    "jpeg" is None but where KEEP_JPEG(index in the split, record) says to keep it: the
    report draws a few dozen images, and holding every record's JPEG (this runs inside
    the training process after each evaluation) grew its memory with the dataset.
    A classifier's record has one "box", the whole image, with its label's id + 1 (the
    1-based ids the drawings use), so its label is drawn as a frame.
    """
    import tensorflow as tf

    records = []
    for path in sorted((result_dir / "data").glob(f"{split}-*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(path)):
            feature = tf.train.Example.FromString(raw.numpy()).features.feature
            width = feature["image/width"].int64_list.value[0]
            height = feature["image/height"].int64_list.value[0]
            corners = [feature[f"image/object/bbox/{key}"].float_list.value for key in ("xmin", "ymin", "xmax", "ymax")]
            boxes = [(x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height, label)
                     for x1, y1, x2, y2, label in zip(*corners, feature["image/object/class/label"].int64_list.value)]
            boxes += [(0, 0, width, height, label + 1) for label in feature["image/class/label"].int64_list.value]
            record = {"id": int(feature["image/source_id"].bytes_list.value[0]),
                      "filename": feature["image/filename"].bytes_list.value[0].decode(),
                      "width": width, "height": height, "boxes": boxes, "jpeg": None}
            if keep_jpeg(len(records), record):
                record["jpeg"] = feature["image/encoded"].bytes_list.value[0]
            records.append(record)
    return records


def _add_jpegs(result_dir, records, ids):
    """Read the splits again for the JPEGs of IDS (the images drawn) into RECORDS ({id: record})."""
    for split in ("val", "train"):
        for record in _read_records(result_dir, split, lambda _, record: record["id"] in ids):
            if record["jpeg"] is not None:
                records[record["id"]]["jpeg"] = record["jpeg"]


def _grid(items, labels):
    """One PNG of tiles: each item (record, ground-truth boxes, predicted boxes) drawn on its image."""
    from PIL import Image, ImageDraw

    columns = 4
    rows = max((len(items) + columns - 1) // columns, 1)
    grid = Image.new("RGB", (columns * TILE, rows * TILE), "white")
    for index, (record, truth, predicted) in enumerate(items):
        image = Image.open(io.BytesIO(record["jpeg"])).convert("RGB")
        scale = TILE / max(image.size)
        image = image.resize((max(int(image.width * scale), 1), max(int(image.height * scale), 1)))
        draw = ImageDraw.Draw(image)
        for boxes, colour in ((truth, GT_COLOUR), (predicted, PREDICTION_COLOUR)):
            for x, y, w, h, label_id, *score in boxes:
                draw.rectangle([x * scale, y * scale, (x + w) * scale, (y + h) * scale], outline=colour, width=2)
                name = labels[label_id - 1] if 0 < label_id <= len(labels) else str(label_id)
                draw.text((x * scale + 2, y * scale + 1), name + (f" {score[0]:.2f}" if score else ""), fill=colour)
        grid.paste(image, ((index % columns) * TILE, (index // columns) * TILE))
    return grid


# --- training ----------------------------------------------------------------------------------------------------


def _training_section(page, result_dir):
    page.heading("Training")
    train = _scalars(result_dir / "model" / "train")
    validation = _scalars(result_dir / "model" / "validation")
    if not train:
        page.text(f"No training events yet in {result_dir / 'model' / 'train'}.", "missing")
        return
    fig = _figure()[0]
    fig.clear()
    left, right = fig.subplots(1, 2)
    for tag in ("total_loss", "cls_loss", "box_loss", "training_loss"):  # detectors' losses; a classifier's
        if tag in train:
            left.plot(*zip(*train[tag]), label=tag)
    for tag in ("total_loss", "validation_loss"):
        if tag in validation:
            left.plot(*zip(*validation[tag]), "o-", label=f"validation {tag.replace('validation_', '')}")
    left.set_xlabel("step")
    left.set_yscale("log")
    left.legend(fontsize=7)
    if "learning_rate" in train:
        right.plot(*zip(*train["learning_rate"]))
    right.set_xlabel("step")
    right.set_ylabel("learning rate")
    page.figure(fig, "training_loss", "Loss (log scale) and learning rate over steps")
    tags = [tag for tag in ("AP", "AP50", "accuracy", "top_5_accuracy") if tag in validation]
    if not tags:
        page.text("No evaluation yet (or training runs without evaluation).", "missing")
        return
    fig, ax = _figure()
    for tag in tags:
        ax.plot(*zip(*validation[tag]), "o-", label=tag)
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    ax.legend()
    page.figure(fig, "training_ap", f"{' and '.join(tags)} on the validation split at each evaluation")


def _scalars(events_dir):
    """{tag: [(step, value)]} of the scalar summaries in EVENTS_DIR's event files."""
    import tensorflow as tf

    values = {}
    for path in sorted(events_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                    number = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = value.simple_value
                else:
                    continue  # images and histograms
                values.setdefault(value.tag, []).append((event.step, number))
    return {tag: sorted(dict(points).items()) for tag, points in values.items()}


# --- model -------------------------------------------------------------------------------------------------------


def _selection_line(page, metrics):
    """One line: the evaluation exported (the best by its metric) and the last, whose metrics the section shows."""
    best = metrics.get("best")
    if best:
        page.text(f"Exported: the best evaluation by {best['metric']}, step {best['step']} ({_cell(best['value'])}, "
                  f"model/{best['checkpoint']}); the metrics below are the last evaluation's, step {metrics['step']}.")


def _model_section(page, result_dir):
    page.heading("Model")
    metrics_path = result_dir / "metrics.json"
    labels_path = result_dir / "data" / "labels.json"
    if not metrics_path.is_file() or not labels_path.is_file():
        page.text("No evaluation yet: metrics.json is written after the first evaluation.", "missing")
        return
    metrics = json.loads(metrics_path.read_text())
    labels = json.loads(labels_path.read_text())
    _selection_line(page, metrics)
    if not metrics.get("evaluated", True):
        page.text(f"No evaluation: {metrics.get('reason', 'trained without a validation split')}.", "warning")
    elif "accuracy" in metrics:  # a classifier: train's own confusion matrix of the validation split
        _classifier_metrics(page, metrics, labels)
        return
    else:
        page.text(f"Step {metrics['step']}: AP {_cell(metrics['AP'])}, AP50 {_cell(metrics['AP50'])}, "
                  f"AP75 {_cell(metrics['AP75'])}, ARmax100 {_cell(metrics['ARmax100'])}.")
        page.table(["class", "AP", "AP50", "AP75", "AR@100"],
                   [[label, *(metrics["per_class"].get(label, {}).get(key) for key in ("AP", "AP50", "AP75", "ARmax100"))]
                    for label in labels], "model-per-class")
    details = result_dir / "model_export" / "evaluation"
    truth_path, detections_path = details / "groundtruth.json", details / "saved_model_detections.json"
    if not (truth_path.is_file() and detections_path.is_file()):
        page.text(f"No detections to analyse yet: {detections_path} is written by the export stage's evaluation.",
                  "missing")
        return
    truth = json.loads(truth_path.read_text())
    detections = json.loads(detections_path.read_text())
    names = [category["name"] for category in sorted(truth["categories"], key=lambda c: c["id"])]
    ids = [category["id"] for category in sorted(truth["categories"], key=lambda c: c["id"])]
    curves = pr_curves(truth, detections)
    fig, ax = _figure()
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
    matrix, per_image = confusion(truth, detections, ids)
    page.text(f"Confusion matrix at IoU {IOU}, detections scoring at least {MIN_SCORE}: rows are the true class, "
              f"columns the predicted one; 'background' is a missed box (row) or a false detection (column).")
    page.table(["true \\ predicted", *names, "background"],
               [[name, *row] for name, row in zip([*names, "background"], matrix.tolist())], "model-confusion")
    _confusion_figure(page, matrix, [*names, "background"], f"Confusion matrix at IoU {IOU}, score >= {MIN_SCORE}")
    _model_grids(page, result_dir, truth, detections, per_image, labels)


def _classifier_metrics(page, metrics, labels):
    """Accuracy, per-class accuracy and the confusion matrix that train computed on the validation split."""
    page.text(f"Step {metrics['step']}: accuracy {_cell(metrics['accuracy'])}"
              + (f", top-5 accuracy {_cell(metrics['top_5_accuracy'])}" if "top_5_accuracy" in metrics else "")
              + ".")
    page.table(["class", "accuracy", "images"],
               [[label, *(metrics["per_class"].get(label, {}).get(key) for key in ("accuracy", "images"))]
                for label in labels], "model-per-class")
    matrix = np.array(metrics["confusion_matrix"])
    page.text("Confusion matrix of the validation split: rows are the true class, columns the predicted one.")
    page.table(["true \\ predicted", *labels], [[name, *row] for name, row in zip(labels, matrix.tolist())],
               "model-confusion")
    _confusion_figure(page, matrix, labels, "Confusion matrix of the validation split")


def pr_curves(truth, detections):
    """{category id: (recall points, interpolated precision)} at IoU 0.5, from pycocotools' COCOeval."""
    if not detections:  # pycocotools cannot load an empty result list
        return {category["id"]: (np.array([]), np.array([])) for category in truth["categories"]}
    evaluation = _cocoeval(truth, detections)
    recall = evaluation.params.recThrs
    iou = int(np.argmin(np.abs(evaluation.params.iouThrs - IOU)))
    curves = {}
    for index, category_id in enumerate(evaluation.params.catIds):
        precision = evaluation.eval["precision"][iou, :, index, 0, -1]  # area "all", most detections
        valid = precision > -1
        # COCO fills precision with 0 beyond the highest recall reached; the curve stops there.
        reached = valid & (np.maximum.accumulate(precision[::-1])[::-1] > 0)
        curves[category_id] = (recall[reached], precision[reached])
    return curves


def _cocoeval(truth, detections):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground = COCO()
        ground.dataset = truth
        ground.createIndex()
        found = ground.loadRes(detections)
        evaluation = COCOeval(ground, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
    return evaluation


def confusion(truth, detections, category_ids):
    """(matrix, {image id: (missed, false)}) at IoU 0.5 for detections scoring >= MIN_SCORE.

    Rows: true classes then background; columns: predicted classes then background.
    Each image's detections, best score first, take the unmatched ground-truth box of
    any class they overlap most (IoU >= 0.5): same class on the diagonal, another class
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
        if detection["score"] >= MIN_SCORE and detection["image_id"] in found:
            found[detection["image_id"]].append(detection)
    per_image = {}
    for image_id, annotations in boxes.items():
        taken = [False] * len(annotations)
        missed = false = 0
        for detection in sorted(found[image_id], key=lambda d: -d["score"]):
            overlaps = [_iou(detection["bbox"], a["bbox"]) if not taken[i] else -1 for i, a in enumerate(annotations)]
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


def _iou(a, b):
    """IoU of two COCO [x, y, w, h] boxes."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(width, 0) * max(height, 0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _confusion_figure(page, matrix, names, caption):
    fig, ax = _figure()
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
        records.update({record["id"]: record for record in _read_records(result_dir, split)
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
    _add_jpegs(result_dir, records, set(shown) | set(worst))
    page.picture(_grid([(records[i], *boxes[i]) for i in shown], labels), "model_samples",
                 f"Evaluated images: ground truth in green, predictions scoring >= {MIN_SCORE} in red")
    if not worst:
        page.text("No image has a missed or false box at this score.")
        return
    page.table(["image", "missed boxes", "false detections"],
               [[records[i]["filename"], *per_image[i]] for i in worst], "model-worst")
    page.picture(_grid([(records[i], *boxes[i]) for i in worst], labels), "model_worst",
                 "The worst images (most missed + false boxes): check their labels first")


# --- exports -----------------------------------------------------------------------------------------------------


def _exports_section(page, result_dir):
    page.heading("Exports")
    manifest_path = result_dir / "model_export" / "export.json"
    if not manifest_path.is_file():
        page.text("No exports yet: the export stage writes model_export/export.json.", "missing")
        return
    manifest = json.loads(manifest_path.read_text())
    page.text(f"Exported from {manifest.get('checkpoint')}.")
    page.table(["format", "path", "size (MB)", "status"],
               [[name, entry.get("path", ""), entry["bytes"] / 1e6 if "bytes" in entry else None,
                 entry.get("error") or entry.get("unsupported") or "ok"]
                for name, entry in manifest["results"].items()], "exports")
    evaluation_path = result_dir / "model_export" / "evaluation.json"
    if evaluation_path.is_file():
        evaluation = json.loads(evaluation_path.read_text())
        classifier = any("accuracy" in entry for entry in evaluation.values())
        scores = ("accuracy", "top_5_accuracy", "delta_accuracy") if classifier else ("AP", "AP50", "delta_AP")
        page.table(["format", *(key.replace("_", " ") for key in scores), "latency (ms)", "split", "images", "note"],
                   [[name, *(entry.get(key) for key in (*scores, "latency_ms", "split", "images")),
                     entry.get("not_evaluated") or entry.get("unsupported") or entry.get("error") or ""]
                    for name, entry in evaluation.items()], "export-evaluation")


def add_arguments(parser):
    parser.add_argument("--result-dir", required=True,
                        help="the run folder; writes RESULT_DIR/report.html and the PNGs in RESULT_DIR/report/")


def main(args):
    from trainer.errors import UserError

    if not Path(args.result_dir).is_dir():
        raise UserError(f"{args.result_dir} is not a folder: give the RESULT_DIR of a run")
    console.say(f"report: {write_report(args.result_dir)}")
    return 0
