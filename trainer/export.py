"""Stage 5, export: the last checkpoint -> SavedModel, TFLite, TF.js and Core ML, each checked.

Every format is written beside its `labels.json` and checked right away in its own
runtime against the SavedModel on validation images, so a broken conversion is
found here and not on a user's phone. A SavedModel failure raises; a failure of
another format is recorded in the result (the job reports CONVERSION-FAILED) and
the other formats still get written.
"""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from trainer import console
from trainer.errors import UserError

FORMATS = ("saved_model", "tflite", "tfjs", "coreml")
CONVERSION_FAILED_EXIT = 3  # a conversion failed, the rest worked: start.sh prints CACLI-CONVERSION-FAILED, exits 0
QUANTIZE = ("none", "fp16", "int8")
# Exported models return up to max_num_detections boxes down to this score; apps
# and `trainer predict` apply their own minimum score.
SCORE_THRESHOLD = 0.001
TOLERANCE = 0.02         # fp32 conversions: top boxes and scores within this of the SavedModel's
TOP_DETECTIONS = 5       # how many of the SavedModel's best detections per image are compared
COREML_CONFIDENCE = 0.25  # the Core ML model's default minimum score (an input apps may set)
CHECK_IMAGES = 4         # validation images each export is run on
CALIBRATION_IMAGES = 100  # training images for int8 calibration
# The TF.js converter imports TF Decision Forests, TF Hub and JAX at module level;
# their pins conflict with ours and the SavedModel -> graph model path never uses
# them, so the converter runs in a child process with empty stand-ins for them.
_TFJS_CONVERTER = """
import sys, types
for name in ("tensorflow_decision_forests", "tensorflow_hub", "tensorflowjs.converters.jax_conversion"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["tensorflowjs.converters.jax_conversion"].convert_jax = None
from tensorflowjs.converters.tf_saved_model_conversion_v2 import convert_tf_saved_model
convert_tf_saved_model(sys.argv[1], sys.argv[2], signature_def="serving_default",
                       saved_model_tags="serve", strip_debug_ops=True)
"""


def export(result_dir, formats=FORMATS, quantize="none", keep_versions=3):
    """Export RESULT_DIR's last checkpoint; {format: {"path", "bytes"} or {"error"}}.

    Formats already exported from the same checkpoint (and quantisation) are kept.
    """
    result_dir = Path(result_dir)
    unknown = set(formats) - set(FORMATS)
    if unknown or quantize not in QUANTIZE:
        raise UserError(f"unknown format or quantisation {sorted(unknown) or quantize!r}; "
                        f"formats: {', '.join(FORMATS)}; quantize: {', '.join(QUANTIZE)}")
    checkpoint = _last_checkpoint(result_dir)
    labels = _labels(result_dir)
    params = _params(result_dir)
    if params.task.model.num_classes != len(labels) + 1:
        raise UserError(f"params.yaml has num_classes {params.task.model.num_classes} but data/labels.json "
                        f"has {len(labels)} labels (num_classes counts background: labels + 1)")
    manifest_path = result_dir / "model_export" / "export.json"
    done = _reusable(result_dir, manifest_path, checkpoint, quantize)
    results = {name: done[name] for name in ("saved_model", *formats) if name in done}
    for name in results:
        console.say(f"export: {name}: up to date ({results[name]['path']})")
    todo = [name for name in formats if name not in results and name != "saved_model"]
    if "saved_model" not in results:
        _step("saved_model", lambda: _export_saved_model(result_dir, checkpoint, labels, keep_versions), results)
    if todo:
        _export_others(result_dir, params, checkpoint, labels, quantize, todo, results)
    if "tflite" in results:
        results["tflite"]["quantize"] = quantize
    if todo or "saved_model" not in done:  # an up-to-date rerun leaves every file as it was
        manifest = {"checkpoint": Path(checkpoint).name, "results": {
            name: {**r, "path": str(Path(r["path"]).relative_to(result_dir))} if "path" in r else r
            for name, r in {**done, **results}.items()}}
        manifest_path.write_text(json.dumps(manifest, indent=2))
    return results


