"""The report's dataset section: counts per split and class, box statistics, sample images, skipped and repaired."""
import json

import numpy as np

from trainer import tasks
from trainer.report.page import new_figure
from trainer.report.records import SAMPLE_IMAGES, image_grid, read_records
from trainer.run_dir import Report, RunDir


def section(page, result_dir):
    """Counts from data/report.json and the records, their statistics, a sample grid and the issues."""
    page.heading("Dataset")
    run = RunDir(result_dir)
    if not run.report_json.is_file():
        page.text(f"No dataset yet: {run.report_json} is missing (the prepare stage writes it).", "missing")
        return
    report = Report.load(run)
    labels = report.labels
    records = {split: read_records(result_dir, split, lambda index, _: split == "train" and index < SAMPLE_IMAGES)
               for split in report.splits}
    if not tasks.get(report.task).BOXES:
        _classes_section(page, report, records)
        return
    rows = []
    for split, counts in report.splits.items():
        rows.append([split, counts["images"], counts["boxes"], counts["negatives"],
                     *(_images_with(records[split], label_id) for label_id in range(1, len(labels) + 1))])
    page.table(["split", "images", "boxes", "negatives", *(f"images with {label}" for label in labels)], rows,
               "dataset-counts")
    page.table(["split", *(f"{label} boxes" for label in labels)],
               [[split, *(counts["per_class"].get(label, 0) for label in labels)]
                for split, counts in report.splits.items()], "dataset-boxes")
    _class_bars(page, report, "boxes")
    everything = [record for split in records.values() for record in split]
    if everything:
        _box_statistics(page, result_dir, everything)
        page.picture(image_grid([(record, record["boxes"], []) for record in records.get("train", [])[:SAMPLE_IMAGES]],
                           labels), "dataset_samples", "Training images with their boxes")
    _issues(page, report)


def _classes_section(page, report, records):
    """The dataset of a classifier: images per class and split, a grid of labelled training images."""
    labels = report.labels
    page.table(["split", "images", *(f"{label} images" for label in labels)],
               [[split, counts["images"], *(counts["per_class"].get(label, 0) for label in labels)]
                for split, counts in report.splits.items()], "dataset-counts")
    _class_bars(page, report, "images")
    if records.get("train"):
        page.picture(image_grid([(record, record["boxes"], []) for record in records["train"][:SAMPLE_IMAGES]], labels),
                     "dataset_samples", "Training images with their labels")
    _issues(page, report)


def _class_bars(page, report, counted):
    """A bar chart of report.json's per-class counts (COUNTED: boxes, or a classifier's images) per split."""
    labels = report.labels
    fig, ax = new_figure()
    width = 0.8 / max(len(report.splits), 1)
    for index, (split, counts) in enumerate(report.splits.items()):
        ax.bar(np.arange(len(labels)) + index * width, [counts["per_class"].get(label, 0) for label in labels],
               width, label=f"{split} {counted}")
    ax.set_xticks(np.arange(len(labels)) + width * (len(report.splits) - 1) / 2, labels, rotation=30, ha="right")
    ax.set_ylabel(counted)
    ax.legend()
    page.figure(fig, "dataset_classes", f"{counted.capitalize()} per class and split")


def _issues(page, report):
    for kind, items in (("skipped", report.skipped), ("repaired", report.repaired)):
        page.text(f"{len(items)} {kind} image(s)" + (":" if items else "."))
        if items:
            page.table(["image", "reason"], [[item["image"], item["reason"]] for item in items], f"dataset-{kind}")
    for warning in report.warnings:
        page.text(f"warning: {warning if isinstance(warning, str) else json.dumps(warning)}", "warning")


def _images_with(records, label_id):
    return sum(1 for record in records if any(box[4] == label_id for box in record["boxes"]))


def _box_statistics(page, result_dir, records):
    """Boxes per image, and box sizes and aspect ratios as the model sees them (after its resize)."""
    size = _input_size(result_dir)
    counts = [len(record["boxes"]) for record in records]
    fig, ax = new_figure()
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
    fig = new_figure()[0]
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

    path = RunDir(result_dir).params
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text())["task"]["model"]["input_size"][:2]
