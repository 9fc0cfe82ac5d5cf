"""SavedModel: Model Garden's export (uint8 images of any size in; normalised boxes, or a classifier's
`probs`, out) plus a TF Serving copy.

It is the reference the other formats are measured against, and what TF Serving and
`trainer predict` run; fed the raw image, it resizes inside its graph.
"""
import shutil
import time

from trainer.export.common import write_labels


def write(job, row):
    """model_export/saved_model (ROW's path), and a copy as model_export/serving/NAME/STEP for TF Serving."""
    import tensorflow as tf
    from official.vision.serving import export_saved_model_lib

    out, saved = job.result_dir / row.folder, row.path(job.result_dir)
    shutil.rmtree(saved, ignore_errors=True)
    export_saved_model_lib.export_inference_graph(
        input_type="image_tensor", batch_size=None, input_image_size=list(job.input_size),
        params=job.params, checkpoint_path=job.checkpoint, export_dir=str(out), export_saved_model_subdir=row.file,
        export_module=_export_module(job))
    write_labels(out, job.labels)
    tf.saved_model.load(str(saved)).signatures["serving_default"]  # loads back

    serving = out / "serving" / job.model
    version = serving / job.checkpoint.rsplit("-", 1)[-1]
    shutil.rmtree(version, ignore_errors=True)
    shutil.copytree(saved, version)
    versions = sorted((p for p in serving.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for old in versions[:-job.keep_versions]:
        shutil.rmtree(old)
    return saved


def run(job, path, images):
    """Detections (or class probabilities) and seconds per image, each raw image fed as TF Serving's users feed it."""
    from trainer.predict import load_model

    return timed(load_model(path), images)


def timed(detect, images):
    """DETECT on each image: (detections, seconds per image)."""
    found, seconds = [], []
    for image in images:
        start = time.perf_counter()
        found.append(detect(image))
        seconds.append(time.perf_counter() - start)
    return found, seconds


def _export_module(job):
    """Model Garden's own module for RetinaNet (None), else ours: 0..1 boxes, or a stretching classifier."""
    if job.task == "classification":
        return _stretching_classifier(job)
    return None if job.is_retinanet else _normalized_module(job)


def _stretching_classifier(job):
    """Model Garden's ClassificationModule, resizing the whole image to the square input (no centre crop).

    Its own serving centre-crops whenever training used random crops; evaluation and
    every other format stretch (the input contract), so the SavedModel does too.
    """
    import tensorflow as tf
    from official.vision.serving import image_classification

    class StretchingClassifier(image_classification.ClassificationModule):
        def _crop_and_resize(self, image):
            image = tf.image.resize(image, self._input_image_size, method=tf.image.ResizeMethod.BILINEAR)
            return tf.reshape(image, [*self._input_image_size, 3])

        def serve(self, images):
            # probs only: the TF.js converter names outputs by dtype and shape, and logits
            # share both with probs (it then names them Identity:0 and Identity_1:0).
            return {"probs": super().serve(images)["probs"]}

    return StretchingClassifier(params=job.params, batch_size=None, input_image_size=list(job.input_size),
                                input_type="image_tensor")


def _normalized_module(job):
    """A DetectionModule whose boxes are 0..1 of the input image, as RetinaNet's are.

    Model Garden normalises RetinaNet's boxes only; Faster R-CNN's come out in pixels of
    the resized input. Its serving resize keeps the aspect ratio, scaling the image to
    round(size * scale), so dividing by that size gives the fraction of the image.
    """
    import tensorflow as tf
    from official.vision.serving import detection

    height, width = job.input_size

    class NormalizedBoxes(detection.DetectionModule):
        def serve(self, images):
            outputs = super().serve(images)
            size = tf.cast(tf.shape(images)[1:3], tf.float32)
            scaled = tf.round(size * tf.minimum(height / size[0], width / size[1]))
            outputs["detection_boxes"] = tf.clip_by_value(
                outputs["detection_boxes"] / tf.tile(scaled, [2]), 0.0, 1.0)
            return outputs

    return NormalizedBoxes(params=job.params, batch_size=None, input_image_size=[height, width],
                           input_type="image_tensor")
