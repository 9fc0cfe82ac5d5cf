"""Export stage on a briefly trained demo run: every format written, run in its own runtime on the validation split, scored."""
import json
import os
import shutil
from collections import Counter

import numpy as np
import pytest

from trainer.errors import UserError
from trainer.export import export, serving
from trainer.export.formats import EXPORT_FORMATS, FORMAT_NAMES
from trainer.run_dir import EXPORT_DIR

from mediapipe_check import compare as compare_with_mediapipe

EVALUATED_KEYS = {"AP", "AP50", "delta_AP", "bytes", "latency_ms", "split", "images"}
PARITY = 0.01  # fp32 TFLite and TF.js fed as apps feed them: AP within this of the SavedModel's
# Core ML's NMS keeps one class per box (its best), the SavedModel's every class above the
# threshold, so on a barely trained model whose boxes score for several classes it loses more:
# measured -0.037 and -0.064 on two runs of the shared 60-step model (training is not bit-reproducible), and
# -0.085 on a third (SavedModel 0.135, Core ML 0.050; the same 0.050 with Core ML's NMS run through every box).
COREML_PARITY = 0.12
# MediaPipe resizes the image itself (not with the SavedModel's resize) and returns boxes in whole
# pixels, which costs AP at the high IoU thresholds on the demo's small images: measured -0.002 on
# kangaroo, 0.0109 on one CI run of the shared 60-step model.
MEDIAPIPE_PARITY = 0.02
EVALUATED = (*FORMAT_NAMES, "mediapipe")  # mediapipe: model.tflite through MediaPipe Tasks


def test_every_format_is_written_with_labels(exported_run):
    result_dir, results = exported_run
    assert {name: "path" in r for name, r in results.items()} == dict.fromkeys(EVALUATED, True), results
    assert results["mediapipe"] == results["tflite"]  # the same file
    labels = json.loads((result_dir / "data" / "labels.json").read_text())
    for folder in {row.folder for row in EXPORT_FORMATS.values()}:  # model_android, model_web, model_ios, model_export
        assert json.loads((result_dir / folder / "labels.json").read_text()) == labels
    assert EXPORT_FORMATS["tflite"].path(result_dir).stat().st_size == results["tflite"]["bytes"]
    # The web graph's NMS is TF.js's native kernel once per class (TFLite's), not the SavedModel's padded NMS
    # loop (Enter/NextIteration nodes), which took 83% of its time in WebAssembly.
    web_ops = Counter(node["op"] for node in json.loads(EXPORT_FORMATS["tfjs"].path(result_dir).read_text())[
        "modelTopology"]["node"])
    classes = len(labels)
    assert (web_ops["NonMaxSuppressionV5"], web_ops["NextIteration"]) == (classes, 0), web_ops
    # The TF Serving copy is named after the catalogue model and versioned by training step.
    serving = result_dir / EXPORT_DIR / "serving" / "demo"
    versions = [p.name for p in serving.iterdir()]
    assert len(versions) == 1 and (serving / versions[0] / "saved_model.pb").is_file()
    best = json.loads((result_dir / "metrics.json").read_text())["best"]  # the best evaluation's checkpoint
    assert versions == [str(best["step"])] and (result_dir / "model" / f"{best['checkpoint']}.index").is_file()
    assert json.loads((result_dir / EXPORT_DIR / "export.json").read_text())["checkpoint"] == best["checkpoint"]


def test_evaluation_json_scores_every_format_on_the_validation_split(exported_run):
    result_dir, results = exported_run
    evaluation = json.loads((result_dir / EXPORT_DIR / "evaluation.json").read_text())
    val_images = json.loads((result_dir / "data" / "report.json").read_text())["splits"]["val"]["images"]
    assert set(evaluation) == set(EVALUATED)
    for name, entry in evaluation.items():
        assert set(entry) == EVALUATED_KEYS, (name, entry)
        assert (entry["split"], entry["images"], entry["bytes"]) == ("val", val_images, results[name]["bytes"])
        assert 0 < entry["AP"] <= entry["AP50"] <= 1 and entry["latency_ms"] > 0
    assert evaluation["saved_model"]["delta_AP"] == 0
    for name in ("tflite", "tfjs", "coreml", "mediapipe"):
        assert evaluation[name]["delta_AP"] == pytest.approx(evaluation[name]["AP"] - evaluation["saved_model"]["AP"],
                                                             abs=2e-4)
        bound = {"coreml": COREML_PARITY, "mediapipe": MEDIAPIPE_PARITY}.get(name, PARITY)
        assert abs(evaluation[name]["delta_AP"]) <= bound, (name, evaluation)


