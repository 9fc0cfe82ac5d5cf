"""Image classification (a Cloud Annotations bucket of type classification): one label per image."""
import math

from trainer.errors import UserError
from trainer.images import StoredSize
from trainer.metrics import TOP_K, TOP_K_ACCURACY

NAME = "classification"
FIRST_LABEL_ID = 0  # Model Garden's classifiers have no background
DEFAULT_METRIC = "accuracy"  # what best.py selects the checkpoint by unless --select-metric names another
EXPORT_SCORES = ("accuracy", TOP_K_ACCURACY)  # an export's scores in model_export/evaluation.json
WARM_MODULES = ("backbone",)  # what a warm start restores when the labels changed
SHOWN_METRICS = ("accuracy", TOP_K_ACCURACY)  # train's console line after each evaluation
SERVING_OUTPUTS = ("probs",)  # the serving signature's outputs
BOXES = False  # one whole-image box per image carries its label (trainer.annotations)
OBJECTS, LEARNER = ("images", "image"), "classifier"  # what dataset warnings count, and call the model
SUMMARY = ", classification"  # said in prepare's summary line

# What an entry's train_data leaves out: Model Garden's classification DataConfig defaults
# (official/vision/configs/image_classification.py; tests/test_catalogue.py checks them against the library).
DATA_DEFAULTS = {"aug_crop": True, "crop_area_range": (0.08, 1.0)}
NARROWEST_CROP = 3 / 4  # preprocess_ops.random_crop_image's aspect_ratio_range, fixed in Model Garden


def stored_size(entry):
    """The StoredSize whose detail ENTRY's training reads: the smallest random crop, resized to the input.

    A crop of the least area fraction a, at the narrowest aspect ratio, has a side of sqrt(a * 3/4) of a
    square image's; without random crops the whole image is resized to the input.
    """
    data = {**DATA_DEFAULTS, **entry.overrides["task"].get("train_data", {})}
    smallest_crop = math.sqrt(data["crop_area_range"][0] * NARROWEST_CROP) if data["aug_crop"] else 1
    side = math.ceil(entry.input_side / smallest_crop)
    return StoredSize.shortest(side)


def record_features(key, jpeg, size, boxes, source_id):
    """The TFRecord features of one image and its label, carried by its one whole-image box in BOXES."""
    from trainer.records import classification_features

    (*_, label_id, label), = boxes
    return classification_features(key, jpeg, size, label_id, label, source_id)


def task_overrides(task, dataset, checkpoint):
    """TASK (config's `task` override, the settings both tasks share) with a classifier's own."""
    if checkpoint["path"] and checkpoint["modules"] not in (["backbone"], ["all"]):
        raise UserError(f"a classifier restores [backbone] or [all] from its checkpoint, not "
                        f"{checkpoint['modules']}")
    task["init_checkpoint_modules"] = checkpoint["modules"][0]  # Model Garden's classifier takes one string
    # Evaluation (and every export) stretches the whole image to the square input, as phone
    # apps feed a classifier; training keeps its random crops.
    task["validation_data"]["aug_crop"] = False
    task["evaluation"] = {"top_k": min(TOP_K, dataset["num_classes"])}
    return task


def metric_names(labels):
    """The metrics --select-metric may name: {"top": metrics.json's own, "per_class": a class's (NAME/LABEL)}."""
    top_k = [TOP_K_ACCURACY] if len(labels) > TOP_K else []
    return {"top": ["accuracy", *top_k, "validation_loss"], "per_class": ["accuracy"]}


def evaluation_metrics(output, labels, step, confusion):
    """metrics.json for a classifier: Model Garden's accuracy (and top-5 with more than 5 classes),
    per-class accuracy and the confusion matrix (CONFUSION() of the val split; rows: true label, columns:
    predicted), validation loss."""
    matrix = confusion()
    per_class = {}
    for index, label in enumerate(labels):
        images = int(sum(matrix[index]))
        per_class[label] = {"accuracy": matrix[index][index] / images if images else None, "images": images}
    return {
        "step": step,
        "accuracy": float(output["accuracy"]),
        **({TOP_K_ACCURACY: float(output[TOP_K_ACCURACY])}
           if len(labels) > TOP_K and TOP_K_ACCURACY in output else {}),
        "per_class": per_class,
        "confusion_matrix": matrix,
        "validation_loss": float(output["validation_loss"]) if "validation_loss" in output else None,
    }


def class_layer(model):
    """The layer whose outputs are the classes: the last Dense (warm starts copy its rows)."""
    import tf_keras

    return [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Dense)][-1]


def build_head(model, params):
    """Nothing to do: a classifier's head variables exist once it is built."""


def head_variables(model):
    """The head's variables in creation order: the layers after the backbone."""
    backbone = {id(variable) for variable in model.backbone.variables}
    return [variable for variable in model.variables if id(variable) not in backbone]


def ground_truth(labels, files):
    """Export evaluation's ground truth of the TFRecord FILES: {"labels": label names, "images": [{"id",
    "file_name", "label"}]} (label ids from 0)."""
    import tensorflow as tf

    features = {"image/source_id": tf.io.FixedLenFeature([], tf.string),
                "image/filename": tf.io.FixedLenFeature([], tf.string),
                "image/class/label": tf.io.FixedLenFeature([], tf.int64)}
    truth = {"labels": labels, "images": []}
    for record in tf.data.TFRecordDataset(files):
        value = {key: v.numpy() for key, v in tf.io.parse_single_example(record, features).items()}
        truth["images"].append({"id": int(value["image/source_id"]), "file_name": value["image/filename"].decode(),
                                "label": int(value["image/class/label"])})
    return truth


def export_scores(found, groundtruth, details, name):
    """{"accuracy"[, "top_5_accuracy"]} of a classifier's probabilities FOUND against the records' labels; each
    image's top label and score go to DETAILS/NAME_predictions.json."""
    import json

    import numpy as np

    from trainer.metrics import accuracies

    probabilities = np.array([output["probs"] for output in found]).reshape(len(found), -1)
    truth = np.array([image["label"] for image in groundtruth["images"]])
    ranked = np.argsort(-probabilities, axis=1)
    (details / f"{name}_predictions.json").write_text(json.dumps([
        {"image_id": image["id"], "label_id": int(row[0]), "score": float(probs[row[0]])}
        for image, row, probs in zip(groundtruth["images"], ranked, probabilities)]))
    return {key: round(value, 4) for key, value in accuracies(ranked, truth).items()}
