"""SavedModel: Model Garden's export (uint8 images of any size in; normalised boxes, or a classifier's
`probs`, out) plus a TF Serving copy.

It is the reference the other formats are measured against, and what TF Serving and
`trainer predict` run; fed the raw image, it resizes inside its graph.
"""
import shutil
import time

from trainer.export import serving
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
        export_module=serving.get(job.task).saved_model_module(job))
    write_labels(out, job.labels)
    tf.saved_model.load(str(saved)).signatures["serving_default"]  # loads back

    tf_serving = out / "serving" / job.model
    version = tf_serving / job.checkpoint.rsplit("-", 1)[-1]
    shutil.rmtree(version, ignore_errors=True)
    shutil.copytree(saved, version)
    versions = sorted((p for p in tf_serving.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
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
