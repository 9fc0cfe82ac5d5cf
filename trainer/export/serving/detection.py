"""A detector's serving code in each export format: an RGB image in; boxes, label ids and scores out."""
import numpy as np

from trainer.export import metadata
from trainer.export.common import core_ml_convert, network, require_retinanet, stretch
from trainer.model_garden import SCORE_THRESHOLD

NAME = "detection"
CORE_ML_CONFIDENCE = 0.25  # Model.mlmodel's default minimum score (apps may pass confidenceThreshold)


def saved_model_module(job):
    """Model Garden's own module for RetinaNet (None), else ours with boxes in 0..1."""
    from trainer import model_garden

    return None if job.is_retinanet else model_garden.normalized_boxes(job.params, job.input_size)


def tflite_function(job):
    """(uint8 image [1, H, W, 3] -> the SavedModel's detections, per class, the model holding the weights)."""
    import tensorflow as tf

    require_retinanet(job, "TFLite")
    run_network, model, _ = network(job)
    height, width = job.input_size
    generator = job.params.task.model.detection_generator

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.uint8, name="image")])
    def serve(image):
        scores, boxes = run_network(tf.cast(image, tf.float32))
        return per_class_nms(scores, boxes, generator.max_num_detections, generator.nms_iou_threshold)

    return serve, model


def web_function(job):
    """(uint8 image [1, H, W, 3] of any size -> the SavedModel's four outputs, the model holding the weights) for
    TF.js, or None for a detector other than RetinaNet (the SavedModel's graph converts as it is).

    The SavedModel's own NMS (Model Garden's padded `v2`) compares its 5,000 best candidates per class
    pairwise in plain ops: 83% of TF.js's time per image in WebAssembly (docs/benchmarks.md). The same
    network with TFLite's per-class NMS, whose NonMaxSuppressionV5 TF.js runs natively, keeps the same
    boxes; the image is stretched to the input inside the graph, as the SavedModel does it.
    """
    import tensorflow as tf

    if not job.is_retinanet:
        return None
    run_network, model, _ = network(job)
    generator = job.params.task.model.detection_generator

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="inputs")])
    def serve(image):
        pixels = tf.image.resize(tf.cast(image, tf.float32), job.input_size)  # bilinear, as resize_and_crop_image
        scores, boxes = run_network(pixels)
        detections = per_class_nms(scores, boxes, generator.max_num_detections, generator.nms_iou_threshold)
        # int32 label ids, as the SavedModel's: the converter names outputs by dtype and shape, and float
        # classes would share both with the scores (it then names them Identity_1:0 and Identity_2:0).
        return {**detections, "detection_classes": tf.cast(detections["detection_classes"], tf.int32)}

    return serve, model


def per_class_nms(scores, boxes, max_detections, iou_threshold):
    """The SavedModel's NMS in TFLite builtins: per class, then the best MAX_DETECTIONS of all classes.

    TFLite's TFLite_Detection_PostProcess op (Model Garden's TFLite route) loses classes
    in its regular NMS when the interpreter runs 2 threads (measured with LiteRT 2.3: the
    demo's third class never came out), and its fast NMS keeps one class per box (AP 0.08
    below the SavedModel's), so the graph does its own: NON_MAX_SUPPRESSION_V5 per class.
    Outputs as that op's: boxes [1, K, 4], classes (label ids), scores [1, K], count [1].
    Rows of one box (kept for several classes) come together, boxes by their best score
    first (`_box_order`).
    """
    import tensorflow as tf

    kept_boxes, kept_scores, kept_classes = [], [], []
    for label in range(scores.shape[-1]):
        index, score = tf.image.non_max_suppression_with_scores(
            boxes, scores[:, label], max_detections, iou_threshold=iou_threshold, score_threshold=SCORE_THRESHOLD)
        kept_boxes.append(tf.gather(boxes, index))
        kept_scores.append(score)
        kept_classes.append(tf.fill(tf.shape(score), float(label + 1)))
    scores = tf.concat(kept_scores, 0)
    count = tf.minimum(tf.size(scores), max_detections)
    best, top = tf.math.top_k(scores, k=count)
    pad = [[0, max_detections - count]]
    boxes = tf.reshape(tf.pad(tf.gather(tf.concat(kept_boxes, 0), top), pad + [[0, 0]]), [max_detections, 4])
    order = _box_order(boxes, tf.range(max_detections) < count)
    return {"detection_boxes": tf.reshape(tf.gather(boxes, order), [1, max_detections, 4]),
            "detection_classes": tf.reshape(tf.gather(tf.pad(tf.gather(tf.concat(kept_classes, 0), top), pad), order),
                                            [1, max_detections]),
            "detection_scores": tf.reshape(tf.gather(tf.pad(best, pad), order), [1, max_detections]),
            "num_detections": tf.reshape(tf.cast(count, tf.float32), [1])}