def test_evaluation_files_are_coco_and_rescore_to_the_same_ap(exported_run):
    """groundtruth.json and FORMAT_detections.json, read by pycocotools directly, give evaluation.json's AP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    result_dir, _ = exported_run
    folder = result_dir / EXPORT_DIR / "evaluation"
    report = json.loads((result_dir / "data" / "report.json").read_text())["splits"]["val"]
    truth = COCO(str(folder / "groundtruth.json"))
    assert len(truth.getImgIds()) == report["images"] and len(truth.getAnnIds()) == report["boxes"]
    labels = json.loads((result_dir / "data" / "labels.json").read_text())
    assert [truth.cats[i]["name"] for i in sorted(truth.cats)] == labels
    evaluation = json.loads((result_dir / EXPORT_DIR / "evaluation.json").read_text())
    for name in EVALUATED:
        scored = COCOeval(truth, truth.loadRes(str(folder / f"{name}_detections.json")), iouType="bbox")
        scored.evaluate(), scored.accumulate(), scored.summarize()
        assert scored.stats[0] == pytest.approx(evaluation[name]["AP"], abs=1e-4)


def test_saved_model_serves_uint8_images_of_any_size(exported_run):
    import tensorflow as tf

    result_dir, _ = exported_run
    serve = tf.saved_model.load(str(EXPORT_FORMATS["saved_model"].path(result_dir))).signatures["serving_default"]
    outputs = serve(tf.zeros([2, 90, 160, 3], tf.uint8))
    assert {"detection_boxes", "detection_scores", "detection_classes", "num_detections"} <= set(outputs)
    assert outputs["detection_boxes"].shape[:2] == outputs["detection_scores"].shape == (2, 100)


def test_rerun_keeps_what_is_up_to_date(exported_run, capsys):
    result_dir, results = exported_run
    before = (result_dir / EXPORT_DIR / "evaluation.json").stat().st_mtime_ns
    assert export(result_dir) == results
    assert capsys.readouterr().out.count("up to date") == len(EVALUATED)
    assert (result_dir / EXPORT_DIR / "evaluation.json").stat().st_mtime_ns == before


# Re-exported under the float16 policy: the two whose graphs computed in half precision (TF.js and Core ML convert
# the SavedModel's graph; test_rehearsal's two-GPU job exports them after mixed_float16 training, in one process).
FLOAT16_FORMATS = ("saved_model", "tflite")


def test_float16_policy_still_exports_float32_with_parity_and_quantised_deltas(exported_run, tmp_path):
    """A GPU job's mixed_float16 policy is still set when `run` exports: the formats must come out float32,
    score as the float32 export did, and leave the policy as it found it; fp16/int8 get their measured delta_AP."""
    import tensorflow as tf
    import tf_keras
    from ai_edge_litert.interpreter import Interpreter
    from official.modeling import performance

    result_dir, results = exported_run
    # metrics.json names the best checkpoint, which the original exported; without it the copy exports the last
    # (a CI run's best was step 40 of 60: AP 0.1233 against 0.076).
    for name in ("params.yaml", "experiment.json", "metrics.json"):
        shutil.copy(result_dir / name, tmp_path / name)
    for name in ("model", "data"):
        shutil.copytree(result_dir / name, tmp_path / name)
    performance.set_mixed_precision_policy(tf.float16)
    try:
        copy = export(tmp_path, FLOAT16_FORMATS, quantize=["fp16", "int8"])
        assert tf_keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        performance.set_mixed_precision_policy(tf.float32)
    assert {name: "path" in r for name, r in copy.items()} == dict.fromkeys(
        [*FLOAT16_FORMATS, "tflite_fp16", "tflite_int8", "mediapipe"], True), copy

    # Under the float16 policy the graphs computed in half precision (DT_HALF) and TFLite failed to convert.
    graph = (EXPORT_FORMATS["saved_model"].path(tmp_path) / "saved_model.pb").read_bytes()
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString(graph)
    dtypes = {attr.type for meta in saved.meta_graphs for function in meta.graph_def.library.function
              for node in function.node_def for attr in node.attr.values()}
    assert tf.float16.as_datatype_enum not in dtypes and tf.float32.as_datatype_enum in dtypes
    tflite = Interpreter(model_path=str(EXPORT_FORMATS["tflite"].path(tmp_path)))
    assert {d["dtype"] for d in tflite.get_output_details()} == {np.float32}

    original = json.loads((result_dir / EXPORT_DIR / "evaluation.json").read_text())
    evaluation = json.loads((tmp_path / EXPORT_DIR / "evaluation.json").read_text())
    for name in (*FLOAT16_FORMATS, "mediapipe"):  # the same models: the float16 policy changed nothing
        assert evaluation[name]["AP"] == pytest.approx(original[name]["AP"], abs=1e-3), name
    for name, smaller in (("tflite_fp16", 0.6), ("tflite_int8", 0.4)):
        entry = evaluation[name]
        assert set(entry) == EVALUATED_KEYS and entry["bytes"] < smaller * results["tflite"]["bytes"]
        assert entry["delta_AP"] == pytest.approx(entry["AP"] - evaluation["saved_model"]["AP"], abs=2e-4)
    assert abs(evaluation["tflite_fp16"]["delta_AP"]) <= PARITY
    # Both load in MediaPipe's ObjectDetector (their metadata) and detect as LiteRT does.
    noise = _noise(result_dir)
    assert compare_with_mediapipe(tmp_path, EXPORT_FORMATS["tflite_fp16"].path(tmp_path), "detection", noise) == (
        100 * len(noise), 100 * len(noise))
    # int8 scores are quantised, so most rows tie exactly and MediaPipe keeps other boxes among them (measured:
    # 12%, 47% and 59% of the rows identical on three runs): it loads and returns as many rows.
    rows, matched = compare_with_mediapipe(tmp_path, EXPORT_FORMATS["tflite_int8"].path(tmp_path), "detection",
                                           noise)
    assert rows == 100 * len(noise) and matched > 0


def _noise(result_dir, count=10):
    """Seeded random images at the model's input size: no flat areas whose anchors a barely trained model scores
    exactly alike (ties LiteRT and MediaPipe's runtime break differently)."""
    import yaml

    height, width = yaml.safe_load((result_dir / "params.yaml").read_text())["task"]["model"]["input_size"][:2]
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, [height, width, 3], dtype=np.uint8) for _ in range(count)]