def _export_others(result_dir, params, checkpoint, labels, quantize, formats, results):
    """Convert to FORMATS, checking each against the SavedModel on a few validation images."""
    from trainer.predict import load_detector

    size = params.task.model.input_size[:2]
    images = _record_images(result_dir, "val", size, CHECK_IMAGES) or _record_images(result_dir, "train", size, CHECK_IMAGES)
    if not images:
        raise UserError(f"no images in {result_dir}/data/val-*.tfrecord or train-*.tfrecord to check the exports on")
    saved_model = result_dir / "model_export" / "saved_model"
    reference = [load_detector(saved_model)(image) for image in images]
    writers = {"tflite": lambda: _export_tflite(result_dir, checkpoint, labels, quantize, images, reference),
               "tfjs": lambda: _export_tfjs(result_dir, saved_model, labels),
               "coreml": lambda: _export_coreml(result_dir, checkpoint, labels)}
    for name in formats:
        _step(name, writers[name], results)


def _step(name, write, results):
    """Run one format's writer and record its output path and size, or why it failed."""
    console.say(f"export: {name} ...")
    start = time.time()
    try:
        path = write()
    except Exception as err:  # recorded: a conversion failure must not stop the other formats
        if name == "saved_model":  # ... but without a SavedModel there is nothing to serve or convert
            raise
        results[name] = {"error": f"{type(err).__name__}: {err}".strip().splitlines()[-1][:500]}
        console.say(f"export: {name} FAILED: {results[name]['error']}", error=True)
        return
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    results[name] = {"path": str(path), "bytes": size}
    console.say(f"export: {name}: {path} ({size / 1e6:.1f} MB, {time.time() - start:.0f} s)")


def _reusable(result_dir, manifest_path, checkpoint, quantize):
    """The formats a previous export wrote from this checkpoint (TFLite: and quantisation), still on disk."""
    if not manifest_path.is_file():
        return {}
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("checkpoint") != Path(checkpoint).name:
        return {}
    done = {name: {**r, "path": str(result_dir / r["path"])} for name, r in manifest["results"].items()
            if "path" in r and (result_dir / r["path"]).exists()}
    if done.get("tflite", {}).get("quantize") != quantize:
        done.pop("tflite", None)
    return done


def _last_checkpoint(result_dir):
    import tensorflow as tf

    checkpoint = tf.train.latest_checkpoint(str(result_dir / "model"))
    if not checkpoint:
        raise UserError(f"no checkpoint in {result_dir}/model: run `trainer train` first")
    return checkpoint


def _labels(result_dir):
    path = result_dir / "data" / "labels.json"
    if not path.is_file():
        raise UserError(f"{path} is missing: run `trainer prepare` first")
    return json.loads(path.read_text())


def _params(result_dir):
    """params.yaml (via `trainer.config.load_params`), with the detection settings of the exports.

    RetinaNet's SavedModel uses NMS `v2` (plain TF ops that TF Serving and TF.js both run,
    any batch size) and normalised boxes; the TFLite model uses TFLite's detection
    post-processing op with the same thresholds and per-class NMS, so both return the
    same detections.
    """
    from official.vision.configs import retinanet
    from trainer.config import load_params

    if not (result_dir / "params.yaml").is_file():
        raise UserError(f"{result_dir / 'params.yaml'} is missing: run `trainer config` first")
    params = load_params(result_dir)
    if isinstance(params.task.model, retinanet.RetinaNet):
        generator = params.task.model.detection_generator
        generator.pre_nms_score_threshold = SCORE_THRESHOLD
        generator.nms_version = "v2"
        generator.tflite_post_processing.override({
            "max_detections": generator.max_num_detections,
            "detections_per_class": generator.max_num_detections,
            "max_classes_per_detection": 1,
            "use_regular_nms": True,
            "nms_score_threshold": SCORE_THRESHOLD,
            "nms_iou_threshold": generator.nms_iou_threshold,
        })
        params.task.export_config.output_normalized_coordinates = True
    return params


