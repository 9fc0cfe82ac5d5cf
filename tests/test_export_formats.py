"""The export table (trainer/export/formats.py): where each format lands, what an export writes, what is skipped."""
import dataclasses
from types import SimpleNamespace

import pytest

from trainer.errors import UserError
from trainer.export import export
from trainer.export.formats import EXPORT_FORMATS, FORMAT_NAMES, QUANTIZE, TASKS, outputs


def test_every_row_lands_where_run_folders_have_it():
    """The folders and files of earlier runs: export.json's paths, predict, the apps and the tests rely on them."""
    assert {name: str(row.path("run")) for name, row in EXPORT_FORMATS.items()} == {
        "saved_model": "run/model_export/saved_model", "tflite": "run/model_android/model.tflite",
        "tfjs": "run/model_web/model.json", "coreml": "run/model_ios/Model.mlmodel",
        "tflite_fp16": "run/model_android/model_fp16.tflite", "tflite_int8": "run/model_android/model_int8.tflite",
        "mediapipe": "run/model_android/model.tflite"}
    assert {name: row.module for name, row in EXPORT_FORMATS.items()} == {
        "saved_model": "saved_model", "tflite": "tflite", "tfjs": "tfjs", "coreml": "coreml",
        "tflite_fp16": "tflite", "tflite_int8": "tflite", "mediapipe": "mediapipe_tasks"}
    assert all(row.tasks == TASKS == ("detection", "classification") for row in EXPORT_FORMATS.values())


def test_formats_quantize_and_the_derived_row_come_from_the_table():
    assert FORMAT_NAMES == ("saved_model", "tflite", "tfjs", "coreml") and QUANTIZE == ("fp16", "int8")
    assert [(name, row.source) for name, row in EXPORT_FORMATS.items() if row.derived] == [("mediapipe", "tflite")]
    assert outputs(FORMAT_NAMES, ()) == ["saved_model", "tflite", "tfjs", "coreml", "mediapipe"]
    # The SavedModel always, first; quantised files in the order asked; MediaPipe only with tflite.
    assert outputs(["tfjs"], ["int8", "fp16"]) == ["saved_model", "tfjs", "tflite_int8", "tflite_fp16"]
    assert outputs(["tflite", "saved_model"], ["fp16"]) == ["saved_model", "tflite", "tflite_fp16", "mediapipe"]


def test_unknown_formats_are_refused_before_the_run_is_read(tmp_path):
    message = ("unknown format or quantisation onnx, int4; formats: saved_model, tflite, tfjs, coreml; "
               "quantize: fp16, int8")
    with pytest.raises(UserError) as refused:
        export(tmp_path, formats=["tflite", "onnx"], quantize=["int4"])  # no checkpoint either: not reached
    assert str(refused.value) == message
    with pytest.raises(UserError, match="unknown format or quantisation mediapipe"):
        outputs(["mediapipe"], ())  # evaluated with tflite, never asked for


def test_a_variant_is_unsupported_with_its_source_and_a_row_without_the_task_is_skipped():
    declared = {"tflite": "no TFLite NMS for Faster R-CNN", "coreml": "no Core ML"}
    reasons = {name: row.unsupported("detection", declared) for name, row in EXPORT_FORMATS.items()}
    assert reasons == {"saved_model": None, "tflite": declared["tflite"], "tfjs": None, "coreml": "no Core ML",
                       "tflite_fp16": declared["tflite"], "tflite_int8": declared["tflite"],
                       "mediapipe": declared["tflite"]}
    detector_only = dataclasses.replace(EXPORT_FORMATS["tfjs"], tasks=("detection",))
    assert detector_only.unsupported("classification", {}) == "tfjs exports no classification models"
    assert detector_only.unsupported("detection", {}) is None


def test_a_row_writes_through_its_module_at_its_path(tmp_path):
    """MediaPipe's row writes nothing: it returns tflite's file, and refuses when tflite wrote none."""
    job = SimpleNamespace(result_dir=tmp_path)
    with pytest.raises(RuntimeError, match="model_android/model.tflite was not written"):
        EXPORT_FORMATS["mediapipe"].write(job)
    EXPORT_FORMATS["tflite"].path(tmp_path).parent.mkdir()
    EXPORT_FORMATS["tflite"].path(tmp_path).write_bytes(b"TFL3")
    assert EXPORT_FORMATS["mediapipe"].write(job) == tmp_path / "model_android" / "model.tflite"