def test_mediapipe_object_detector_loads_model_tflite_and_detects_as_litert_does(exported_run):
    """model.tflite's metadata is what MediaPipe's ObjectDetector needs (it refused the file before), and through it
    every row matches our interpreter's: score within 1e-4, label id, box (in MediaPipe's whole pixels)."""
    from ai_edge_litert.interpreter import Interpreter

    result_dir, results = exported_run
    path = EXPORT_FORMATS["tflite"].path(result_dir)
    noise = _noise(result_dir)
    assert compare_with_mediapipe(result_dir, path, "detection", noise) == (100 * len(noise), 100 * len(noise))
    # The validation images too, whose flat backgrounds may score alike (ties: 1697 of 1700 rows matched once).
    rows, matched = compare_with_mediapipe(result_dir, path, "detection")
    val_images = json.loads((result_dir / "data" / "report.json").read_text())["splits"]["val"]["images"]
    assert rows == 100 * val_images and matched >= 0.99 * rows
    # The outputs in TFLite_Detection_PostProcess's order, all float32.
    outputs = Interpreter(model_path=str(path)).get_output_details()
    assert [list(o["shape"]) for o in outputs] == [[1, 100, 4], [1, 100], [1, 100], [1]]
    assert {o["dtype"] for o in outputs} == {np.float32}


