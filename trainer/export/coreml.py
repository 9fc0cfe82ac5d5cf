"""Core ML: model_ios/Model.mlmodel, a pipeline of the network and Core ML's own NMS, as Vision expects.

coremltools cannot convert the SavedModel's NMS (TF while loops), so the network is
converted up to decoded boxes and scores and chained with a NonMaximumSuppression
model whose IoU and confidence thresholds are optional inputs with defaults (a
`VNCoreMLRequest` supplies only the image). The image input is the model's square
size: apps set `imageCropAndScaleOption = .scaleFill` (stretch), as the model was
trained. Core ML runs only on Apple systems, so the evaluation here runs the exact
TensorFlow function that was converted, then NMS as Core ML defines it (`_core_ml_nms`).

A classifier becomes a Core ML classifier (`classLabel` and the `classLabelProbs`
dictionary: what Vision turns into VNClassificationObservation), same image input.
"""
import json

import numpy as np

from trainer.export.common import SCORE_THRESHOLD, classifier, network, require_retinanet, stretch, write_labels

CONFIDENCE = 0.25  # the model's default minimum score (apps may pass confidenceThreshold)


def write(job, row):
    """ROW's path (model_ios/Model.mlmodel): the detector's pipeline, or a classifier."""
    if job.task == "classification":
        return _write_classifier(job, row)
    import coremltools as ct

    height, width = job.input_size
    raw, boxes = _raw_function(job)
    foreground = len(job.labels)
    network_model = ct.convert([raw.get_concrete_function()], source="tensorflow", convert_to="neuralnetwork",
                               inputs=[ct.ImageType(name="image", shape=(1, height, width, 3))])
    spec = network_model.get_spec()
    for output, name, columns in zip(list(spec.description.output), ("raw_confidence", "raw_coordinates"),
                                     (foreground, 4)):
        output.type.multiArrayType.shape[:] = [boxes, columns]  # NMS needs its inputs' shapes
        ct.utils.rename_feature(spec, output.name, name)
    path = row.path(job.result_dir)
    write_labels(path.parent, job.labels)
    ct.utils.save_spec(_pipeline(spec, job), str(path))
    spec = ct.utils.load_spec(str(path))
    names = ([f.name for f in spec.description.input], [f.name for f in spec.description.output])
    if names != (["image", "iouThreshold", "confidenceThreshold"], ["confidence", "coordinates"]):
        raise RuntimeError(f"Model.mlmodel has inputs and outputs {names}")
    return path


def _write_classifier(job, row):
    """model_ios/Model.mlmodel: image -> classLabel, classLabelProbs {label: probability}."""
    import coremltools as ct

    height, width = job.input_size
    probabilities = _classifier_function(job)
    model = ct.convert([probabilities.get_concrete_function()], source="tensorflow", convert_to="neuralnetwork",
                       inputs=[ct.ImageType(name="image", shape=(1, height, width, 3))],
                       classifier_config=ct.ClassifierConfig(list(job.labels)))
    spec = model.get_spec()
    probs = next(output.name for output in spec.description.output if output.name != "classLabel")
    ct.utils.rename_feature(spec, probs, "classLabelProbs")
    spec.description.predictedProbabilitiesName = "classLabelProbs"
    spec.description.metadata.userDefined["labels"] = json.dumps(job.labels)
    path = row.path(job.result_dir)
    write_labels(path.parent, job.labels)
    ct.utils.save_spec(spec, str(path))
    spec = ct.utils.load_spec(str(path))
    names = ([f.name for f in spec.description.input], sorted(f.name for f in spec.description.output))
    if names != (["image"], ["classLabel", "classLabelProbs"]) or list(spec.neuralNetworkClassifier.stringClassLabels
                                                                        .vector) != list(job.labels):
        raise RuntimeError(f"Model.mlmodel has inputs and outputs {names} and other labels than labels.json")
    return path


def _classifier_function(job):
    """The function converted for a classifier: float RGB [1, H, W, 3] -> probabilities [1, classes]."""
    import tensorflow as tf

    run_classifier, _ = classifier(job)
    height, width = job.input_size
    return tf.function(run_classifier, input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32,
                                                                       name="image")])


def _raw_function(job):
    """The function converted: float RGB [1, H, W, 3] -> (class probabilities [N, classes], boxes [N, 4] as
    normalised x centre, y centre, width, height: Core ML's NMS layout); and N."""
    import tensorflow as tf

    require_retinanet(job, "Core ML")
    height, width = job.input_size
    run_network, _, boxes = network(job)

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="image")])
    def raw(image):
        scores, corners = run_network(image)
        ymin, xmin, ymax, xmax = tf.unstack(corners, axis=-1)
        return scores, tf.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin, ymax - ymin], -1)

    return raw, boxes


