"""TFLite: model_android/model.tflite (float32), and model_fp16.tflite / model_int8.tflite when asked.

uint8 [1, H, W, 3] at the model's square input in; normalised boxes, label ids, scores
and count out (the SavedModel's per-class NMS, in TFLite builtin ops), or a classifier's
`probs` [1, classes]. Apps stretch their image to that square (TFLite Task Library,
MediaPipe), as the model was trained and evaluated. Each file carries TFLite Model Metadata
(metadata.py: input, outputs, labels), so MediaPipe's ObjectDetector / ImageClassifier load it.
"""
from trainer.export import metadata
from trainer.export.common import (SCORE_THRESHOLD, classifier, network, record_images, require_retinanet, stretch,
                                   write_labels)

CALIBRATION_IMAGES = 100  # training images for int8 calibration
THREADS = 2               # latency is measured as an app would run it: default delegate, 2 threads


def write(job, row):
    """model_android/model.tflite, or with ROW's quantize model_fp16.tflite (fp16 weights) or model_int8.tflite (full
    int8 calibrated on training images)."""
    import tensorflow as tf

    height, width = job.input_size
    serve, model = _classifier_function(job) if job.task == "classification" else _detector_function(job)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    if row.quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif row.quantize == "int8":
        from trainer.errors import UserError

        calibration = [stretch(image, (height, width)) for image in
                       record_images(job.result_dir, "train", CALIBRATION_IMAGES)]
        if not calibration:
            raise UserError(f"no images in {job.result_dir}/data/train-*.tfrecord to calibrate int8 quantisation with")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        # NMS has no integer kernel: it stays float, the network runs in int8.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    path = row.path(job.result_dir)
    write_labels(path.parent, job.labels)
    path.write_bytes(metadata.add(converter.convert(), job.task, job.labels, (height, width), SCORE_THRESHOLD))
    return path


def _detector_function(job):
    """(uint8 image -> the SavedModel's detections, the model holding the weights)."""
    import tensorflow as tf

    require_retinanet(job, "TFLite")
    run_network, model, _ = network(job)
    height, width = job.input_size
    generator = job.params.task.model.detection_generator

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.uint8, name="image")])
    def serve(image):
        scores, boxes = run_network(tf.cast(image, tf.float32))
        return _per_class_nms(scores, boxes, generator.max_num_detections, generator.nms_iou_threshold)

    return serve, model


def _classifier_function(job):
    """(uint8 image -> {"probs": [1, classes]}, the model holding the weights)."""
    import tensorflow as tf

    run_classifier, model = classifier(job)
    height, width = job.input_size

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.uint8, name="image")])
    def serve(image):
        return {"probs": run_classifier(tf.cast(image, tf.float32))}

    return serve, model


def _per_class_nms(scores, boxes, max_detections, iou_threshold):
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
                         tf.cast(tf.eye(size), tf.bool))
    first = tf.cast(tf.argmax(tf.cast(same, tf.float32), axis=1), tf.int32)  # the best row with each row's box
    return tf.math.top_k(-(first * size + tf.range(size)), k=size).indices


def run(job, path, images):
    """Detections (or probabilities) and seconds per image through LiteRT's interpreter, each image stretched to
    the input as apps do."""
    from trainer.export.saved_model import timed
    from trainer.predict import load_model

    return timed(load_model(path, threads=THREADS), images)