def test_a_mediapipe_row_matches_within_a_pixel_and_swaps_only_at_the_cut():
    from mediapipe_check import _matched

    mine = [(0.9, 1, (10, 10, 5, 5)), (0.5, 2, (0, 0, 3, 3)), (0.10002, 1, (7, 7, 2, 2))]
    within_a_pixel = (0.90005, 1, (11, 10, 5, 5))
    assert _matched(mine, [within_a_pixel, (0.5, 2, (0, 0, 5, 3)), (0.10001, 2, (1, 1, 1, 1))]) == 2
    assert _matched(mine, [within_a_pixel, (0.5, 2, (0, 0, 5, 3)), (0.3, 2, (1, 1, 1, 1))]) == 1
    assert _matched(mine, [(0.9002, 1, (10, 10, 5, 5)), (0.5, 1, (0, 0, 3, 3)), (0.10002, 1, (7, 7, 2, 2))]) == 1


def test_per_class_nms_puts_each_boxs_rows_together_best_box_first():
    """Rows of one box follow each other (MediaPipe 1.2.2 folds only those correctly); padding stays last; no
    detection at all still gives K rows."""
    import tensorflow as tf

    from trainer.export.serving.detection import per_class_nms

    boxes = tf.constant([[0, 0, .5, .5], [.5, .5, 1, 1], [0, .5, .5, 1]], tf.float32)
    scores = tf.constant([[.9, .2], [.3, .8], [.1, .05]], tf.float32)
    out = per_class_nms(scores, boxes, 7, 0.5)
    assert out["detection_classes"].numpy().tolist() == [[1, 2, 2, 1, 1, 2, 0]]
    assert out["detection_scores"].numpy()[0] == pytest.approx([.9, .2, .8, .3, .1, .05, 0])
    assert out["detection_boxes"].numpy()[0, :, 0].tolist() == [0, 0, .5, .5, 0, 0, 0]
    assert out["num_detections"].numpy().tolist() == [6]
    empty = per_class_nms(tf.zeros([3, 2]), boxes, 7, 0.5)
    assert empty["num_detections"].numpy().tolist() == [0] and not empty["detection_scores"].numpy().any()


def test_metadata_names_labels_and_outputs_for_mediapipe_on_a_small_converted_model(mediapipe_python, tmp_path):
    """Without a trained run: a tiny detector with our NMS and a tiny classifier, converted and given metadata,
    load in MediaPipe, which names each label id from labels.json (line 0 of a detector's file is unused)."""
    import tensorflow as tf

    from trainer.export import mediapipe_tasks, metadata
    from trainer.export.common import NotEvaluated
    from trainer.export.serving.detection import per_class_nms

    labels = ["cat", "dog", "bird"]
    boxes = tf.constant([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8], [0.1, 0.6, 0.3, 0.9]], tf.float32)
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.uint8)])
    def detect(image):  # box i scores (i + 1) / 10 for label i, scaled by the image's brightness
        bright = tf.reduce_mean(tf.cast(image, tf.float32)) / 255
        return per_class_nms(tf.eye(3) * tf.constant([[0.1], [0.2], [0.3]]) * bright, boxes, 100, 0.5)

    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.uint8)])
    def classify(image):
        return {"probs": tf.nn.softmax(tf.reduce_mean(tf.cast(image, tf.float32), [1, 2]) / 50)}

    image = np.zeros([32, 32, 3], np.uint8)
    image[..., 2] = 255  # blue: the classifier's label 2, "bird"
    for task, function in (("detection", detect), ("classification", classify)):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], module)
        path = tmp_path / f"{task}.tflite"
        plain = converter.convert()
        if task == "detection":  # the issue: without metadata MediaPipe refuses the model
            path.write_bytes(plain)
            with pytest.raises(NotEvaluated, match="require TFLite Model Metadata but none was found"):
                mediapipe_tasks.detect(task, path, [np.zeros([32, 32, 3], np.uint8)])
        path.write_bytes(metadata.add(plain, serving.get(task), labels, (32, 32), 0.001))
        found, = mediapipe_tasks.detect(task, path, [image])
        if task == "detection":  # brightness 1/3: scores 0.1, 0.067, 0.033, best box first
            assert [(d["categories"][0]["name"], d["box"]) for d in found["detections"]] == [
                ("bird", [19, 3, 9, 6]), ("dog", [16, 16, 9, 12]), ("cat", [3, 3, 12, 9])]
            assert [d["categories"][0]["score"] for d in found["detections"]] == pytest.approx([0.1, 0.2 / 3, 0.1 / 3])
        else:
            assert [c["name"] for c in found["categories"]][0] == "bird"


