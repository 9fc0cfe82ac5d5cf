"""train, run and start.sh end to end: the demo model on the sample bucket, on this CPU.

One shared run (the `trained_run` fixture: `start.sh TRAINED_STEPS`) is checked for every
output a user and the export stage rely on; one scenario kills and preempts a run
and checks that it resumes to the exact step.
"""
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import TRAINED_STEPS
from fuse_audit import assert_no_directory_renames, python_wrapper
from waiting import wait_until
from trainer import config
from trainer.run_dir import EXPORT_DIR

REPO = Path(__file__).resolve().parent.parent
START_SH = REPO / "packaging" / "start.sh"
STEPS = TRAINED_STEPS  # what trained_run trains


def log_of(result_dir):
    return (result_dir.parent / "start.log").read_text()


def event_tags(folder):
    """{tag: plugin name} of every summary in FOLDER's event files, read the way TensorBoard does."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0, "images": 0})
    accumulator.Reload()
    return {tag: accumulator.summary_metadata[tag].plugin_data.plugin_name for tag in accumulator.Tags()["tensors"]}


def test_start_sh_reports_success_with_progress_and_where_the_outputs_are(trained_run):
    lines = log_of(trained_run).splitlines()
    assert lines[-1] == "CACLI-TRAINING-SUCCESS"
    log = "\n".join(lines)
    assert f"train: starting from scratch: step 0 of {STEPS}" in log
    # the suite's generated images are small: decoded once, kept in memory (said in the log, not on the console)
    decoding = re.compile(r"^train: decoding the training images once and keeping them in memory \(0\.\d\d GiB of "
                          r"the \d+\.\d\d GiB available\)$", re.M)
    assert decoding.search((trained_run / "logs" / "train.log").read_text()) and not decoding.search(log)
    progress = [line for line in lines if line.startswith("progress: ")]
    assert [re.search(rf"step (\d+)/{STEPS}", line).group(1) for line in progress] == [
        str(step) for step in range(10, STEPS + 1, 10)]
    assert all(re.search(r"loss \d+\.\d+ \| [\d.]+ images/s \| lr \S+ \| ETA \d+m\d\ds", line) for line in progress)
    # cacli's progress bar: its own regex, once per loop, right after each progress line
    cacli = [(index, re.search(r"tensorflow:loss = [\d.]*, step = (\d*)", line)) for index, line in enumerate(lines)]
    cacli = [(index, match) for index, match in cacli if match]
    assert [match.group(1) for _, match in cacli] == [str(step) for step in range(10, STEPS + 1, 10)]
    assert all(lines[index - 1].startswith(f"progress: step {match.group(1)}/") for index, match in cacli)
    assert f"train: checkpoints: {trained_run / 'model'}/ckpt-{STEPS}" in log
    assert re.search(rf"train: metrics: +{re.escape(str(trained_run / 'metrics.json'))} \(step {STEPS}: AP \d\.\d+", log)
    assert f"train: TensorBoard: tensorboard --logdir {trained_run / 'model'}" in log


def test_checkpoints_are_named_by_step(trained_run):
    model_dir = trained_run / "model"
    labels = json.loads((trained_run / "data" / "labels.json").read_text())
    assert json.loads((model_dir / "dataset.json").read_text()) == {
        "labels": [{"id": number, "name": name} for number, name in enumerate(labels, start=1)]}
    assert (model_dir / f"ckpt-{STEPS}.index").is_file() and list(model_dir.glob(f"ckpt-{STEPS}.data-*"))
    assert f'model_checkpoint_path: "ckpt-{STEPS}"' in (model_dir / "checkpoint").read_text()


def test_params_yaml_is_the_demo_experiment_for_this_dataset_on_cpu(trained_run):
    params = config.load_params(trained_run)
    report = json.loads((trained_run / "data" / "report.json").read_text())
    assert params.task.model.num_classes == len(report["labels"]) + 1 == 4
    assert params.task.model.input_size == [128, 128, 3]
    for split, data in (("train", params.task.train_data), ("val", params.task.validation_data)):
        assert data.input_path == ",".join(str(trained_run / "data" / name) for name in report["files"][split])
    assert params.trainer.train_steps == STEPS
    assert (params.runtime.distribution_strategy, params.runtime.num_gpus) == ("one_device", 0)
    assert params.task.train_data.dtype == params.task.validation_data.dtype == "float32"
    assert params.task.init_checkpoint == "" and params.task.annotation_file == ""
    generator = params.task.model.detection_generator  # evaluated as exported: every box down to 0.001, NMS v2
    assert (generator.pre_nms_score_threshold, generator.nms_version) == (0.001, "v2")


def test_tensorboard_has_losses_learning_rate_coco_metrics_and_images(trained_run):
    train_tags = event_tags(trained_run / "model" / "train")
    assert {"total_loss", "cls_loss", "box_loss", "learning_rate"} <= set(train_tags)
    validation_tags = event_tags(trained_run / "model" / "validation")
    assert {"AP", "AP50", "AP75", "ARmax100", "validation_loss", "Precision mAP ByCategory/1"} <= set(validation_tags)
    images = [tag for tag, plugin in validation_tags.items() if plugin == "images"]
    assert images and all(tag.startswith("image/validation_outputs") for tag in images)


def test_metrics_json_holds_final_coco_and_per_class_metrics(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    labels = json.loads((trained_run / "data" / "labels.json").read_text())
    assert metrics["step"] == STEPS
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl"):
        assert metrics[name] is None or 0.0 <= metrics[name] <= 1.0, name
    assert metrics["AP"] is not None and metrics["AP50"] >= metrics["AP"]
    assert set(metrics["per_class"]) == set(labels)
    for per_class in metrics["per_class"].values():
        assert set(per_class) == {"AP", "AP50", "AP75", "ARmax100"}
        assert all(value is None or 0.0 <= value <= 1.0 for value in per_class.values())
    assert metrics["validation_loss"] > 0


def test_rerun_of_a_complete_run_skips_every_stage(trained_run, sample_bucket):
    stamps = {path: path.stat().st_mtime_ns for path in trained_run.rglob("*") if path.is_file()}
    completed = subprocess.run(["bash", str(START_SH), str(STEPS)], env=start_env(sample_bucket, trained_run),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "is up to date" in completed.stdout
    assert "params.yaml unchanged" in completed.stdout
    assert "train: complete" in completed.stdout
    assert len(re.findall(r"^export: \w+: up to date \(", completed.stdout, re.MULTILINE)) == 5  # + mediapipe
    assert completed.stdout.splitlines()[-1] == "CACLI-TRAINING-SUCCESS"
    # config rewrites its files and the chief its marker for the workers (identical); logs/ gets the rerun's lines
    rewritten = ("params.yaml", "experiment.json", "ready.json")
    changed = [path for path, stamp in stamps.items() if path.name not in rewritten
               and path.parent.name != "logs" and path.stat().st_mtime_ns != stamp]
    assert changed == []


def test_killed_then_preempted_training_resumes_to_the_exact_step(sample_bucket, tmp_path):
    result_dir = tmp_path / "result"
    state = result_dir / "model" / "checkpoint"

    # 1. SIGKILL (no chance to save) once the first checkpoint is written.
    first = start(sample_bucket, result_dir, 200, tmp_path / "1.log")
    wait_until(lambda: state.is_file(), first, tail(tmp_path / "1.log"))
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = latest_step(state)

    # 2. SIGTERM to start.sh, as Vertex AI preempts: the trainer saves a checkpoint and exits.
    second = start(sample_bucket, result_dir, 200, tmp_path / "2.log")
    wait_until(lambda: f"step {killed_at + 10}/200" in (tmp_path / "2.log").read_text(), second,
               tail(tmp_path / "2.log"))
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=120) == 128 + signal.SIGTERM
    log = (tmp_path / "2.log").read_text()
    assert f"train: resuming: restoring {result_dir / 'model'}/ckpt-{killed_at} (step {killed_at} of 200)" in log
    saved = re.search(r"train: SIGTERM: saved (\S+)/ckpt-(\d+) at step (\d+) of 200", log)
    assert saved and saved.group(2) == saved.group(3), log[-3000:]
    preempted_at = int(saved.group(2))
    assert preempted_at > killed_at and latest_step(state) == preempted_at
    assert log.splitlines()[-1] == "CACLI-TRAINING-FAILED"

    # 3. Rerun with fewer steps: it restores and stops at exactly that step.
    final_steps = preempted_at + 10
    third = start(sample_bucket, result_dir, final_steps, tmp_path / "3.log")
    assert third.wait(timeout=300) == 0
    log = (tmp_path / "3.log").read_text()
    assert f"train: restored ckpt-{preempted_at}: continuing at step {preempted_at}" in log
    assert "starting from scratch" not in log
    steps_run = [int(step) for step in re.findall(rf"progress: step (\d+)/{final_steps}", log)]
    assert steps_run == [final_steps]
    assert latest_step(state) == final_steps
    assert json.loads((result_dir / "metrics.json").read_text())["step"] == final_steps
    assert log.splitlines()[-1] == "CACLI-TRAINING-SUCCESS"
    assert_no_directory_renames(tmp_path / "fuse-audit.log", runs=3)  # killed, preempted and resumed: FUSE-safe


EARLY_STEPS = 80  # evaluated every 20 steps (a quarter of the run)


@pytest.fixture(scope="module")
def early_stopped_run(tmp_path_factory, sample_bucket):
    """RESULT_DIR of `PATIENCE=1 MIN_DELTA=1 start.sh 80` (no AP improves by 1): evaluated at steps 20 and 40, stopped
    at 40, the SavedModel exported; its output is RESULT_DIR/../start.log."""
    base = tmp_path_factory.mktemp("early-stopped")
    result_dir = base / "result"
    env = start_env(sample_bucket, result_dir, PATIENCE="1", MIN_DELTA="1", EXPORT_FORMATS="saved_model")
    completed = subprocess.run(["bash", str(START_SH), str(EARLY_STEPS)], env=env, cwd=base, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=900)
    (base / "start.log").write_text(completed.stdout)
    assert completed.returncode == 0, completed.stdout[-5000:]
    return result_dir


def test_early_stopping_saves_the_step_says_why_and_exports_the_best_evaluation(early_stopped_run):
    result_dir = early_stopped_run
    log = log_of(result_dir)
    evaluations = re.findall(r"^evaluation: step (\d+): AP ", log, re.MULTILINE)
    assert evaluations == ["20", "40"]
    metrics = json.loads((result_dir / "metrics.json").read_text())
    best, state = metrics["best"], metrics["early_stopping"]
    stopped = [line for line in log.splitlines() if line.startswith("train: early stopping")]
    assert stopped == [f"train: early stopping at step 40: 1 evaluations in a row without an improvement of AP by at "
                       f"least 1 (patience 1); best AP {best['value']:.3f} at step {best['step']}"]
    assert latest_step(result_dir / "model" / "checkpoint") == 40 == metrics["step"] == metrics["last"]["step"]
    assert state == {"metric": "AP", "patience": 1, "min_delta": 1.0, "reference": state["reference"],
                     "evaluations_without_improvement": 1, "stopped": {"step": 40, "reason": stopped[0].split(": ", 2)[2]}}
    # the best: the higher AP of the two evaluations (the first on a tie)
    assert best["step"] == (40 if metrics["AP"] > state["reference"] else 20) and best["metric"] == "AP"
    assert best["value"] == max(state["reference"], metrics["AP"]) == best["metrics"]["AP"]
    assert best["checkpoint"] == f"best/ckpt-{best['step']}"
    assert sorted(path.name for path in (result_dir / "model" / "best").iterdir()) == [
        "checkpoint", f"ckpt-{best['step']}.data-00000-of-00001", f"ckpt-{best['step']}.index"]
    manifest = json.loads((result_dir / EXPORT_DIR / "export.json").read_text())
    assert manifest["checkpoint"] == best["checkpoint"]
    assert [p.name for p in (result_dir / EXPORT_DIR / "serving" / "demo").iterdir()] == [str(best["step"])]
    # Training's evaluation scores the detections the exports return (params.yaml: the same minimum score and NMS),
    # so the exported SavedModel, run on the val split by export, scores as the best evaluation did.
    saved_model = json.loads((result_dir / EXPORT_DIR / "evaluation.json").read_text())["saved_model"]
    assert saved_model["AP"] == pytest.approx(best["metrics"]["AP"], abs=0.005)
    assert saved_model["AP50"] == pytest.approx(best["metrics"]["AP50"], abs=0.005)
    assert f"  early stopping at step 40: {state['stopped']['reason']}" in log  # in the summary too
    assert log.splitlines()[-1] == "CACLI-TRAINING-SUCCESS"


def test_a_rerun_of_an_early_stopped_run_is_complete(early_stopped_run, sample_bucket):
    result_dir = early_stopped_run
    env = start_env(sample_bucket, result_dir, PATIENCE="1", MIN_DELTA="1", EXPORT_FORMATS="saved_model")
    completed = subprocess.run(["bash", str(START_SH), str(EARLY_STEPS)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "train: complete: early stopping ended this run at step 40; nothing to do" in completed.stdout
    assert "progress: step" not in completed.stdout
    assert re.search(r"^export: saved_model: up to date \(", completed.stdout, re.MULTILINE)


def test_start_sh_refuses_a_patience_that_is_not_a_count(tmp_path):
    env = {**os.environ, "DATA_DIR": "bucket", "RESULT_DIR": "out", "PATIENCE": "two"}
    completed = subprocess.run(["bash", str(START_SH)], env=env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=30)
    assert completed.returncode == 2 and completed.stdout.strip() == "CACLI-TRAINING-FAILED"
    assert "PATIENCE must be a whole number of evaluations (0: never stop early), not 'two'" in completed.stderr
    assert "[PATIENCE=" in completed.stderr  # the usage line names it


@pytest.mark.parametrize("env, args, message", [
    ({"RESULT_DIR": "out"}, [], "DATA_DIR is not set"),
    ({"DATA_DIR": "bucket"}, [], "RESULT_DIR is not set"),
    ({"DATA_DIR": "bucket", "RESULT_DIR": "out"}, ["12k"], "STEPS must be a positive whole number, not '12k'"),
    ({"DATA_DIR": "bucket", "RESULT_DIR": "out"}, ["10", "20"], "expected at most one argument"),
])
def test_start_sh_explains_its_usage(env, args, message, tmp_path):
    clean = {key: value for key, value in os.environ.items() if key not in ("DATA_DIR", "RESULT_DIR")}
    completed = subprocess.run(["bash", str(START_SH), *args], env={**clean, **env}, cwd=tmp_path,
                               capture_output=True, text=True, timeout=30)
    assert completed.returncode == 2
    assert message in completed.stderr and "usage: DATA_DIR=" in completed.stderr
    assert completed.stdout.strip() == "CACLI-TRAINING-FAILED"


def start_env(sample_bucket, result_dir, **extra):
    """start.sh's environment; the trainer runs under the FUSE audit, logging to RESULT_DIR/../fuse-audit.log."""
    return {**os.environ, "DATA_DIR": str(sample_bucket), "RESULT_DIR": str(result_dir), "MODEL": "demo",
            "PYTHON": str(python_wrapper(result_dir.parent)), "FUSE_AUDIT_LOG": str(result_dir.parent / "fuse-audit.log"),
            "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def start(sample_bucket, result_dir, steps, log_path):
    """start.sh STEPS in its own process group, output to LOG_PATH."""
    with open(log_path, "w") as log:
        return subprocess.Popen(["bash", str(START_SH), str(steps)],
                                env=start_env(sample_bucket, result_dir, EXPORT_FORMATS="none"),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def tail(log_path):
    """What a failed wait shows: the end of LOG_PATH."""
    return lambda: f":\n{log_path.read_text()[-3000:]}"


def latest_step(state):
    return int(re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.MULTILINE).group(1))


def test_classifier_metrics_read_model_gardens_accuracy_and_top_5_by_its_own_names():
    """metrics.json of a 7-class classifier from the metrics Model Garden's classification task evaluates with."""
    import numpy as np
    from official.vision.configs import image_classification
    from official.vision.tasks.image_classification import ImageClassificationTask

    from trainer.tasks.classification import evaluation_metrics

    params = image_classification.ImageClassificationTask(
        model=image_classification.ImageClassificationModel(num_classes=7, input_size=[32, 32, 3]),
        evaluation=image_classification.Evaluation(top_k=5))
    metrics = ImageClassificationTask(params).build_metrics(training=False)
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 7, size=30)
    probabilities = rng.dirichlet(np.ones(7), size=30).astype(np.float32)
    for metric in metrics:  # one-hot labels, as the task's validation_step gives them (losses.one_hot)
        metric.update_state(np.eye(7)[labels], probabilities)
    output = {metric.name: metric.result().numpy() for metric in metrics}
    matrix = np.zeros([7, 7], int)
    np.add.at(matrix, (labels, probabilities.argmax(axis=1)), 1)

    result = evaluation_metrics(output, list("abcdefg"), 12, matrix.tolist)

    assert set(result) == {"step", "accuracy", "top_5_accuracy", "per_class", "confusion_matrix", "validation_loss"}
    assert result["accuracy"] == pytest.approx(np.trace(matrix) / 30, abs=1e-6)  # Model Garden's own accuracy
    assert result["accuracy"] < result["top_5_accuracy"] == pytest.approx(float(output["top_5_accuracy"]))
    assert [result["per_class"][name]["images"] for name in "abcdefg"] == np.bincount(labels, minlength=7).tolist()
    assert result["validation_loss"] is None
