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
import json
from pathlib import Path

import numpy as np

from trainer import console, tasks
from trainer.export.common import NotEvaluated, record_images
from trainer.export.formats import REFERENCE
from trainer.metrics import TOP_K, TOP_K_ACCURACY
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
    run = RunDir(result_dir)
    truth = tasks.get(task).ground_truth(load_labels(run), [str(p) for p in run.records(split)])
    return SplitImages(result_dir, split, len(truth["images"])), truth


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
        scores = tasks.get(job.task).export_scores(found, groundtruth, details, name)
        # The first call of a runtime also traces or allocates: the median ignores it.
        evaluations[name] = {**scores, "bytes": output["bytes"],
                             "latency_ms": round(float(np.median(seconds)) * 1000, 2) if seconds else None,
                             "split": split, "images": len(images)}
    return evaluations


def write_evaluation(job, evaluations):
    """model_export/evaluation.json with delta_AP against the SavedModel, and the table printed."""
    task = tasks.get(job.task)
    score = task.DEFAULT_METRIC
    reference = evaluations.get(REFERENCE, {}).get(score)
    table = {}
    for name, entry in evaluations.items():
        entry = dict(entry)
        if score in entry:
            entry[f"delta_{score}"] = round(entry[score] - reference, 4) if reference is not None else None
            entry = {key: entry[key] for key in (*task.EXPORT_SCORES, f"delta_{score}", "bytes", "latency_ms", "split",
                                                 "images") if key in entry}
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