def test_coreml_pipeline_thresholds_are_optional_with_defaults(exported_run):
    import coremltools as ct

    result_dir, results = exported_run
    spec = ct.utils.load_spec(results["coreml"]["path"])
    inputs = {i.name: i for i in spec.description.input}
    assert list(inputs) == ["image", "iouThreshold", "confidenceThreshold"]
    assert [o.name for o in spec.description.output] == ["confidence", "coordinates"]
    assert not inputs["image"].type.isOptional
    assert inputs["iouThreshold"].type.isOptional and inputs["confidenceThreshold"].type.isOptional
    nms = spec.pipeline.models[1].nonMaximumSuppression
    assert (nms.iouThreshold, nms.confidenceThreshold) == (pytest.approx(0.5), pytest.approx(0.25))
    assert list(nms.stringClassLabels.vector) == json.loads((result_dir / "data" / "labels.json").read_text())


def test_core_ml_nms_keeps_the_top_box_per_label_and_drops_low_scores():
    # boxes: x centre, y centre, width, height; 0 and 1 overlap (IoU 0.82), 2 elsewhere, 3 below the threshold
    coordinates = np.array([[0.3, 0.3, 0.2, 0.2], [0.32, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1]],
                           np.float32)
    confidence = np.array([[0.9, 0.1], [0.8, 0.05], [0.2, 0.6], [0.1, 0.05]], np.float32)
    kept = serving.detection.core_ml_nms(confidence, coordinates, iou_threshold=0.5, confidence_threshold=0.15)
    assert kept["classes"].tolist() == [1, 2] and kept["scores"] == pytest.approx([0.9, 0.6])
    assert kept["boxes"][0] == pytest.approx([0.2, 0.2, 0.4, 0.4])  # ymin, xmin, ymax, xmax
    assert serving.detection.core_ml_nms(confidence, coordinates, 0.85, 0.15)["classes"].tolist() == [1, 1, 2]


def test_core_ml_nms_stopped_per_label_keeps_each_labels_first_boxes_and_the_coco_ap():
    from trainer.metrics import coco_ap

    rng = np.random.default_rng(7)
    centres = rng.uniform(0.1, 0.9, (3000, 2))
    coordinates = np.concatenate([centres, rng.uniform(0.02, 0.3, (3000, 2))], axis=1).astype(np.float32)
    confidence = rng.uniform(0, 1, (3000, 3)).astype(np.float32)
    every = serving.detection.core_ml_nms(confidence, coordinates, 0.5, 0.001)
    first = serving.detection.core_ml_nms(confidence, coordinates, 0.5, 0.001, per_label=100)
    assert [np.sum(first["classes"] == label) for label in (1, 2, 3)] == [100, 100, 100]
    for label in (1, 2, 3):  # each label's 100 best survivors, in the same order
        assert first["scores"][first["classes"] == label] == pytest.approx(
            every["scores"][every["classes"] == label][:100])
    assert np.sum(every["classes"] == 1) > 100

    truth = {"images": [{"id": 1, "height": 100, "width": 100}], "categories": [{"id": k} for k in (1, 2, 3)],
             "annotations": [{"id": k, "image_id": 1, "category_id": 1 + k % 3, "iscrowd": 0, "area": 1.0,
                              "bbox": [*(100 * coordinates[k, :2] - 50 * coordinates[k, 2:]), *(100 * coordinates[k, 2:])]}
                             for k in range(0, 3000, 50)]}

    def results(found):
        return [{"image_id": 1, "category_id": int(c), "score": float(s),
                 "bbox": [float(100 * b[1]), float(100 * b[0]), float(100 * (b[3] - b[1])), float(100 * (b[2] - b[0]))]}
                for b, s, c in zip(found["boxes"], found["scores"], found["classes"])]

    assert coco_ap(truth, results(first)) == pytest.approx(coco_ap(truth, results(every)), abs=1e-9)
    assert coco_ap(truth, results(first))[1] > 0


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"model/checkpoint is missing: run `python -m trainer train --result-dir "
                                        r".*` first"):
        export(tmp_path)


