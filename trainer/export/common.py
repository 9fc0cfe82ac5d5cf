"""What every format's writer shares: the run being exported, the float32 policy, labels, the mobile network."""
import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer import model_garden, tasks
from trainer.best import checkpoint_to_export
from trainer.errors import UserError
from trainer.run_dir import Experiment, RunDir, StageMissing, load_labels, write_labels as write_labels_file

class NotEvaluated(Exception):
    """A format's runtime is not on this machine (e.g. no Node.js for TF.js): written, but not evaluated."""


@dataclass
class Job:
    """One export: RESULT_DIR, the checkpoint it exports (the best evaluation's, see `checkpoint_to_export`) and
    its labels, the params with export settings, the catalogue entry."""
    result_dir: Path
    checkpoint: str
    labels: list
    params: object       # Model Garden ExperimentConfig (see `load_params`)
    model: str           # catalogue name, from experiment.json
    unsupported: dict    # {format: why this model cannot have it}, from the catalogue's `export.unsupported`
    task: str = "detection"  # or "classification", from experiment.json
    keep_versions: int = 3
    checkpoint_name: str = ""  # CHECKPOINT relative to model/: best/ckpt-N or ckpt-N (export.json's `checkpoint`)
    built: dict = field(default_factory=dict, repr=False)  # the restored network, built once for all formats

    @property
    def input_size(self):
        """(height, width) of the network's square input."""
        return tuple(self.params.task.model.input_size[:2])

    @property
    def is_retinanet(self):
        return model_garden.is_retinanet(self.params)


def load_job(result_dir, keep_versions=3):
    """The Job for RESULT_DIR; a UserError names the earlier stage whose output is missing."""
    import tensorflow as tf

    from trainer import catalogue

    result_dir = Path(result_dir)
    run = RunDir(result_dir)
    checkpoint, name = checkpoint_to_export(result_dir, tf.train.latest_checkpoint(str(run.model)))
    labels = load_labels(run)
    params = load_params(result_dir)
    record = Experiment.load(run)
    task = record.task
    background = tasks.get(task).FIRST_LABEL_ID
    if params.task.model.num_classes != len(labels) + background:
        raise UserError(f"params.yaml has num_classes {params.task.model.num_classes} but data/labels.json "
                        f"has {len(labels)} labels (a {task} model has {'labels + 1' if background else 'labels'})")
    unsupported = catalogue.load_model(record.model).export.unsupported
    return Job(result_dir, checkpoint, labels, params, record.model, dict(unsupported), task=task,
               keep_versions=keep_versions, checkpoint_name=name)


def load_params(result_dir):
    """params.yaml (via `trainer.config.load_params`), with the detection settings of the exports.

    RetinaNet's SavedModel uses NMS `v2` (plain TF ops that TF Serving and TF.js both run,
    any batch size), scores down to SCORE_THRESHOLD and normalised boxes; the TFLite
    model's NMS (serving/detection.py) uses the same thresholds, per class.
    """
    from trainer.config import load_params as load

    run = RunDir(result_dir)
    if not run.params.is_file():
        raise StageMissing(run.params, "config", result_dir)
    params = load(result_dir)
    if model_garden.is_retinanet(params):
        model_garden.portable_detections(params)
    return params


@contextlib.contextmanager
def float32_policy():
    """Build models in float32 whatever Keras policy training left set (mixed_float16 on GPUs), then restore it.

    Model Garden's `performance.set_mixed_precision_policy` sets tf_keras' global policy;
    layers built under it compute in float16 and TFLite cannot convert them.
    """
    import tf_keras

    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


def write_labels(folder, labels):
    folder.mkdir(parents=True, exist_ok=True)
    write_labels_file(folder, labels, newline=False)