def _require_retinanet(params):
    from official.vision.configs import retinanet

    if not isinstance(params.task.model, retinanet.RetinaNet):
        raise NotImplementedError(f"this conversion supports RetinaNet models, not {type(params.task.model).__name__}")


def _write_labels(folder, labels):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.json").write_text(json.dumps(labels, ensure_ascii=False))


def _export_saved_model(result_dir, checkpoint, labels, keep_versions):
    """model_export/saved_model, and a copy as model_export/serving/NAME/STEP for TF Serving."""
    import tensorflow as tf
    from official.vision.serving import export_saved_model_lib

    params = _params(result_dir)
    out = result_dir / "model_export"
    shutil.rmtree(out / "saved_model", ignore_errors=True)
    export_saved_model_lib.export_inference_graph(
        input_type="image_tensor", batch_size=None, input_image_size=params.task.model.input_size[:2],
        params=params, checkpoint_path=checkpoint, export_dir=str(out), export_saved_model_subdir="saved_model")
    _write_labels(out, labels)
    # Loading it back in TF is the SavedModel's own check; it is the reference for the others.
    tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]

    name = json.loads((result_dir / "experiment.json").read_text())["model"]  # the catalogue name
    serving = out / "serving" / name
    version = serving / checkpoint.rsplit("-", 1)[-1]
    shutil.rmtree(version, ignore_errors=True)
    shutil.copytree(out / "saved_model", version)
    versions = sorted((p for p in serving.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for old in versions[:-keep_versions]:
        shutil.rmtree(old)
    return out / "saved_model"


def _network(result_dir, checkpoint):
    """The trained RetinaNet without its NMS, for the mobile formats.

    Returns (params, model, anchors, network): NETWORK maps float RGB pixels [1, H, W, 3] to
    per-level (foreground class logits, encoded boxes); ANCHORS are per level, in pixels.
    It normalises and zero-pads as the SavedModel's preprocessing does, so apps feed plain
    pixels at the model's input size.
    """
    import tensorflow as tf
    from official.vision.ops import box_ops, preprocess_ops
    from official.vision.serving import detection

    params = _params(result_dir)
    _require_retinanet(params)
    # Keras' UpSampling2D instead of Model Garden's rank-6 reshape trick in the FPN: the same
    # nearest upsampling without weights, but Core ML's layers stop at rank 5. (SpineNet's
    # equivalent switch changes its checkpoint layout, so it stays as trained.)
    if params.task.model.decoder.type == "fpn":
        params.task.model.decoder.fpn.use_keras_layer = True
    height, width = params.task.model.input_size[:2]
    module = detection.DetectionModule(params=params, batch_size=1, input_image_size=[height, width],
                                       input_type="tflite")
    model = module.model
    # Every model weight must come from the checkpoint (its optimizer slots are not needed).
    tf.train.Checkpoint(model=model).read(checkpoint).assert_existing_objects_matched().expect_partial()
    padded_height, padded_width = module._padded_size  # the size the network was built for
    num_classes = params.task.model.num_classes

    def network(pixels):
        image = preprocess_ops.normalize_image(pixels, offset=preprocess_ops.MEAN_RGB, scale=preprocess_ops.STDDEV_RGB)
        image = tf.pad(image, [[0, 0], [0, padded_height - height], [0, padded_width - width], [0, 0]])
        features = model.backbone(image, training=False)
        features = model.decoder(features, training=False) if model.decoder else features
        scores, boxes, _ = model.head(features, training=False)
        # Column 0 of the class scores is RetinaNet's background, which its TF NMS skips.
        # (Model Garden's TFLite NMS path keeps it, so TFLite's post-processing op returns
        # background boxes as class 0; dropping it here avoids that.)
        scores = {level: tf.reshape(tf.reshape(value, [*value.shape[:3], -1, num_classes])[..., 1:],
                                    [*value.shape[:3], -1]) for level, value in scores.items()}
        return scores, boxes

    anchors = module._build_anchor_boxes()
    weights = params.task.model.detection_generator.box_coder_weights

    def clipped_network(pixels):
        # The SavedModel clips decoded boxes to the image before NMS; TFLite's post-processing
        # op and Core ML decode inside, unclipped, so NMS would keep other boxes. Clip here and
        # encode back against the same anchors: they then decode to the SavedModel's boxes.
        scores, boxes = network(pixels)
        clipped = {}
        for level, encoded in boxes.items():
            level_anchors = tf.reshape(anchors[level], [-1, 4])
            decoded = box_ops.decode_boxes(tf.reshape(encoded, [-1, 4]), level_anchors, weights)
            recoded = box_ops.encode_boxes(box_ops.clip_boxes(decoded, [height, width]), level_anchors, weights)
            clipped[level] = tf.reshape(recoded, tf.shape(encoded))
        return scores, clipped

    return params, model, anchors, clipped_network


def _export_tflite(result_dir, checkpoint, labels, quantize, images, reference):
    """model_android/model.tflite: uint8 [1, H, W, 3] in; normalised boxes, label ids, scores and count out."""
    import tensorflow as tf
    from official.vision.modeling.layers import detection_generator
    from trainer.predict import load_detector

    params, model, anchors, network = _network(result_dir, checkpoint)
    height, width = params.task.model.input_size[:2]
    generator = params.task.model.detection_generator

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.uint8, name="image")])
    def serve(image):
        scores, boxes = network(tf.cast(image, tf.float32))
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
        calibration = _record_images(result_dir, "train", (height, width), CALIBRATION_IMAGES)
        if not calibration:
            raise UserError(f"no images in {result_dir}/data/train-*.tfrecord to calibrate int8 quantisation with")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    out = result_dir / "model_android"
    _write_labels(out, labels)
    path = out / "model.tflite"
    path.write_bytes(converter.convert())

    detect = load_detector(path)
    candidate = [detect(image) for image in images]
    try:  # quantised models are only checked to run; their differences are reported, not judged
        _compare("tflite", reference, candidate, TOLERANCE if quantize == "none" else None)
    except RuntimeError:
        path.unlink()  # no app should pick up a model that disagrees with the SavedModel
        raise
    return path


