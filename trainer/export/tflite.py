"""TFLite: model_android/model.tflite (float32), and model_fp16.tflite / model_int8.tflite when asked.

uint8 [1, H, W, 3] at the model's square input in; normalised boxes, label ids, scores
and count out (the SavedModel's per-class NMS, in TFLite builtin ops: serving/detection.py),
or a classifier's `probs` [1, classes]. Apps stretch their image to that square (TFLite Task Library,
MediaPipe), as the model was trained and evaluated. Each file carries TFLite Model Metadata
(metadata.py: input, outputs, labels), so MediaPipe's ObjectDetector / ImageClassifier load it.
"""
from trainer.export import metadata, serving
from trainer.export.common import record_images, stretch, write_labels
from trainer.model_garden import SCORE_THRESHOLD

CALIBRATION_IMAGES = 100  # training images for int8 calibration
THREADS = 2               # latency is measured as an app would run it: default delegate, 2 threads


def write(job, row):
    """model_android/model.tflite, or with ROW's quantize model_fp16.tflite (fp16 weights) or model_int8.tflite (full
    int8 calibrated on training images)."""
    import tensorflow as tf

    height, width = job.input_size
    task_serving = serving.get(job.task)
    serve, model = task_serving.tflite_function(job)
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
    path.write_bytes(metadata.add(converter.convert(), task_serving, job.labels, (height, width), SCORE_THRESHOLD))
    return path


def run(job, path, images):
    """Detections (or probabilities) and seconds per image through LiteRT's interpreter, each image stretched to
    the input as apps do."""
    from trainer.export.saved_model import timed
    from trainer.predict import load_model

    return timed(load_model(path, threads=THREADS), images)
