"""Object detection (a Cloud Annotations bucket of type localization): boxes with labels."""
import math

from trainer.images import StoredSize

NAME = "detection"
FIRST_LABEL_ID = 1  # Model Garden's detectors count background as class 0
DEFAULT_METRIC = "AP"  # what best.py selects the checkpoint by unless --select-metric names another
EXPORT_SCORES = ("AP", "AP50")  # an export's scores in model_export/evaluation.json
WARM_MODULES = ("backbone", "decoder")  # what a warm start restores when the labels changed
SHOWN_METRICS = ("AP", "AP50", "AP75", "ARmax100")  # train's console line after each evaluation
# The serving signature's outputs, in the order TFLite metadata describes them (export/serving/detection.py's names).
SERVING_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
BOXES = True  # the records and report count boxes
OBJECTS, LEARNER = ("boxes", "box"), "detector"  # what dataset warnings count, and call the model
SUMMARY = ""  # prepare's summary line says nothing more
MODEL_GARDEN_MAX_INSTANCES = 100
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl")
# Model Garden's per-category metric names (coco_evaluator), in COCOeval.stats order.
CATEGORY_METRICS = {"AP": "Precision mAP ByCategory", "AP50": "Precision mAP ByCategory@50IoU",
                    "AP75": "Precision mAP ByCategory@75IoU", "ARmax100": "Recall AR@100 ByCategory"}

# What an entry's train_data.parser leaves out: Model Garden's `Parser` defaults (official/vision/configs/
# retinanet.py and maskrcnn.py; tests/test_catalogue.py checks them against the library).
PARSER_DEFAULTS = {"aug_scale_max": 1.0, "keep_aspect_ratio": True}


def stored_size(entry):
    """The StoredSize whose detail ENTRY's training reads: its input side times the largest scale jitter.

    Stretched to the square input, each side of the image is scaled on its own, so the shorter side
    needs those pixels; keeping its aspect ratio, the longer side fits the input and needs them.
    """
    parser = {**PARSER_DEFAULTS, **entry.overrides["task"].get("train_data", {}).get("parser", {})}
    side = math.ceil(entry.input_side * parser["aug_scale_max"])
    return StoredSize.longest(side) if parser["keep_aspect_ratio"] else StoredSize.shortest(side)


def record_features(key, jpeg, size, boxes, source_id):
    """The TFRecord features of one image and its BOXES."""
    from trainer.records import detection_features

    return detection_features(key, jpeg, size, boxes, source_id)


def task_overrides(task, dataset, checkpoint):
    """TASK (config's `task` override, the settings both tasks share) with a detector's own."""
    instances = {"max_num_instances": max(MODEL_GARDEN_MAX_INSTANCES, dataset["max_boxes"])}
    task["train_data"]["parser"] = task["validation_data"]["parser"] = instances
    return {**task,
            # Model Garden's detection tasks restore everything only for the string 'all'
            "init_checkpoint_modules": "all" if checkpoint["modules"] == ["all"] else checkpoint["modules"],
            "annotation_file": "",  # Model Garden builds COCO ground truth from the val records
            "per_category_metrics": True,
            "allow_image_summary": True}  # validation images with predicted boxes in TensorBoard


def metric_names(labels):
    """The metrics --select-metric may name: {"top": metrics.json's own, "per_class": a class's (NAME/LABEL)}."""
    return {"top": [*COCO_METRICS, "validation_loss"], "per_class": list(CATEGORY_METRICS)}


def evaluation_metrics(output, labels, step, confusion):
    """metrics.json: COCO metrics (null where COCO has no value: -1), per-class AP, validation loss.
    CONFUSION (a classifier's matrix) is not needed: COCO's metrics come in OUTPUT."""

    def value(name):
        number = float(output[name])
        return None if number < 0 else number

    per_class = {}
    for class_id, label in enumerate(labels, start=FIRST_LABEL_ID):
        keys = {short: f"{long}/{class_id}" for short, long in CATEGORY_METRICS.items()}
        per_class[label] = {short: value(key) if key in output else None for short, key in keys.items()}
    return {
        "step": step,
        **{name: value(name) for name in COCO_METRICS},
        "per_class": per_class,
        "validation_loss": float(output["validation_loss"]) if "validation_loss" in output else None,
    }


def class_layer(model):
    """The layer whose outputs are the classes: the RetinaNet head's classifier conv (warm starts copy its rows)."""
    return model.head._classifier  # pylint: disable=protected-access


def build_head(model, params):
    """Create MODEL's head variables (SpineNet RetinaNets build theirs on the first call)."""
    import tensorflow as tf

    if model.head.variables:
        return
    size = params.task.model.input_size[:2]
    features = model.backbone(tf.zeros([1, *size, 3]), training=False)
    model.head(model.decoder(features, training=False) if model.decoder else features, training=False)


def head_variables(model):
    """The head's variables in creation order."""
    return model.head.variables


def ground_truth(labels, files):
    """Export evaluation's COCO ground truth dict of the TFRecord FILES (image sizes as decoded)."""
    import io

    import tensorflow as tf
    from PIL import Image

    features = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                "image/source_id": tf.io.FixedLenFeature([], tf.string),
                "image/filename": tf.io.FixedLenFeature([], tf.string),
                "image/object/class/label": tf.io.VarLenFeature(tf.int64),
                "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
                **{f"image/object/bbox/{key}": tf.io.VarLenFeature(tf.float32)
                   for key in ("xmin", "ymin", "xmax", "ymax")}}
    coco = {"images": [], "annotations": [],
            "categories": [{"id": index, "name": name} for index, name in enumerate(labels, FIRST_LABEL_ID)]}
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
    return coco


def coco_results(found, groundtruth):
    """Detections (boxes ymin, xmin, ymax, xmax in 0..1) as a COCO results list in pixels."""
    import numpy as np

    results = []
    for image, detections in zip(groundtruth["images"], found):
        scale = np.array([image["height"], image["width"]] * 2, np.float64)
        for box, score, label in zip(detections["boxes"], detections["scores"], detections["classes"]):
            ymin, xmin, ymax, xmax = (np.asarray(box, np.float64) * scale).tolist()
            results.append({"image_id": image["id"], "category_id": int(label),
                            "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "score": float(score)})
    return results


def export_scores(found, groundtruth, details, name):
    """{"AP", "AP50"} of an export's detections FOUND; the COCO results go to DETAILS/NAME_detections.json."""
    import json

    from trainer.metrics import coco_ap

    results = coco_results(found, groundtruth)
    (details / f"{name}_detections.json").write_text(json.dumps(results))
    ap, ap50 = coco_ap(groundtruth, results)
    return {"AP": round(ap, 4), "AP50": round(ap50, 4)}
