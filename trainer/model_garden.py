"""Every workaround for tf-models-official 2.20 (Model Garden and its Orbit), in one file.

Each one names the upstream file it patches or works around, and why. Bumping the pin
means reading this file and checking each against the new version's file; tests/test_train.py,
test_export.py and test_rehearsal.py (multi-worker) run them (Faster R-CNN's serving only
in a real export of one). Patches are idempotent and applied by their callers at the
moment they are needed: train applies the COCO-evaluation and Orbit ones before training (and its
input pipeline the RetinaNet training parser and the accurate validation decoding ones),
export the upsampling one around building its mobile network.
"""
import contextlib
from pathlib import Path


def experiments():
    """Model Garden's experiment factory and hyperparams, with the vision experiments registered.

    exp_factory (official/core/exp_factory.py) knows retinanet_*, fasterrcnn_* and the
    classifiers only once official/vision/registry_imports.py has been imported, for its
    side effect; nothing says so when it has not (an unknown experiment name).
    """
    from official.core import exp_factory
    from official.modeling import hyperparams
    from official.vision import registry_imports  # noqa: F401  (registers retinanet_*, fasterrcnn_*, ...)

    return exp_factory, hyperparams


def tuples_as_lists(settings):
    """The override that turns every tuple in SETTINGS (a nested dict) into a list.

    Model Garden's classifier defaults hold tuples (crop_area_range, official/vision/configs/
    image_classification.py), which its YAML writer (official/modeling/hyperparams/params_dict.py,
    save_params_dict_to_yaml) saves as `!!python/tuple`: no safe YAML loader reads that, so
    params.yaml would be unreadable to every tool but Model Garden.
    """
    found = {}
    for key, value in settings.items():
        if isinstance(value, tuple):
            found[key] = list(value)
        elif isinstance(value, dict) and (inner := tuples_as_lists(value)):
            found[key] = inner
    return found


def quiet_orbit():
    """Keep Orbit's per-loop messages in the absl log only (orbit/controller.py, `_log`).

    Orbit both logs and prints every loop's whole output dict, validation images
    included as pixel arrays; train's progress and evaluation lines replace the prints.
    """
    from orbit import controller

    controller.print = lambda *args, **kwargs: None


def patch_coco_evaluation():
    """Two narrow fixes to Model Garden 2.20's COCO evaluation, applied to its modules, idempotently.

    1. NumPy 2 (official/vision/evaluation/coco_utils.py): RetinaNet's parser gives each
       image's `num_detections` as a 1-element array (tf.shape, not tf.shape()[0]), and
       coco_utils.convert_groundtruths_to_coco_dataset calls int() on it, which NumPy >= 2
       refuses. We flatten it to one count per image before the conversion; nothing else changes.
    2. Per-class AP (official/vision/evaluation/coco_evaluator.py): COCOEvaluator(per_category_metrics=True)
       reads `category_stats` from the COCOeval it runs, which only a fork of pycocotools has; stock
       pycocotools has none and per-class metrics silently come out empty. We give the
       evaluator a COCOeval subclass that computes the table from COCOeval.eval.
    """
    import numpy as np
    from official.vision.evaluation import coco_evaluator, coco_utils
    from pycocotools import cocoeval

    convert = coco_utils.convert_groundtruths_to_coco_dataset
    if getattr(convert, "flattens_num_detections", False):
        return

    def convert_groundtruths_to_coco_dataset(groundtruths, label_map=None):
        counts = [np.reshape(batch, [-1]) for batch in groundtruths["num_detections"]]
        return convert({**groundtruths, "num_detections": counts}, label_map)

    convert_groundtruths_to_coco_dataset.flattens_num_detections = True
    coco_utils.convert_groundtruths_to_coco_dataset = convert_groundtruths_to_coco_dataset

    class COCOevalWithCategoryStats(cocoeval.COCOeval):
        """COCOeval that also sets category_stats[metric][category], metrics in COCOeval.stats order."""

        def summarize(self):
            super().summarize()
            one, ten, most = self.params.maxDets
            specs = [(True, None, "all", most), (True, 0.5, "all", most), (True, 0.75, "all", most),
                     (True, None, "small", most), (True, None, "medium", most), (True, None, "large", most),
                     (False, None, "all", one), (False, None, "all", ten), (False, None, "all", most),
                     (False, None, "small", most), (False, None, "medium", most), (False, None, "large", most)]
            categories = range(len(self.params.catIds))
            self.category_stats = np.array([[self._category_stat(*spec, k) for k in categories] for spec in specs])

        def _category_stat(self, is_precision, iou, area, max_dets, category):
            """Like COCOeval.summarize's mean over valid entries (-1 when none), for one category."""
            p = self.params
            a, m = p.areaRngLbl.index(area), p.maxDets.index(max_dets)
            if is_precision:
                table = self.eval["precision"][:, :, category, a, m]  # [iou, recall]
            else:
                table = self.eval["recall"][:, category, a, m]  # [iou]
            if iou is not None:
                table = table[np.isclose(p.iouThrs, iou)]
            valid = table[table > -1]
            return valid.mean() if valid.size else -1.0

    coco_evaluator.cocoeval = type("cocoeval", (), {"COCOeval": COCOevalWithCategoryStats})


