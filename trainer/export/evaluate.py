"""Export evaluation: every format run in its own runtime on the whole validation split, scored with COCO AP.

Each format is fed as its users feed it (see each format module's `run`), and scored by
pycocotools against the ground truth train's evaluation uses: the split's records, image
ids from `image/source_id`, label ids from data/labels.json. Writes
model_export/evaluation.json ({format: {"AP", "AP50", "delta_AP", "bytes", "latency_ms"}
or {"unsupported": reason} or {"bytes", "not_evaluated": reason}}) and, in
model_export/evaluation/, groundtruth.json and FORMAT_detections.json (COCO results).
A classifier is scored by accuracy (top-1, and top-5 with more than 5 classes) against
the records' labels instead: {"accuracy", ["top_5_accuracy",] "delta_accuracy", ...}, and
FORMAT_predictions.json holds each image's top label id and score.
"""
import io
import json
from pathlib import Path

import numpy as np

from trainer import console
from trainer.export.common import NotEvaluated, record_images
from trainer.export.formats import REFERENCE
from trainer.metrics import TOP_K, TOP_K_ACCURACY, accuracies, coco_ap
from trainer.run_dir import RunDir, load_labels, write_evaluations



def split_to_evaluate(result_dir):
    """'val', or 'train' (said loudly) when prepare wrote no validation records."""
    if RunDir(result_dir).records("val"):
        return "val"
    console.say("export: WARNING: no validation split (data/val-*.tfrecord): the exports are evaluated on the TRAINING "
                "images, so their AP says how well they fit, not how well they generalise", error=True)
    return "train"


class SplitImages:
    """A split's images as RGB uint8 arrays, decoded one at a time on each pass over them.

    The whole split decoded at once held width x height x 3 bytes per image for as
    long as the export evaluated; each format's run goes over the images once.
    """

    def __init__(self, result_dir, split, count):
        self.result_dir, self.split, self.count = result_dir, split, count

    def __len__(self):
        return self.count

    def __iter__(self):
        return record_images(self.result_dir, self.split)


def load_split(result_dir, split, task="detection"):
    """(SplitImages, ground truth) of data/SPLIT-*.tfrecord: a COCO ground truth dict, or for
    a classifier {"labels": label names, "images": [{"id", "file_name", "label"}]} (label ids from 0)."""
    import tensorflow as tf
    from PIL import Image

    run = RunDir(result_dir)
    labels = load_labels(run)
    files = [str(p) for p in run.records(split)]
    if task == "classification":
        features = {"image/source_id": tf.io.FixedLenFeature([], tf.string),
                    "image/filename": tf.io.FixedLenFeature([], tf.string),
                    "image/class/label": tf.io.FixedLenFeature([], tf.int64)}
        truth = {"labels": labels, "images": []}
        for record in tf.data.TFRecordDataset(files):
            value = {key: v.numpy() for key, v in tf.io.parse_single_example(record, features).items()}
            truth["images"].append({"id": int(value["image/source_id"]), "file_name": value["image/filename"].decode(),
                                    "label": int(value["image/class/label"])})
        return SplitImages(result_dir, split, len(truth["images"])), truth
    features = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                "image/source_id": tf.io.FixedLenFeature([], tf.string),
                "image/filename": tf.io.FixedLenFeature([], tf.string),
                "image/object/class/label": tf.io.VarLenFeature(tf.int64),
                "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
                **{f"image/object/bbox/{key}": tf.io.VarLenFeature(tf.float32)
                   for key in ("xmin", "ymin", "xmax", "ymax")}}
    coco = {"images": [], "annotations": [],
            "categories": [{"id": index, "name": name} for index, name in enumerate(labels, 1)]}
    for record in tf.data.TFRecordDataset(files):
        example = tf.io.parse_single_example(record, features)
        value = {key: (tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v).numpy()
                 for key, v in example.items()}
        with Image.open(io.BytesIO(value["image/encoded"])) as image:  # the header: the size as decoded
            width, height = image.size
        image_id = int(value["image/source_id"])
        coco["images"].append({"id": image_id, "file_name": value["image/filename"].decode(),
                               "width": width, "height": height})
        boxes = zip(value["image/object/bbox/xmin"], value["image/object/bbox/ymin"], value["image/object/bbox/xmax"],
                    value["image/object/bbox/ymax"], value["image/object/class/label"], value["image/object/is_crowd"])
        for xmin, ymin, xmax, ymax, label, crowd in boxes:
            box = [float(xmin * width), float(ymin * height), float((xmax - xmin) * width),
                   float((ymax - ymin) * height)]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": int(label), "bbox": box, "area": box[2] * box[3],
                                        "iscrowd": int(crowd)})
    return SplitImages(result_dir, split, len(coco["images"])), coco