def _export_tfjs(result_dir, saved_model, labels):
    """model_web/: a TF.js graph model (model.json + weight shards) converted from the SavedModel."""
    out = result_dir / "model_web"
    shutil.rmtree(out, ignore_errors=True)
    run = subprocess.run([sys.executable, "-c", _TFJS_CONVERTER, str(saved_model), str(out)],
                         capture_output=True, text=True)
    if run.returncode:
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"tensorflowjs converter: {lines[-1] if lines else run.returncode}")
    # The graph model's own loader is JavaScript (tests/js/detect.js runs it in Node); here,
    # check what it reads: the manifest and every shard at the size the manifest implies.
    manifest = json.loads((out / "model.json").read_text())
    if manifest.get("format") != "graph-model" or set(manifest["signature"]["outputs"]) < {
            "detection_boxes", "detection_scores", "detection_classes", "num_detections"}:
        raise RuntimeError("model.json is not a detection graph model")
    for group in manifest["weightsManifest"]:
        expected = sum(_tfjs_bytes(weight) for weight in group["weights"])
        actual = sum((out / name).stat().st_size for name in group["paths"])
        if expected != actual:
            raise RuntimeError(f"weight shards {group['paths']} hold {actual} bytes, model.json expects {expected}")
    _write_labels(out, labels)
    return out


def _tfjs_bytes(weight):
    itemsize = {"float32": 4, "int32": 4, "bool": 1, "uint8": 1, "uint16": 2, "float16": 2}
    dtype = weight.get("quantization", {}).get("dtype", weight["dtype"])
    return int(np.prod(weight["shape"], dtype=np.int64)) * itemsize[dtype]