def _box_order(boxes, valid):
    """The order of the rows BOXES [K, 4] (sorted by score; VALID [K] rows are detections, the rest padding) that
    puts rows with the same box next to each other, each box at the place of its best row.

    MediaPipe's ObjectDetector folds rows with the same box into one detection with several
    categories (DetectionsDeduplicateCalculator), and in MediaPipe 1.2.2 it keeps pointers
    into a vector it is still growing: a row whose box came several rows earlier had its
    category dropped or given to another box (measured: 2 of 100 rows on one demo image; an
    int8 model's quantised boxes repeat more). Rows that follow their box's previous row are
    merged correctly.
    """
    import tensorflow as tf

    size = boxes.shape[0]
    same = tf.reduce_all(tf.equal(boxes[:, None], boxes[None, :]), axis=-1)
    same = tf.logical_or(tf.logical_and(same, tf.logical_and(valid[:, None], valid[None, :])),
                         tf.equal(tf.range(size)[:, None], tf.range(size)[None, :]))  # tf.eye: no TF.js op
    first = tf.cast(tf.argmax(tf.cast(same, tf.float32), axis=1), tf.int32)  # the best row with each row's box
    return tf.math.top_k(-(first * size + tf.range(size)), k=size).indices


def metadata_outputs(b, threshold):
    """The TFLite metadata of the four outputs, in TFLite_Detection_PostProcess's order (MediaPipe's): boxes
    (ymin, xmin, ymax, xmax in 0..1) [1, K, 4], label ids [1, K] (labels.txt's lines), scores [1, K], count [1]."""
    features = metadata.table(b, [])
    return [
        metadata.tensor(b, "location", "boxes ymin, xmin, ymax, xmax in 0..1 of the image",
                        content=metadata.content(b, metadata.BOUNDING_BOX_PROPERTIES, metadata.table(b, [
                            ("offset", metadata.uints(b, [1, 0, 3, 2])), ("int8", metadata.BOUNDARIES)]),
                            value_range=(2, 2))),
        metadata.tensor(b, "category", "label ids from 1 (line N of labels.txt, line 0 unused)",
                        content=metadata.content(b, metadata.FEATURE_PROPERTIES, features, value_range=(2, 2)),
                        associated_files=[metadata.labels_file(b, metadata.TENSOR_VALUE_LABELS)]),
        metadata.tensor(b, "score", "scores 0..1, sorted, down to the model's score threshold",
                        content=metadata.content(b, metadata.FEATURE_PROPERTIES, features, value_range=(2, 2)),
                        process_units=[threshold], stats=(1.0, 0.0)),
        metadata.tensor(b, "number of detections", "how many rows of the other outputs are detections"),
    ]


def core_ml_spec(job):
    """A pipeline of the network (converted up to decoded boxes and scores: coremltools cannot convert the
    SavedModel's NMS, TF while loops) and Core ML's own NonMaximumSuppression, as Vision expects."""
    import coremltools as ct

    raw, boxes = _core_ml_function(job)
    network_model = core_ml_convert(raw, job.input_size)
    spec = network_model.get_spec()
    for output, name, columns in zip(list(spec.description.output), ("raw_confidence", "raw_coordinates"),
                                     (len(job.labels), 4)):
        output.type.multiArrayType.shape[:] = [boxes, columns]  # NMS needs its inputs' shapes
        ct.utils.rename_feature(spec, output.name, name)
    return _pipeline(spec, job)


def check_core_ml(spec, labels):
    """Model.mlmodel as written: the image and the two optional thresholds in, Vision's two outputs out."""
    names = ([f.name for f in spec.description.input], [f.name for f in spec.description.output])
    if names != (["image", "iouThreshold", "confidenceThreshold"], ["confidence", "coordinates"]):
        raise RuntimeError(f"Model.mlmodel has inputs and outputs {names}")