def size_of(path):
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def stretch(image, size):
    """IMAGE resized to SIZE (height, width) ignoring its aspect ratio, bilinear: what the TFLite Task
    Library, MediaPipe and Vision's scaleFill do before running a square-input model."""
    from PIL import Image

    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def record_images(result_dir, split, limit=-1):
    """The decoded RGB uint8 images of data/SPLIT-*.tfrecord (the first LIMIT), one at a time: a split
    decoded whole holds width x height x 3 bytes per image."""
    import tensorflow as tf

    files = [str(p) for p in RunDir(result_dir).records(split)]
    feature = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    for record in tf.data.TFRecordDataset(files).take(limit) if files else []:
        yield decoded(tf.io.parse_single_example(record, feature)["image/encoded"].numpy())


def decoded(encoded):
    """An encoded image as an RGB uint8 array, as every format's evaluation is fed."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))


def classifier(job):
    """The trained classifier for the mobile formats: (function, model).

    FUNCTION maps float RGB pixels [1, H, W, 3] at the model's input size to class
    probabilities [1, classes] (softmax), normalising as Model Garden's classification
    input and serving do, so apps feed plain pixels of the image stretched to the input.
    Built once per export; every weight must come from the checkpoint.
    """
    if "classifier" not in job.built:
        import tensorflow as tf
        import tf_keras
        from official.vision.modeling import factory
        from official.vision.ops import preprocess_ops

        height, width = job.input_size
        model = factory.build_classification_model(
            input_specs=tf_keras.layers.InputSpec(shape=[1, height, width, 3]), model_config=job.params.task.model,
            l2_regularizer=None)
        model(tf.zeros([1, height, width, 3]), training=False)  # creates the variables
        tf.train.Checkpoint(model=model).read(job.checkpoint).assert_existing_objects_matched().expect_partial()

        def run(pixels):
            image = preprocess_ops.normalize_image(pixels[0], offset=preprocess_ops.MEAN_RGB,
                                                   scale=preprocess_ops.STDDEV_RGB)
            return tf.nn.softmax(tf.cast(model(image[None], training=False), tf.float32))

        job.built["classifier"] = run, model
    return job.built["classifier"]


def core_ml_convert(function, input_size, **options):
    """FUNCTION (a tf.function of float RGB [1, H, W, 3] at INPUT_SIZE) as a Core ML neural network whose input
    `image` is an image (what Vision feeds); OPTIONS go to coremltools' `convert`."""
    import coremltools as ct

    height, width = input_size
    return ct.convert([function.get_concrete_function()], source="tensorflow", convert_to="neuralnetwork",
                      inputs=[ct.ImageType(name="image", shape=(1, height, width, 3))], **options)


def require_retinanet(job, name):
    if not job.is_retinanet:
        raise UserError(f"{name} export supports RetinaNet models only; declare it under `export: unsupported:` "
                        f"in configs/models/{job.model}.yaml")


def network(job):
    """The trained RetinaNet up to its NMS, for the mobile formats: (function, model, number of boxes).

    FUNCTION maps float RGB pixels [1, H, W, 3] at the model's input size to (class
    probabilities [N, classes] (sigmoid, background dropped), boxes [N, 4] as ymin, xmin,
    ymax, xmax in 0..1, clipped to the image as the SavedModel's are before its NMS).
    It normalises and zero-pads as the SavedModel's preprocessing does, so apps feed plain
    pixels. MODEL holds the weights (converters need it to find them). Nearest upsampling
    is rank 5 (see `_rank5_upsampling`). Built once per export.
    """
    if "network" not in job.built:
        job.built["network"] = _network(job)
    return job.built["network"]


def _network(job):
    import tensorflow as tf
    from official.vision.ops import box_ops

    height, width = job.input_size
    trained, anchors = _built_model(job.params, job.input_size)
    # Every model weight must come from the checkpoint (its optimizer slots are not needed).
    tf.train.Checkpoint(model=trained).read(job.checkpoint).assert_existing_objects_matched().expect_partial()
    model = _rank5_upsampling(job.params, job.input_size, trained)
    weights = job.params.task.model.detection_generator.box_coder_weights
    anchors = tf.concat([tf.reshape(value, [-1, 4]) for value in anchors.values()], 0)
    foreground = job.params.task.model.num_classes - 1

    def run(pixels):
        scores, boxes = _raw_outputs(model, job.params, job.input_size, pixels)
        scores = tf.concat([tf.reshape(value, [-1, foreground]) for value in scores.values()], 0)
        boxes = tf.concat([tf.reshape(value, [-1, 4]) for value in boxes.values()], 0)
        boxes = box_ops.clip_boxes(box_ops.decode_boxes(boxes, anchors, weights=weights), [height, width])
        return tf.sigmoid(scores), boxes / [height, width, height, width]

    return run, model, int(anchors.shape[0])