@contextlib.contextmanager
def worker_resumes(strategy, model_dir, last_step):
    """On a non-chief worker, make Model Garden's runner restore the chief's ckpt-LAST_STEP.

    Model Garden 2.20's train_lib (official/core/train_lib.py, OrbitExperimentRunner) gives
    non-chief workers a fresh tempfile.mkdtemp() checkpoint folder, so a restarted worker
    initialised from scratch at step 0 while the chief restored ckpt-N, and their
    collectives then mismatched (seen in the multi-worker rehearsal). The worker's folder
    starts as a copy of ckpt-N instead.
    """
    from official.core import train_lib

    if strategy.extended.should_checkpoint or last_step is None:
        yield
        return
    import shutil
    import tempfile
    import types

    folder = tempfile.mkdtemp(prefix="worker-checkpoint-")
    for path in model_dir.glob(f"ckpt-{last_step}.*"):
        shutil.copyfile(path, Path(folder) / path.name)
    (Path(folder) / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{last_step}"\n'
                                             f'all_model_checkpoint_paths: "ckpt-{last_step}"\n')
    train_lib.tempfile = types.SimpleNamespace(mkdtemp=lambda: folder)
    try:
        yield
    finally:
        train_lib.tempfile = tempfile


# A RetinaNet's detections go down to this score, in training's evaluation and in every export: apps and
# `trainer predict` apply their own minimum score, and the evaluation that picks the best checkpoint scores what
# the exports return (DetectionGenerator's default 0.05 gave the same checkpoint an AP up to 0.04 apart).
SCORE_THRESHOLD = 0.001


def is_retinanet(params):
    """Whether PARAMS (an ExperimentConfig) is a RetinaNet's, whose detections portable_detections sets."""
    from official.vision.configs import retinanet

    return isinstance(params.task.model, retinanet.RetinaNet)


def portable_detections(params):
    """Set a RetinaNet's PARAMS to serve detections every runtime reads alike.

    The defaults of official/vision/configs/retinanet.py are changed: NMS `v2` (plain TF
    ops that TF Serving and TF.js both run, at any batch size; official/vision/serving/
    detection.py switches the versions that need a fixed batch to `batched`), scores
    down to SCORE_THRESHOLD and boxes normalised to 0..1 (ExportConfig's default is pixels
    of the resized input). config sets it in params.yaml, so training evaluates the same
    detections; export sets it again for runs configured before.
    """
    generator = params.task.model.detection_generator
    generator.pre_nms_score_threshold = SCORE_THRESHOLD
    generator.nms_version = "v2"
    params.task.export_config.output_normalized_coordinates = True