def core_ml_predict(job):
    """image -> detections: the converted TF function on the image stretched to the input (Vision's scaleFill),
    then Core ML's NMS with confidenceThreshold SCORE_THRESHOLD, as the other formats, stopped after the most
    boxes per label that COCO AP reads (its largest maxDets): the same score, without running greedy NMS through
    every anchor of an untrained model."""
    import tensorflow as tf
    from pycocotools.cocoeval import Params

    raw, _ = _core_ml_function(job)
    iou = job.params.task.model.detection_generator.nms_iou_threshold
    scored_per_label = max(Params(iouType="bbox").maxDets)

    def detect(image):
        scores, boxes = raw(tf.constant(stretch(image, job.input_size)[None], tf.float32))
        return core_ml_nms(scores.numpy(), boxes.numpy(), iou, SCORE_THRESHOLD, scored_per_label)

    return detect


def _core_ml_function(job):
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
    """Chain NETWORK_SPEC (image -> raw_confidence [N, C], raw_coordinates [N, 4]) with Core ML's NMS, whose IoU
    and confidence thresholds are optional inputs with defaults (a `VNCoreMLRequest` supplies only the image)."""
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
    for name, value in (("iouThreshold", iou), ("confidenceThreshold", CORE_ML_CONFIDENCE)):
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
    settings.confidenceThreshold = CORE_ML_CONFIDENCE
    settings.pickTop.perClass = True
    settings.stringClassLabels.vector.extend(job.labels)

    pipeline = ct.proto.Model_pb2.Model()
    pipeline.specificationVersion = network_spec.specificationVersion
    pipeline.pipeline.models.add().CopyFrom(network_spec)
    pipeline.pipeline.models.add().CopyFrom(nms)
    pipeline.description.input.add().CopyFrom(network_spec.description.input[0])
    pipeline.description.input.extend(nms.description.input[2:])
    pipeline.description.output.extend(nms.description.output)
    return pipeline


def core_ml_nms(confidence, coordinates, iou_threshold, confidence_threshold, per_label=None):
    """Core ML's NonMaximumSuppression with pickTop.perClass (NonMaximumSuppression.proto): each box's
    label is the argmax of its confidences; boxes below the threshold go; the rest are suppressed greedily
    by confidence among boxes of the same label. PER_LABEL stops each label's greedy pass after that many
    boxes (Core ML keeps them all: its first PER_LABEL are these). Returns the predict/evaluation detection dict."""
    import tensorflow as tf

    labels, scores = confidence.argmax(axis=1), confidence.max(axis=1)
    x, y, w, h = coordinates.T
    corners = np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=1)
    keep = []
    for label in np.unique(labels[scores >= confidence_threshold]):
        index = np.flatnonzero((labels == label) & (scores >= confidence_threshold))
        most = len(index) if per_label is None else per_label
        kept = tf.image.non_max_suppression(corners[index], scores[index], most, iou_threshold).numpy()
        keep.extend(index[kept])
    keep = np.array(sorted(keep, key=lambda i: -scores[i]), dtype=int)
    return {"boxes": corners[keep].astype(np.float32), "scores": scores[keep], "classes": labels[keep] + 1}


def from_tfjs(result):
    """One image's result from tfjs_detect.js (the SavedModel's four outputs) as the evaluation's detections."""
    count = int(result["num_detections"])
    return {"boxes": np.array(result["detection_boxes"][:count], np.float32).reshape(-1, 4),
            "scores": np.array(result["detection_scores"][:count], np.float32),
            "classes": np.array(result["detection_classes"][:count]).astype(int)}


def from_mediapipe(result, shape, labels):
    """ObjectDetector's detections (pixel boxes, each with its categories, each with its label id as `index`) as
    the other formats': one row per box and class in MediaPipe's order, boxes ymin, xmin, ymax, xmax in 0..1."""
    height, width = shape[:2]
    rows = [(category, detection["box"]) for detection in result["detections"] for category in detection["categories"]]
    return {"boxes": np.array([[y / height, x / width, (y + h) / height, (x + w) / width]
                               for _, (x, y, w, h) in rows], np.float32).reshape(-1, 4),
            "scores": np.array([category["score"] for category, _ in rows], np.float32),
            "classes": np.array([category["index"] for category, _ in rows], int)}