def _built_model(params, size):
    """(RetinaNet model with its variables created, anchors per level) for a batch of 1 at SIZE."""
    import tensorflow as tf
    from official.vision.serving import detection

    module = detection.DetectionModule(params=params, batch_size=1, input_image_size=list(size), input_type="tflite")
    _raw_outputs(module.model, params, size, tf.zeros([1, *size, 3]))  # creates (and restores) the variables
    return module.model, module._build_anchor_boxes()  # pylint: disable=protected-access


def _raw_outputs(model, params, size, pixels):
    """Per-level foreground class logits and encoded boxes of MODEL for float RGB PIXELS [1, *SIZE, 3]."""
    import tensorflow as tf
    from official.vision.ops import preprocess_ops

    stride = 2 ** params.task.model.max_level  # the SavedModel pads to a multiple of the coarsest stride
    padded = [-(-side // stride) * stride for side in size]
    image = preprocess_ops.normalize_image(pixels, offset=preprocess_ops.MEAN_RGB, scale=preprocess_ops.STDDEV_RGB)
    image = tf.pad(image, [[0, 0], [0, padded[0] - size[0]], [0, padded[1] - size[1]], [0, 0]])
    features = model.backbone(image, training=False)
    features = model.decoder(features, training=False) if model.decoder else features
    scores, boxes, _ = model.head(features, training=False)
    # Column 0 of the class scores is RetinaNet's background, which its TF NMS skips
    # (Model Garden's TFLite NMS path keeps it, and TFLite's op would return it as class 0).
    num_classes = params.task.model.num_classes
    scores = {level: tf.reshape(tf.reshape(value, [*value.shape[:3], -1, num_classes])[..., 1:],
                                [*value.shape[:3], -1]) for level, value in scores.items()}
    return scores, boxes


def _rank5_upsampling(params, size, trained):
    """TRAINED rebuilt with a rank-5 nearest upsampling (`model_garden.rank5_upsampling`: Core ML's layers
    stop at rank 5), with the same weights. The two models are checked to give the same outputs.
    """
    import numpy as np
    import tensorflow as tf

    with model_garden.rank5_upsampling():
        model, _ = _built_model(params, size)
    for part in ("backbone", "decoder", "head"):
        source, target = getattr(trained, part), getattr(model, part)
        if source is None:
            continue
        if [w.shape for w in source.weights] != [w.shape for w in target.weights]:
            raise RuntimeError(f"the {part} with rank-5 upsampling has other weights than the trained one")
        target.set_weights(source.get_weights())
    probe = tf.random.stateless_uniform([1, *size, 3], seed=(1, 2), maxval=255.0)
    expected, got = _raw_outputs(trained, params, size, probe), _raw_outputs(model, params, size, probe)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(tf.nest.flatten(expected), tf.nest.flatten(got)))
    if worst > 1e-4:
        raise RuntimeError(f"the network with rank-5 upsampling differs from the trained one by {worst}")
    return model


def write_raw_images(images, folder):
    """IMAGES (RGB uint8 arrays) as raw files in FOLDER, listed in FOLDER/images.json ({"path", "shape"} each), as the
    external runtimes' runners (Node for TF.js, MediaPipe's own Python) read them; returns the listing's path."""
    listing = []
    for index, image in enumerate(images):
        raw = Path(folder) / f"{index}.rgb"
        raw.write_bytes(np.ascontiguousarray(image, np.uint8).tobytes())
        listing.append({"path": str(raw), "shape": list(image.shape)})
    (Path(folder) / "images.json").write_text(json.dumps(listing))
    return Path(folder) / "images.json"