def coco_results(found, groundtruth):
    """Detections (boxes ymin, xmin, ymax, xmax in 0..1) as a COCO results list in pixels."""
    results = []
    for image, detections in zip(groundtruth["images"], found):
        scale = np.array([image["height"], image["width"]] * 2, np.float64)
        for box, score, label in zip(detections["boxes"], detections["scores"], detections["classes"]):
            ymin, xmin, ymax, xmax = (np.asarray(box, np.float64) * scale).tolist()
            results.append({"image_id": image["id"], "category_id": int(label),
                            "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "score": float(score)})
    return results


def evaluate(job, outputs, formats, images, groundtruth, split):
    """Run each of OUTPUTS ({name: {"path", "bytes"}}) through FORMATS[name].run on IMAGES; {name: evaluation}.

    IMAGES: an iterable decoded afresh on each pass (SplitImages), with len().

    The entries hold AP, AP50, bytes, latency_ms (median single-image time on this CPU),
    the split and image count; or not_evaluated with the reason when the runtime is absent.
    """
    details = RunDir(job.result_dir).evaluation_details
    details.mkdir(parents=True, exist_ok=True)
    (details / "groundtruth.json").write_text(json.dumps(groundtruth))
    evaluations = {}
    console.say(f"export: evaluating {', '.join(outputs)} on {len(images)} {split} images ...")
    for name, output in outputs.items():
        try:
            found, seconds = formats[name].run(job, Path(output["path"]), images)
        except NotEvaluated as reason:
            evaluations[name] = {"bytes": output["bytes"], "not_evaluated": str(reason)}
            console.say(f"export: {name}: not evaluated: {reason}", error=True)
            continue
        except Exception as err:  # a broken runtime: the export stays, the others are still evaluated
            evaluations[name] = {"bytes": output["bytes"],
                                 "evaluation_failed": console.warn_failure(f"export: {name}: evaluation", err)}
            continue
        if job.task == "classification":
            scores = _classifier_scores(found, groundtruth, details / f"{name}_predictions.json")
        else:
            results = coco_results(found, groundtruth)
            (details / f"{name}_detections.json").write_text(json.dumps(results))
            ap, ap50 = coco_ap(groundtruth, results)
            scores = {"AP": round(ap, 4), "AP50": round(ap50, 4)}
        # The first call of a runtime also traces or allocates: the median ignores it.
        evaluations[name] = {**scores, "bytes": output["bytes"],
                             "latency_ms": round(float(np.median(seconds)) * 1000, 2) if seconds else None,
                             "split": split, "images": len(images)}
    return evaluations


def _classifier_scores(found, groundtruth, predictions_path):
    """{"accuracy"[, "top_5_accuracy"]} of a classifier's probabilities against the records' labels; each
    image's top label and score go to PREDICTIONS_PATH."""
    probabilities = np.array([output["probs"] for output in found]).reshape(len(found), -1)
    truth = np.array([image["label"] for image in groundtruth["images"]])
    ranked = np.argsort(-probabilities, axis=1)
    predictions_path.write_text(json.dumps([
        {"image_id": image["id"], "label_id": int(row[0]), "score": float(probs[row[0]])}
        for image, row, probs in zip(groundtruth["images"], ranked, probabilities)]))
    return {key: round(value, 4) for key, value in accuracies(ranked, truth).items()}


def write_evaluation(job, evaluations):
    """model_export/evaluation.json with delta_AP against the SavedModel, and the table printed."""
    score = "accuracy" if job.task == "classification" else "AP"
    reference = evaluations.get(REFERENCE, {}).get(score)
    table = {}
    for name, entry in evaluations.items():
        entry = dict(entry)
        if score in entry:
            entry[f"delta_{score}"] = round(entry[score] - reference, 4) if reference is not None else None
            keys = ("accuracy", TOP_K_ACCURACY) if score == "accuracy" else ("AP", "AP50")
            entry = {key: entry[key] for key in (*keys, f"delta_{score}", "bytes", "latency_ms", "split", "images")
                     if key in entry}
        table[name] = entry
    write_evaluations(RunDir(job.result_dir), table)
    console.say(format_table(table))
    return table


def format_table(table):
    classifier = any("accuracy" in entry for entry in table.values())
    first, second, delta = ("accuracy", TOP_K_ACCURACY, "delta_accuracy") if classifier else (
        "AP", "AP50", "delta_AP")
    titles = ("accuracy", f"top-{TOP_K}") if classifier else ("AP", "AP50")
    rows = [f"{'format':<13} {'size':>9} {titles[0]:>8} {titles[1]:>7} {delta:>14} {'latency':>10}"]
    for name, entry in table.items():
        if first in entry:
            latency = f"{entry['latency_ms']:.1f} ms" if entry["latency_ms"] is not None else "n/a"
            other = f"{entry[second]:>7.3f}" if second in entry else f"{'-':>7}"
            change = f"{entry[delta]:>+14.3f}" if entry[delta] is not None else f"{'n/a':>14}"
            rows.append(f"{name:<13} {entry['bytes'] / 1e6:>7.2f}MB {entry[first]:>8.3f} {other} {change} "
                        f"{latency:>10}")
        else:
            kind = next(key for key in ("unsupported", "not_evaluated", "evaluation_failed", "error") if key in entry)
            reason = entry[kind]
            kind = kind.replace("_", " ")
            rows.append(f"{name:<13} {kind}: {reason}")
    split = next((e["split"] for e in table.values() if "split" in e), None)
    images = next((e["images"] for e in table.values() if "images" in e), None)
    measure = "accuracy" if classifier else "COCO AP"
    heading = f"export: {measure} of each format in its own runtime on {images} {split} images" if split else "export:"
    return "\n".join([heading, *rows])