def _pipeline(network_spec, job):
    """Chain NETWORK_SPEC (image -> raw_confidence [N, C], raw_coordinates [N, 4]) with Core ML's NMS."""
    import coremltools as ct

    iou = job.params.task.model.detection_generator.nms_iou_threshold
    nms = ct.proto.Model_pb2.Model()
    nms.specificationVersion = network_spec.specificationVersion
    for index, (source, name) in enumerate(zip(network_spec.description.output, ("confidence", "coordinates"))):
        nms.description.input.add().CopyFrom(source)
        output = nms.description.output.add()
        output.CopyFrom(source)
        output.name = name
        array = output.type.multiArrayType
        del array.shape[:]
        boxes = array.shapeRange.sizeRanges.add()
        boxes.lowerBound, boxes.upperBound = 0, -1
        columns = array.shapeRange.sizeRanges.add()
        columns.lowerBound = columns.upperBound = len(job.labels) if index == 0 else 4
    for name, value in (("iouThreshold", iou), ("confidenceThreshold", CONFIDENCE)):
        feature = nms.description.input.add()
        feature.name = name
        feature.type.doubleType.SetInParent()
        feature.type.isOptional = True  # Vision passes only the image: the defaults below apply
        feature.shortDescription = f"optional, default {value}"
    settings = nms.nonMaximumSuppression
    settings.confidenceInputFeatureName, settings.coordinatesInputFeatureName = "raw_confidence", "raw_coordinates"
    settings.confidenceOutputFeatureName, settings.coordinatesOutputFeatureName = "confidence", "coordinates"
    settings.iouThresholdInputFeatureName, settings.confidenceThresholdInputFeatureName = (
        "iouThreshold", "confidenceThreshold")
    settings.iouThreshold = iou
    settings.confidenceThreshold = CONFIDENCE
    settings.pickTop.perClass = True
    settings.stringClassLabels.vector.extend(job.labels)

    pipeline = ct.proto.Model_pb2.Model()
    pipeline.specificationVersion = network_spec.specificationVersion
    pipeline.pipeline.models.add().CopyFrom(network_spec)
    pipeline.pipeline.models.add().CopyFrom(nms)
    pipeline.description.input.add().CopyFrom(network_spec.description.input[0])
    pipeline.description.input.extend(nms.description.input[2:])
    pipeline.description.output.extend(nms.description.output)
    pipeline.description.metadata.userDefined["labels"] = json.dumps(job.labels)
    return pipeline


def run(job, path, images):
    """Detections and seconds per image: the converted TF function on each image stretched to the input
    (Vision's scaleFill), then Core ML's NMS with confidenceThreshold SCORE_THRESHOLD, as the other formats."""
    import tensorflow as tf

    from trainer.export.saved_model import timed

    if job.task == "classification":
        probabilities = _classifier_function(job)
        return timed(lambda image: {"probs": probabilities(tf.constant(stretch(image, job.input_size)[None],
                                                                       tf.float32)).numpy()[0]}, images)
    raw, _ = _raw_function(job)
    iou = job.params.task.model.detection_generator.nms_iou_threshold

    def detect(image):
        scores, boxes = raw(tf.constant(stretch(image, job.input_size)[None], tf.float32))
        return _core_ml_nms(scores.numpy(), boxes.numpy(), iou, SCORE_THRESHOLD)

    return timed(detect, images)


def _core_ml_nms(confidence, coordinates, iou_threshold, confidence_threshold):
    """Core ML's NonMaximumSuppression with pickTop.perClass (NonMaximumSuppression.proto): each box's
    label is the argmax of its confidences; boxes below the threshold go; the rest are suppressed greedily
    by confidence among boxes of the same label. Returns the predict/evaluation detection dict."""
    import tensorflow as tf

    labels, scores = confidence.argmax(axis=1), confidence.max(axis=1)
    x, y, w, h = coordinates.T
    corners = np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=1)
    keep = []
    for label in np.unique(labels[scores >= confidence_threshold]):
        index = np.flatnonzero((labels == label) & (scores >= confidence_threshold))
        kept = tf.image.non_max_suppression(corners[index], scores[index], len(index), iou_threshold).numpy()
        keep.extend(index[kept])
    keep = np.array(sorted(keep, key=lambda i: -scores[i]), dtype=int)
    return {"boxes": corners[keep].astype(np.float32), "scores": scores[keep], "classes": labels[keep] + 1}