def stretching_classifier(params, input_size):
    """Model Garden's ClassificationModule, resizing the whole image to the square INPUT_SIZE (no centre crop).

    Its own serving (official/vision/serving/image_classification.py) centre-crops whenever
    training used random crops; evaluation and every other format stretch (the input
    contract), so the SavedModel does too.
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

    return StretchingClassifier(params=params, batch_size=None, input_image_size=list(input_size),
                                input_type="image_tensor")


def normalized_boxes(params, input_size):
    """A DetectionModule whose boxes are 0..1 of the input image, as RetinaNet's are.

    Model Garden (official/vision/serving/detection.py) normalises RetinaNet's boxes only;
    Faster R-CNN's come out in pixels of the resized input. Its serving resize keeps the
    aspect ratio, scaling the image to round(size * scale), so dividing by that size gives
    the fraction of the image.
    """
    import tensorflow as tf
    from official.vision.serving import detection

    height, width = input_size

    class NormalizedBoxes(detection.DetectionModule):
        def serve(self, images):
            outputs = super().serve(images)
            size = tf.cast(tf.shape(images)[1:3], tf.float32)
            scaled = tf.round(size * tf.minimum(height / size[0], width / size[1]))
            outputs["detection_boxes"] = tf.clip_by_value(
                outputs["detection_boxes"] / tf.tile(scaled, [2]), 0.0, 1.0)
            return outputs

    return NormalizedBoxes(params=params, batch_size=None, input_image_size=[height, width],
                           input_type="image_tensor")


@contextlib.contextmanager
def retinanet_training_parser(parser_class):
    """While the block runs, official/vision/tasks/retinanet.py's `build_inputs` builds PARSER_CLASS.

    That method constructs `retinanet_input.Parser` itself, with no setting for another
    parser (nor a working `resize_first`: its graph fails, image_info being set in one branch);
    trainer/input_pipeline.py's parser takes the same arguments.
    """
    from unittest import mock

    from official.vision.dataloaders import retinanet_input

    with mock.patch.object(retinanet_input, "Parser", parser_class):
        yield


@contextlib.contextmanager
def training_records_decoded_once():
    """While the block runs, a training `InputReader` decodes each record once and keeps it in memory.

    official/core/input_reader.py repeats the (shuffled) record files before decoding, so every epoch decodes
    every JPEG again (on kangaroo, a third of the default model's input CPU); its `cache` option caches after the
    parser, so every epoch would repeat the first one's random crops and flips. Here the records are read once
    (`_read_data_source` as it reads them for `cache`: files shuffled once, not repeated), decoded by the reader's
    decoder, cached and repeated; the reader's own record shuffle, parser, batching and tf.data service then run on
    those as on decoded records. Readers of evaluation data are left alone.
    """
    from unittest import mock

    import tensorflow as tf
    from official.core import input_reader

    read = input_reader.InputReader.read

    def read_decoded_once(reader, input_context=None, dataset=None):
        if dataset is not None or not reader._is_training or reader._cache or reader._decoder_fn is None:
            return read(reader, input_context, dataset)
        reader._cache = True  # what makes _read_data_source read the files once
        try:
            records = reader._read_data_source(reader._matched_files, reader._dataset_fn, input_context)
        finally:
            reader._cache = False
        decoded = records.map(reader._decoder_fn, num_parallel_calls=tf.data.AUTOTUNE).cache().repeat()
        decoder, reader._decoder_fn = reader._decoder_fn, None
        try:
            return read(reader, input_context, decoded)
        finally:
            reader._decoder_fn = decoder

    with mock.patch.object(input_reader.InputReader, "read", read_decoded_once):
        yield


@contextlib.contextmanager
def accurate_jpeg_decoding():
    """While the block runs, Model Garden's detection and classification decoders decode JPEGs as apps do.

    They call `tf.io.decode_image`, whose JPEGs get TF's default fast integer IDCT. Pillow (the
    export evaluation and predict), browsers and phones use libjpeg's accurate one: on kangaroo
    2 in 3 pixel values differ, by up to 24 levels, and an evaluation of the fast decode scored
    the best checkpoint 0.0065 AP off what its SavedModel scores on the same records. Records
    always hold JPEGs (trainer/images.py). The decoded image goes to the parsers, which take
    decoded pixels as they take bytes (retinanet_input.py, classification_input.py).
    """
    from unittest import mock

    from official.vision.dataloaders import classification_input, tf_example_decoder

    detection, classification = _decoder_classes()
    with mock.patch.object(tf_example_decoder, "TfExampleDecoder", detection), \
            mock.patch.object(classification_input, "Decoder", classification):
        yield


def _decoded_accurately(encoded):
    import tensorflow as tf

    return tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE")


def _decoder_classes():
    """(detection, classification) decoders: Model Garden's, decoding with `_decoded_accurately`."""
    from official.vision.dataloaders import classification_input, tf_example_decoder

    class AccurateDetectionDecoder(tf_example_decoder.TfExampleDecoder):
        def _decode_image(self, parsed_tensors):
            return _decoded_accurately(parsed_tensors["image/encoded"])

    class AccurateClassificationDecoder(classification_input.Decoder):
        def __init__(self, image_field_key=classification_input.DEFAULT_IMAGE_FIELD_KEY, **kwargs):
            super().__init__(image_field_key=image_field_key, **kwargs)
            self._image_field_key = image_field_key

        def decode(self, serialized_example):
            decoded = super().decode(serialized_example)
            return {**decoded, self._image_field_key: _decoded_accurately(decoded[self._image_field_key])}

    return AccurateDetectionDecoder, AccurateClassificationDecoder


@contextlib.contextmanager
def rank5_upsampling():
    """While the block runs, official/vision/ops/spatial_transform_ops.py's nearest_upsampling is rank 5.

    Model Garden upsamples by a rank-6 reshape (FPN, SpineNet-Mobile) and Core ML's layers
    stop at rank 5. Its own switches to Keras' UpSampling2D add fewer layers and so
    reorder the model's layers and weights (and the checkpoint's numbering); this variant
    makes the same number of ops in the same places, so the weights copy over in order.
    """
    from unittest import mock

    from official.vision.ops import spatial_transform_ops

    with mock.patch.object(spatial_transform_ops, "nearest_upsampling", _upsample_rank5):
        yield


def _upsample_rank5(data, scale, use_keras_layer=False):
    """`spatial_transform_ops.nearest_upsampling` with batch and height merged: rank 5, the same ops.

    [b, h, 1, w, 1, c] tiled is laid out in memory as [b * h, 1, w, 1, c] tiled.
    """
    import tensorflow as tf

    if use_keras_layer:  # a model configured with Keras' UpSampling2D: already rank 4
        import tf_keras

        return tf_keras.layers.UpSampling2D(size=(scale, scale), interpolation="nearest")(data)
    batch, _, _, channels = data.get_shape().as_list()
    shape = tf.shape(input=data)
    height = shape[1]
    width = shape[2]
    data = tf.tile(tf.reshape(data, [-1, 1, width, 1, channels]), [1, scale, 1, scale, 1])
    return tf.reshape(data, [-1 if batch is None else batch, height * scale, width * scale, channels])