CLASSIFIER_KEYS = {"accuracy", "delta_accuracy", "bytes", "latency_ms", "split", "images"}


def test_a_classifier_exports_every_format_evaluated_by_accuracy_in_its_own_runtime(trained_classifier_run):
    """The start.sh classification run: each format's accuracy on the whole val split, fed as its users feed it."""
    result = trained_classifier_run
    evaluation = json.loads((result / EXPORT_DIR / "evaluation.json").read_text())
    val = json.loads((result / "data" / "report.json").read_text())["splits"]["val"]["images"]
    assert set(evaluation) == set(EVALUATED)
    for name, entry in evaluation.items():
        assert set(entry) == CLASSIFIER_KEYS, name  # 3 classes: no top-5
        assert (entry["split"], entry["images"]) == ("val", val) and entry["latency_ms"] > 0
    assert evaluation["saved_model"]["delta_accuracy"] == 0
    predictions = {name: [p["label_id"] for p in json.loads(
        (result / EXPORT_DIR / "evaluation" / f"{name}_predictions.json").read_text())] for name in EVALUATED}
    assert predictions["tfjs"] == predictions["saved_model"]  # the same graph (resize included), in Node
    for name in ("tflite", "coreml", "mediapipe"):  # stretched by the app (PIL, MediaPipe), not by the graph
        differ = sum(a != b for a, b in zip(predictions[name], predictions["saved_model"]))
        assert differ <= 1 and abs(evaluation[name]["delta_accuracy"]) <= 1 / val + 1e-9, (name, differ)
    assert abs(evaluation["mediapipe"]["delta_accuracy"]) <= PARITY, evaluation
    truth = [image["label"] for image in json.loads(
        (result / EXPORT_DIR / "evaluation" / "groundtruth.json").read_text())["images"]]
    hits = sum(p == t for p, t in zip(predictions["saved_model"], truth))
    assert evaluation["saved_model"]["accuracy"] == pytest.approx(hits / val, abs=1e-4)


def test_a_classifiers_formats_take_what_apps_give_and_name_their_labels(trained_classifier_run):
    import coremltools as ct
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    result = trained_classifier_run
    labels = json.loads((result / "data" / "labels.json").read_text())
    serve = tf.saved_model.load(str(EXPORT_FORMATS["saved_model"].path(result))).signatures["serving_default"]
    for shape in ((1, 240, 320, 3), (2, 100, 60, 3)):  # any size and batch, uint8
        probs = serve(tf.zeros(shape, tf.uint8))["probs"].numpy()
        assert probs.shape == (shape[0], 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    runner = Interpreter(model_path=str(EXPORT_FORMATS["tflite"].path(result))).get_signature_runner()
    (name, spec), = runner.get_input_details().items()
    assert (list(spec["shape"]), spec["dtype"]) == ([1, 96, 96, 3], np.uint8)
    assert runner(**{name: np.zeros([1, 96, 96, 3], np.uint8)})["probs"].shape == (1, 3)
    assert set(json.loads(EXPORT_FORMATS["tfjs"].path(result).read_text())["signature"]["outputs"]) == {"probs"}
    spec = ct.utils.load_spec(str(EXPORT_FORMATS["coreml"].path(result)))
    assert spec.WhichOneof("Type") == "neuralNetworkClassifier"
    assert list(spec.neuralNetworkClassifier.stringClassLabels.vector) == labels
    assert (spec.description.predictedFeatureName, spec.description.predictedProbabilitiesName) == (
        "classLabel", "classLabelProbs")
    assert spec.description.input[0].type.imageType.width == 96


def test_a_classifiers_int8_tflite_is_calibrated_and_evaluated(trained_classifier_run, tmp_path):
    result = tmp_path / "run"
    shutil.copytree(trained_classifier_run, result, symlinks=True)
    export(result, quantize=["int8"])
    evaluation = json.loads((result / EXPORT_DIR / "evaluation.json").read_text())
    assert set(evaluation["tflite_int8"]) == CLASSIFIER_KEYS
    assert evaluation["tflite_int8"]["bytes"] < evaluation["tflite"]["bytes"] / 2
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(EXPORT_FORMATS["tflite_int8"].path(result)))
    assert any(detail["dtype"] == np.int8 for detail in interpreter.get_tensor_details())
    # Both load in MediaPipe's ImageClassifier (labels, `probs` as its scores) and classify as LiteRT does.
    for name in ("tflite", "tflite_int8"):
        for images in (None, _noise(result)):  # the validation split, and noise
            rows, matched = compare_with_mediapipe(result, EXPORT_FORMATS[name].path(result), "classification", images)
            assert matched == rows >= len(images or ())