def _export_coreml(result_dir, checkpoint, labels):
    """model_ios/Model.mlmodel: a Core ML pipeline, network then Core ML's own NMS, as Vision expects.

    coremltools cannot convert the SavedModel's NMS (TF while loops), so the network is
    converted up to decoded boxes and scores and chained with a NonMaximumSuppression
    model whose IoU and confidence thresholds are inputs. Core ML runs only on Apple
    systems: here the saved spec is loaded back and its interface checked.
    """
    import coremltools as ct
    import tensorflow as tf
    from official.vision.ops import box_ops

    params, _, anchors, network = _network(result_dir, checkpoint)
    height, width = params.task.model.input_size[:2]
    foreground = params.task.model.num_classes - 1
    anchors = tf.concat([tf.reshape(value, [-1, 4]) for value in anchors.values()], 0)
    weights = params.task.model.detection_generator.box_coder_weights

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="image")])
    def raw(image):
        scores, boxes = network(image)
        scores = tf.concat([tf.reshape(value, [-1, foreground]) for value in scores.values()], 0)
        boxes = tf.concat([tf.reshape(value, [-1, 4]) for value in boxes.values()], 0)
        boxes = box_ops.decode_boxes(boxes, anchors, weights=weights) / [height, width, height, width]
        ymin, xmin, ymax, xmax = tf.unstack(tf.clip_by_value(boxes, 0.0, 1.0), axis=-1)
        # Core ML's NMS takes (x centre, y centre, width, height), normalised.
        return tf.sigmoid(scores), tf.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin, ymax - ymin], -1)

    network_model = ct.convert([raw.get_concrete_function()], source="tensorflow", convert_to="neuralnetwork",
                               inputs=[ct.ImageType(name="image", shape=(1, height, width, 3))])
    spec = network_model.get_spec()
    for output, name, columns in zip(list(spec.description.output), ("raw_confidence", "raw_coordinates"),
                                     (foreground, 4)):
        output.type.multiArrayType.shape[:] = [anchors.shape[0], columns]  # NMS needs its inputs' shapes
        ct.utils.rename_feature(spec, output.name, name)
    path = result_dir / "model_ios" / "Model.mlmodel"
    _write_labels(path.parent, labels)
    ct.utils.save_spec(_coreml_pipeline(spec, labels, params), str(path))
    spec = ct.utils.load_spec(str(path))
    names = ([f.name for f in spec.description.input], [f.name for f in spec.description.output])
    if names != (["image", "iouThreshold", "confidenceThreshold"], ["confidence", "coordinates"]):
        raise RuntimeError(f"Model.mlmodel has inputs and outputs {names}")
    return path


def _coreml_pipeline(network, labels, params):
    """Chain NETWORK (image -> raw_confidence [N, C], raw_coordinates [N, 4]) with Core ML's NMS."""
    import coremltools as ct

    nms = ct.proto.Model_pb2.Model()
    nms.specificationVersion = network.specificationVersion
    for index, (source, name) in enumerate(zip(network.description.output, ("confidence", "coordinates"))):
        nms.description.input.add().CopyFrom(source)
        output = nms.description.output.add()
        output.CopyFrom(source)
        output.name = name
        array = output.type.multiArrayType
        del array.shape[:]
        boxes = array.shapeRange.sizeRanges.add()
        boxes.lowerBound, boxes.upperBound = 0, -1
        columns = array.shapeRange.sizeRanges.add()
        columns.lowerBound = columns.upperBound = len(labels) if index == 0 else 4
    for name, value in (("iouThreshold", params.task.model.detection_generator.nms_iou_threshold),
                        ("confidenceThreshold", COREML_CONFIDENCE)):
        feature = nms.description.input.add()
        feature.name = name
        feature.type.doubleType.SetInParent()
        feature.shortDescription = f"default {value}"
    settings = nms.nonMaximumSuppression
    settings.confidenceInputFeatureName, settings.coordinatesInputFeatureName = "raw_confidence", "raw_coordinates"
    settings.confidenceOutputFeatureName, settings.coordinatesOutputFeatureName = "confidence", "coordinates"
    settings.iouThresholdInputFeatureName, settings.confidenceThresholdInputFeatureName = (
        "iouThreshold", "confidenceThreshold")
    settings.iouThreshold = params.task.model.detection_generator.nms_iou_threshold
    settings.confidenceThreshold = COREML_CONFIDENCE
    settings.pickTop.perClass = True
    settings.stringClassLabels.vector.extend(labels)

    pipeline = ct.proto.Model_pb2.Model()
    pipeline.specificationVersion = network.specificationVersion
    pipeline.pipeline.models.add().CopyFrom(network)
    pipeline.pipeline.models.add().CopyFrom(nms)
    pipeline.description.input.add().CopyFrom(network.description.input[0])
    pipeline.description.input.extend(nms.description.input[2:])
    pipeline.description.output.extend(nms.description.output)
    pipeline.description.metadata.userDefined["labels"] = json.dumps(labels)
    return pipeline


