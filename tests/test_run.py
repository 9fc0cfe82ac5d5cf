"""The run stage's multi-worker rule: only the chief prepares and configures."""
import json

import pytest

from trainer import run as run_stage
from trainer.errors import UserError
from trainer.export.formats import EXPORT_FORMATS, FORMAT_NAMES
from trainer.hardware import is_chief


@pytest.mark.parametrize("env, chief", [
    ({}, True),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}})}, True),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}})}, False),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}})}, True),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}})}, False),
    ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1", "c:1"]},
                                  "task": {"type": "workerpool1", "index": 1}})}, False),
    ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1"]},
                                  "task": {"type": "workerpool0", "index": 0}})}, True),
])
def test_only_the_chief_prepares(env, chief):
    assert is_chief(env) is chief


def test_a_worker_waits_for_the_chief_and_writes_nothing(tmp_path, sample_bucket, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    monkeypatch.setattr(run_stage, "CHIEF_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(run_stage, "CHIEF_POLL_SECONDS", 0.05)
    with pytest.raises(UserError, match="the chief did not write .*ready.json within 0.3 s"):
        run_stage.run(sample_bucket, tmp_path / "result", model="demo")
    assert not (tmp_path / "result").exists()


def test_a_worker_starts_only_from_this_attempts_complete_files(tmp_path):
    """The marker is written last with the digests of what the chief wrote; a rewrite or other arguments wait."""
    result_dir = tmp_path / "result"
    (result_dir / "data").mkdir(parents=True)
    (result_dir / "pretrained").mkdir()
    for name, text in (("data/report.json", "{}"), ("data/labels.json", '["a"]'), ("params.yaml", "task: {}\n"),
                       ("experiment.json", json.dumps({"model": "demo", "steps": 20, "batch_size": 4})),
                       ("pretrained/ckpt-7.index", "index")):
        (result_dir / name).write_text(text)
    wanted = {"model": "demo", "steps": None, "batch_size": None}
    assert not run_stage._chief_ready(result_dir, wanted)  # no marker yet
    run_stage._write_ready(result_dir)
    assert set(json.loads((result_dir / "ready.json").read_text())["files"]) == {
        "data/report.json", "data/labels.json", "params.yaml", "experiment.json", "pretrained/ckpt-7.index"}
    assert run_stage._chief_ready(result_dir, wanted)
    assert run_stage._chief_ready(result_dir, {**wanted, "steps": 20, "batch_size": 4})
    assert not run_stage._chief_ready(result_dir, {**wanted, "steps": 30})  # a previous attempt's plan
    assert not run_stage._chief_ready(result_dir, {**wanted, "model": "retinanet_resnet50_fpn"})
    (result_dir / "params.yaml").write_text("task: {")  # the chief is rewriting it
    assert not run_stage._chief_ready(result_dir, wanted)


def test_a_classification_bucket_trains_with_model_demo_through_start_sh_to_success(trained_classifier_run):
    """The cacli contract on a classification bucket: MODEL=demo picks the demo classifier, metrics.json holds
    Model Garden's accuracy and train's own confusion matrix, and every export folder is written."""
    result = trained_classifier_run
    console = (result.parent / "start.log").read_text().splitlines()
    assert console[-1] == "CACLI-TRAINING-SUCCESS" and "CACLI-CONVERSION-FAILED" not in console
    report = json.loads((result / "data" / "report.json").read_text())
    experiment = json.loads((result / "experiment.json").read_text())
    assert (experiment["model"], experiment["asked_model"], experiment["task"]) == ("demo_classification", "demo",
                                                                                    "classification")
    metrics = json.loads((result / "metrics.json").read_text())
    labels = report["labels"]
    # 3 classes: no top-5
    assert set(metrics) == {"step", "accuracy", "per_class", "confusion_matrix", "validation_loss", "best", "last",
                            "early_stopping"}
    assert metrics["best"]["metric"] == "accuracy" and metrics["last"]["metrics"]["accuracy"] == metrics["accuracy"]
    matrix = metrics["confusion_matrix"]
    val = report["splits"]["val"]
    assert [sum(row) for row in matrix] == [val["per_class"][label] for label in labels]
    assert sum(map(sum, matrix)) == val["images"]
    # Model Garden's own accuracy metric and train's separate pass over the same split agree.
    assert sum(matrix[i][i] for i in range(len(labels))) / val["images"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert metrics["accuracy"] >= 0.7  # chance is 1/3; 0.95 and 1.0 were measured at these steps
    for label in labels:
        assert metrics["per_class"][label]["images"] == val["per_class"][label]
    assert json.loads((result / "model" / "dataset.json").read_text()) == {
        "labels": [{"id": index, "name": name} for index, name in enumerate(labels)]}  # 0-based, as the records
    for name in FORMAT_NAMES:  # saved_model, tflite, tfjs, coreml
        written = EXPORT_FORMATS[name].path(result)
        assert (written / "saved_model.pb" if name == "saved_model" else written).is_file()
        assert json.loads((result / EXPORT_FORMATS[name].folder / "labels.json").read_text()) == labels
    page = (result / "report.html").read_text()
    assert "Confusion matrix of the validation split" in page and f"accuracy {metrics['accuracy']:.3f}" in page