def test_classifier_accuracy_and_top_5_agree_with_keras_metrics(tmp_path):
    """Export evaluation's scores for a 7-class classifier, against tf_keras' own accuracy metrics."""
    import tf_keras

    from trainer.tasks.classification import export_scores

    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(7), size=40).astype(np.float32)
    truth = rng.integers(0, 7, size=40)
    groundtruth = {"labels": list("abcdefg"), "images": [{"id": i + 1, "file_name": f"{i}.jpg", "label": int(label)}
                                                          for i, label in enumerate(truth)]}
    scores = export_scores([{"probs": row} for row in probabilities], groundtruth, tmp_path, "p")

    top1 = tf_keras.metrics.SparseCategoricalAccuracy()
    top1.update_state(truth, probabilities)
    top5 = tf_keras.metrics.SparseTopKCategoricalAccuracy(k=5)
    top5.update_state(truth, probabilities)
    assert scores == {"accuracy": pytest.approx(float(top1.result()), abs=1e-4),
                      "top_5_accuracy": pytest.approx(float(top5.result()), abs=1e-4)}
    assert 0 < scores["accuracy"] < scores["top_5_accuracy"] < 1
    written = json.loads((tmp_path / "p_predictions.json").read_text())
    assert [p["label_id"] for p in written] == probabilities.argmax(axis=1).tolist()


def test_a_hard_swish_convolution_converts_to_a_web_graph_tfjs_runs_in_webassembly(tmp_path, tfjs_node_modules):
    """The default model's activation: on x86 the converter's oneDNN rewrites fused it into the convolution as
    `_FusedHardSwish`, which TF.js's wasm backend refuses ("not yet supported"); the web graph must run there and
    compute what TensorFlow does."""
    import base64
    import subprocess

    import tensorflow as tf
    from official.modeling import tf_utils

    from trainer.export import tfjs
    from trainer.export.common import write_raw_images

    rng = np.random.default_rng(3)
    module = tf.Module()
    module.kernel = tf.Variable(rng.normal(0, 0.5, (3, 3, 3, 8)).astype(np.float32))
    module.bias = tf.Variable(rng.normal(0, 0.5, 8).astype(np.float32))
    hard_swish = tf_utils.get_activation("hard_swish")

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
    def serve(images):
        features = tf.nn.bias_add(tf.nn.conv2d(tf.cast(images, tf.float32) / 255, module.kernel, 1, "SAME"),
                                  module.bias)
        return {"probs": tf.reduce_mean(hard_swish(features), axis=[1, 2])}

    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"serving_default": serve.get_concrete_function()})
    tfjs.convert(tmp_path / "saved", tmp_path / "web")

    nodes = json.loads((tmp_path / "web" / "model.json").read_text())["modelTopology"]["node"]
    fused = {base64.b64decode(op).decode() for node in nodes
             for op in node.get("attr", {}).get("fused_ops", {}).get("list", {}).get("s", [])}
    assert "_FusedHardSwish" not in fused, fused
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    node, modules = tfjs.node_runtime()
    listing = write_raw_images([image], tmp_path)
    done = subprocess.run([node, str(tfjs.RUNNER), str(tmp_path / "web"), str(listing)], capture_output=True,
                          text=True, env={**os.environ, "NODE_PATH": str(modules)})
    assert done.returncode == 0, done.stderr[-2000:]
    output = json.loads(done.stdout)
    assert output["backend"] == "wasm"
    np.testing.assert_allclose(output["results"][0]["probs"], serve(image[None])["probs"].numpy()[0], atol=1e-4)
