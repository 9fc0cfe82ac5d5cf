"""TFLite: model_android/model.tflite (float32), and model_fp16.tflite / model_int8.tflite when asked.

uint8 [1, H, W, 3] at the model's square input in; normalised boxes, label ids, scores
and count out (TFLite's detection post-processing op). Apps stretch their image to
that square (TFLite Task Library, MediaPipe), as the model was trained and evaluated.
"""
from trainer.export.common import SCORE_THRESHOLD, network, record_images, require_retinanet, write_labels

FOLDER = "model_android"
QUANTIZE = ("fp16", "int8")
CALIBRATION_IMAGES = 100  # training images for int8 calibration
THREADS = 2               # latency is measured as an app would run it: default delegate, 2 threads


def filename(quantize=None):
    return f"model_{quantize}.tflite" if quantize else "model.tflite"


def write(job, quantize=None):
    """model_android/model.tflite, or model_QUANTIZE.tflite (fp16 weights, or full int8 calibrated on training images)."""
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator

    require_retinanet(job, "TFLite")
    anchors, run_network, model = network(job)
    height, width = job.input_size
    generator = job.params.task.model.detection_generator
    assert generator.tflite_post_processing.nms_score_threshold == SCORE_THRESHOLD

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.uint8, name="image")])
    def serve(image):
        scores, boxes = run_network(tf.cast(image, tf.float32))
        boxes, classes, scores, count = detection_generator._generate_detections_tflite(  # pylint: disable=protected-access
            boxes, scores, anchors, generator.tflite_post_processing.as_dict(), generator.box_coder_weights)
        return {"detection_boxes": tf.clip_by_value(boxes / [height, width, height, width], 0.0, 1.0),
                "detection_classes": classes + 1.0,  # label ids, as the SavedModel's
                "detection_scores": scores, "num_detections": count}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    if quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        from trainer.errors import UserError
        from trainer.export.common import stretch

        calibration = [stretch(image, (height, width)) for image in
                       record_images(job.result_dir, "train", CALIBRATION_IMAGES)]
        if not calibration:
            raise UserError(f"no images in {job.result_dir}/data/train-*.tfrecord to calibrate int8 quantisation with")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    out = job.result_dir / FOLDER
    write_labels(out, job.labels)
    path = out / filename(quantize)
    path.write_bytes(converter.convert())
    return path


def run(job, path, images):
    """Detections and seconds per image through LiteRT's interpreter, each image stretched to the input as apps do."""
    from trainer.export.saved_model import timed
    from trainer.predict import load_detector

    return timed(load_detector(path, threads=THREADS), images)