def _compare(name, reference, candidate, tolerance):
    """Check that each image's top SavedModel detections are in CANDIDATE's: same label, box and score within TOLERANCE.

    Matching is by content, not rank, so near-equal scores that swap places do not count as
    differences, and detections whose score ties with another's are skipped. With tolerance
    None the differences are only printed. Returns how many detections were compared.
    """
    worst_box = worst_score = 0.0
    missing = tied = 0
    for ref, got in zip(reference, candidate):
        for box, score, label in list(zip(ref["boxes"], ref["scores"], ref["classes"]))[:TOP_DETECTIONS]:
            if np.sum(np.abs(ref["scores"] - score) < 1e-6) > 1:
                tied += 1  # which of boxes with equal scores NMS keeps is arbitrary (untrained models)
                continue
            same = got["classes"] == label
            if not same.any():
                missing += 1
                continue
            box_diff = np.abs(got["boxes"][same] - box).max(axis=1)
            score_diff = np.abs(got["scores"][same] - score)
            best = np.argmin(np.maximum(box_diff, score_diff))
            worst_box, worst_score = max(worst_box, box_diff[best]), max(worst_score, score_diff[best])
            if tolerance is not None and max(box_diff[best], score_diff[best]) > tolerance:
                missing += 1
    console.say(f"export: {name} vs SavedModel on {len(reference)} images: max box difference {worst_box:.1e}, "
                f"max score difference {worst_score:.1e}, unmatched top detections {missing}, "
                f"skipped as tied {tied}")
    if tolerance is not None and missing:
        raise RuntimeError(f"{name} disagrees with the SavedModel: {missing} of the top detections on "
                           f"{len(reference)} validation images differ by more than {tolerance}")
    return sum(min(len(r["scores"]), TOP_DETECTIONS) for r in reference) - tied  # detections compared


def _record_images(result_dir, split, size, limit):
    """Up to LIMIT RGB uint8 images from data/SPLIT-*.tfrecord, resized to SIZE (height, width)."""
    import io

    import tensorflow as tf
    from PIL import Image

    files = sorted(str(p) for p in (result_dir / "data").glob(f"{split}-*.tfrecord"))
    images = []
    feature = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    for record in tf.data.TFRecordDataset(files).take(limit) if files else []:
        encoded = tf.io.parse_single_example(record, feature)["image/encoded"].numpy()
        image = Image.open(io.BytesIO(encoded)).convert("RGB").resize(size[::-1], Image.BILINEAR)
        images.append(np.asarray(image))
    return images


def add_arguments(parser):
    parser.add_argument("--result-dir", required=True, help="the run's output folder (params.yaml, model/, data/)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help=f"comma-separated formats to write (default: all: {','.join(FORMATS)}); the "
                             "SavedModel is always written, as the others are checked against it")
    parser.add_argument("--quantize", default="none", choices=QUANTIZE,
                        help="TFLite weights: none (float32), fp16, or int8 (full integer, calibrated on training images)")
    parser.add_argument("--keep-versions", type=int, default=3, help="SavedModel versions kept for TF Serving")


def main(args):
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    results = export(args.result_dir, formats=formats, quantize=args.quantize, keep_versions=args.keep_versions)
    return conversion_exit({name: r["error"] for name, r in results.items() if "error" in r})


def conversion_exit(failed):
    """Name each failed conversion on stderr; the exit status for `export` and `run`."""
    for name, reason in failed.items():
        console.say(f"CONVERSION-FAILED {name}: {reason}", error=True)
    return CONVERSION_FAILED_EXIT if failed else 0
