"""The cloud's hardware paths, rehearsed on this CPU with real TensorFlow and Model Garden.

GPUs are logical CPU devices (TRAINER_SIMULATE_GPUS), the TPU plan runs its precision
and batches on one CPU device (TRAINER_SIMULATE_TPU). The bucket is small (24 images,
7 of them in val: 7 is divisible by none of 2, 3 and 4 replicas) and runs are a few steps.
"""
import contextlib
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO
from processes import START_SH, free_port, run_trainer
from trainer import config
from trainer.errors import UserError
from trainer.export.formats import EXPORT_FORMATS
from trainer.hardware import SIMULATE_GPUS_ENV, SIMULATE_TPU_ENV, Hardware, detect_hardware

VAL_FRACTION = 0.35  # of 24 images: 7 val, 17 train


@pytest.fixture(scope="module")
def small_data(small_bucket, tmp_path_factory):
    """data/ of the small bucket as prepare writes it; 7 val images."""
    from trainer.prepare import prepare

    result_dir = tmp_path_factory.mktemp("small-prepared")
    report = prepare(small_bucket, result_dir, val_fraction=VAL_FRACTION)
    assert report["splits"]["val"]["images"] == 7
    return result_dir / "data"


def fresh_run(tmp_path, small_data, name):
    result_dir = tmp_path / name
    result_dir.mkdir()
    (result_dir / "data").symlink_to(small_data)
    return result_dir


EVAL_COVERAGE = """
import json, sys
import tensorflow as tf
from official.core import task_factory
from trainer import config, train
from trainer.hardware import Hardware
from trainer.run_dir import Experiment, RunDir

simulated, workers = sys.argv[1:]
# the simulation switch's own strategy: 4 logical CPU devices
hardware = Hardware(**Experiment.load(RunDir(simulated)).hardware)
strategies = {simulated: train._distribution_strategy(config.load_params(simulated), hardware)}
devices = [device.name for device in tf.config.list_logical_devices("CPU")[:3]]
strategies[workers] = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
seen = {}
for run_dir, strategy in strategies.items():
    params = config.load_params(run_dir)
    task = task_factory.get_task(params.task)
    dataset = strategy.distribute_datasets_from_function(
        lambda context: task.build_inputs(params.task.validation_data, context))
    iterator, ids = iter(dataset), []
    for _ in range(params.trainer.validation_steps):
        _, labels = next(iterator)
        for local in strategy.experimental_local_results(labels["groundtruths"]["source_id"]):
            ids += local.numpy().tolist()
    seen[run_dir] = {"replicas": strategy.num_replicas_in_sync, "ids": ids}
records = tf.data.TFRecordDataset(params.task.validation_data.input_path.split(","))
spec = {"image/source_id": tf.io.FixedLenFeature([], tf.string)}
seen["records"] = [int(tf.io.parse_single_example(r, spec)["image/source_id"]) for r in records]
print("SEEN " + json.dumps(seen))
"""


def test_eval_batches_split_over_4_gpus_and_3_workers_and_cover_the_val_set(small_data, tmp_path):
    """Finding 2: Model Garden's input pipeline under real tf.distribute strategies (not a formula)."""
    simulated, workers = fresh_run(tmp_path, small_data, "gpus"), fresh_run(tmp_path, small_data, "workers")
    config.write_params(simulated, "demo", hardware=detect_hardware({SIMULATE_GPUS_ENV: "4"}, 0))
    three_workers = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "chief", "index": 0}}
    config.write_params(workers, "demo", hardware=detect_hardware({"TF_CONFIG": json.dumps(three_workers)}, 0))
    for run_dir, replicas in ((simulated, 4), (workers, 3)):
        params = config.load_params(run_dir)
        assert params.task.validation_data.global_batch_size % replicas == 0

    completed = subprocess.run([sys.executable, "-c", EVAL_COVERAGE, str(simulated), str(workers)], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"},
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    seen = json.loads(completed.stdout.split("SEEN ", 1)[1])
    assert len(seen["records"]) == 7
    for run_dir, replicas in ((simulated, 4), (workers, 3)):
        assert seen[str(run_dir)]["replicas"] == replicas
        assert sorted(seen[str(run_dir)]["ids"]) == sorted(seen["records"])  # every val image once, none dropped


def test_simulation_switches_plan_for_the_hardware(monkeypatch):
    gpus = detect_hardware({SIMULATE_GPUS_ENV: "4"}, 0)
    assert (gpus.kind, gpus.num_gpus, gpus.strategy, gpus.replicas, gpus.simulated) == ("gpu", 4, "mirrored", 4, True)
    tpu = detect_hardware({SIMULATE_TPU_ENV: "1"}, 0)
    assert (tpu.kind, tpu.strategy, tpu.tpu, tpu.simulated) == ("tpu", "one_device", "", True)
    assert detect_hardware({SIMULATE_GPUS_ENV: "0"}, 0) == Hardware("cpu")
    with pytest.raises(UserError, match="TRAINER_SIMULATE_GPUS must be a number of GPUs, not 'two'"):
        detect_hardware({SIMULATE_GPUS_ENV: "two"}, 0)


def test_two_simulated_gpus_train_in_mixed_float16_and_export_float32(small_bucket, tmp_path):
    """`TRAINER_SIMULATE_GPUS=2 start.sh 1`: the GPU plan (catalogue GPU batch per replica) trains and exports."""
    result_dir = tmp_path / "result"
    completed = run_trainer([START_SH, 1], {SIMULATE_GPUS_ENV: "2", "DATA_DIR": small_bucket,
                                            "RESULT_DIR": result_dir, "MODEL": "demo"}, tmp_path / "start.log")
    log = completed.stdout
    assert "train: starting from scratch: step 0 of 1, mirrored strategy over 2 replica(s)" in log, log[-3000:]
    record = json.loads((result_dir / "experiment.json").read_text())
    gpu_batch = 32  # configs/models/demo.yaml hardware.gpu.batch_size, per replica
    assert record["hardware"] == {"kind": "gpu", "num_gpus": 2, "num_workers": 1, "tpu": "", "simulated": True}
    assert record["batch_size"] == 2 * gpu_batch
    params = config.load_params(result_dir)
    assert (params.runtime.distribution_strategy, params.runtime.num_gpus) == ("mirrored", 2)
    assert (params.runtime.mixed_precision_dtype, params.runtime.loss_scale) == ("float16", "dynamic")
    assert params.task.train_data.dtype == params.task.validation_data.dtype == "float16"
    assert re.search(r"^INFO:tensorflow:loss = [\d.]+, step = 1$", log, re.MULTILINE)
    assert json.loads((result_dir / "metrics.json").read_text())["step"] == 1  # evaluated 7 images on 2 replicas
    assert log.splitlines()[-1] == "CACLI-TRAINING-SUCCESS" and "CACLI-CONVERSION-FAILED" not in log, log[-5000:]
    assert_float32_exports(result_dir)


def assert_float32_exports(result_dir):
    """Every format exported (their parity checks passed: the run reported no failed conversion) in float32."""
    import tensorflow as tf

    model = tf.saved_model.load(str(EXPORT_FORMATS["saved_model"].path(result_dir)))
    outputs = model.signatures["serving_default"].structured_outputs
    assert outputs["detection_boxes"].dtype == outputs["detection_scores"].dtype == tf.float32
    interpreter = tf.lite.Interpreter(model_path=str(EXPORT_FORMATS["tflite"].path(result_dir)))
    assert {detail["dtype"] for detail in interpreter.get_output_details()} == {tf.float32.as_numpy_dtype}
    web_model = EXPORT_FORMATS["tfjs"].path(result_dir).read_text()
    assert "float16" not in web_model and "DT_HALF" not in web_model  # weights and graph
    assert EXPORT_FORMATS["coreml"].path(result_dir).is_file()


def test_tpu_precision_trains_in_bfloat16_and_restores_the_policy(sample_bucket, tmp_path):
    """TRAINER_SIMULATE_TPU=1 in this process: the TPU plan in mixed_bfloat16, evaluated in whole batches of 8;
    the policy is put back after, so what runs next in the process (export) starts from float32. (The GPU plan's
    test exports every format after mixed precision; this one skips the export to keep the suite short.)"""
    import tf_keras

    from trainer.run import run

    before = tf_keras.mixed_precision.global_policy().name
    result_dir = tmp_path / "tpu"
    os.environ[SIMULATE_TPU_ENV] = "1"
    try:
        run(sample_bucket, result_dir, model="demo", steps=2, batch_size=8, formats=[])
    finally:
        del os.environ[SIMULATE_TPU_ENV]
    assert tf_keras.mixed_precision.global_policy().name == before == "float32"
    params = config.load_params(result_dir)
    assert (params.runtime.mixed_precision_dtype, params.runtime.distribution_strategy) == ("bfloat16", "one_device")
    assert params.task.train_data.dtype == params.task.validation_data.dtype == "bfloat16"
    assert (params.task.validation_data.global_batch_size, params.task.validation_data.drop_remainder) == (8, True)
    assert json.loads((result_dir / "experiment.json").read_text())["hardware"]["kind"] == "tpu"
    val_images = json.loads((result_dir / "data" / "report.json").read_text())["splits"]["val"]["images"]
    assert params.trainer.validation_steps == val_images // 8 >= 1
    assert json.loads((result_dir / "metrics.json").read_text())["AP"] is not None


def test_the_policy_is_restored_when_training_fails(small_data, tmp_path):
    import tf_keras

    from trainer.train import train

    result_dir = fresh_run(tmp_path, small_data, "broken")
    config.write_params(result_dir, "demo", steps=2, batch_size=8,
                        hardware=detect_hardware({SIMULATE_TPU_ENV: "1"}, 0))
    garbage = tmp_path / "garbage.tfrecord"
    garbage.write_bytes(b"not a TFRecord file at all")
    params_path = result_dir / "params.yaml"
    params = re.sub(r"input_path: \S+", f"input_path: {garbage}", params_path.read_text())
    params_path.write_text(params)
    with pytest.raises(Exception, match="corrupted record"):
        train(result_dir)
    assert tf_keras.mixed_precision.global_policy().name == "float32"


def test_four_simulated_gpus_evaluate_a_val_set_not_divisible_by_4(small_bucket, tmp_path):
    result_dir = tmp_path / "gpus4"
    completed = run_trainer(["run", "--data-dir", small_bucket, "--result-dir", result_dir, "--model", "demo",
                             "--steps", 1, "--batch-size", 8, "--val-fraction", VAL_FRACTION, "--formats", "none"],
                            {SIMULATE_GPUS_ENV: "4"}, tmp_path / "run.log")
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "mirrored strategy over 4 replica(s)" in completed.stdout
    params = config.load_params(result_dir)
    assert params.task.validation_data.global_batch_size == 8 and params.trainer.validation_steps == 1
    metrics = json.loads((result_dir / "metrics.json").read_text())
    assert metrics["step"] == 1 and metrics["AP"] is not None and metrics["validation_loss"] > 0


def vertex_env(pool, chief_address, worker_address):
    """CLUSTER_SPEC and TF_CONFIG as Vertex AI sets them on a replica of pool POOL (workerpool0/1, index 0)."""
    spec = {"cluster": {"workerpool0": [chief_address], "workerpool1": [worker_address]}, "environment": "cloud",
            "task": {"type": pool, "index": 0}}
    tf_config = {"cluster": {"chief": [chief_address], "worker": [worker_address]}, "environment": "cloud",
                 "task": {"type": {"workerpool0": "chief", "workerpool1": "worker"}[pool], "index": 0}}
    return {"CLUSTER_SPEC": json.dumps(spec), "TF_CONFIG": json.dumps(tf_config)}


def test_multi_worker_job_restores_a_served_checkpoint_and_resumes_after_a_kill(small_data, small_bucket, tmp_path):
    """Finding 3: a chief and a worker (two processes on 127.0.0.1), each with its own home and checkpoint cache,
    share RESULT_DIR; the pretrained archive is served over HTTP; one is SIGKILLed; both restart and resume."""
    import signal
    import time

    from http_server import FileServer
    from zoo_archive import tar_folder, write_checkpoint

    scratch = fresh_run(tmp_path, small_data, "scratch")
    config.write_params(scratch, "demo", hardware=Hardware("cpu"))
    write_checkpoint(config.load_params(scratch), tmp_path / "demo-zoo")
    addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    result_dir = tmp_path / "result"
    steps = 20  # checkpoints and evaluations every 10 steps (CPU loops of 10)

    def start(role, attempt, url):
        machine = tmp_path / role
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(machine / "home"),
               "CHECKPOINT_CACHE": str(machine / "cache"), "PYTHONUNBUFFERED": "1",
               **vertex_env(role, *addresses)}
        log = open(tmp_path / f"{role}-{attempt}.log", "w")
        return subprocess.Popen([sys.executable, "-m", "trainer", "run", "--data-dir", str(small_bucket),
                                 "--result-dir", str(result_dir), "--model", "demo", "--steps", str(steps),
                                 "--batch-size", "4", "--formats", "none", "--checkpoint-url", url],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def logs(attempt):
        return {role: (tmp_path / f"{role}-{attempt}.log").read_text() for role in ("workerpool0", "workerpool1")}

    with FileServer() as server:
        server.files["/demo-zoo.tar.gz"] = tar_folder(tmp_path / "demo-zoo", tmp_path / "demo-zoo.tar.gz").read_bytes()
        url = server.url("/demo-zoo.tar.gz")
        processes = [start(role, 1, url) for role in ("workerpool0", "workerpool1")]
        try:
            deadline = time.monotonic() + 420
            while not (result_dir / "model" / "checkpoint").is_file():
                assert all(p.poll() is None for p in processes) and time.monotonic() < deadline, logs(1)
                time.sleep(0.5)
            os.killpg(processes[1].pid, signal.SIGKILL)  # the worker's machine dies
            time.sleep(3)
        finally:
            for process in processes:  # Vertex restarts the whole job
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
        killed_at = int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"',
                                  (result_dir / "model" / "checkpoint").read_text()).group(1))
        assert 10 <= killed_at < steps

        processes = [start(role, 2, url) for role in ("workerpool0", "workerpool1")]
        try:
            codes = [process.wait(timeout=420) for process in processes]
        finally:
            for process in processes:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        downloads = [path for path, _ in server.requests]
    first, second = logs(1), logs(2)
    assert codes == [0, 0], {role: log[-4000:] for role, log in second.items()}
    shared = result_dir / "pretrained" / f"ckpt-{1234}"
    for role in ("workerpool0", "workerpool1"):
        assert f"train: starting from pretrained {shared}: step 0 of {steps}" in first[role], first[role][-3000:]
        assert f"train: resuming: restoring {result_dir / 'model'}/ckpt-{killed_at} (step {killed_at} of {steps})" \
            in second[role], second[role][-3000:]
    assert "==> wait: for the chief" in second["workerpool1"]
    assert downloads == ["/demo-zoo.tar.gz"]  # the chief's, once; its cache serves the rerun
    assert not (tmp_path / "workerpool1" / "cache").exists()  # the worker read RESULT_DIR/pretrained
    assert config.load_params(result_dir).task.init_checkpoint == str(shared)
    metrics = json.loads((result_dir / "metrics.json").read_text())
    assert metrics["step"] == steps and metrics["AP"] is not None


def test_without_a_val_split_it_trains_unevaluated_and_a_resume_refuses_changed_labels(small_bucket, tmp_path, capsys):
    """Finding 10 (config, train): `prepare --val-fraction 0` leaves no val split; training goes on, loudly, and
    metrics.json says it was not evaluated. Finding 5: after those 2 steps the bucket's labels are added to,
    removed from or reordered: the rerun stops with one line naming the change; the unchanged bucket resumes."""
    import shutil

    from trainer.prepare import prepare
    from trainer.train import train

    bucket, result_dir = tmp_path / "bucket", tmp_path / "result"
    shutil.copytree(small_bucket, bucket)
    original = json.loads((bucket / "_annotations.json").read_text())

    def rerun(annotations, steps):
        (bucket / "_annotations.json").write_text(json.dumps(annotations))
        assert prepare(bucket, result_dir, val_fraction=0)["splits"]["val"]["images"] == 0
        config.write_params(result_dir, "demo", steps=steps, hardware=Hardware("cpu"))
        return train(result_dir)

    metrics = rerun(original, 2)
    out, err = capsys.readouterr()
    reason = f"{result_dir / 'data'} has no validation images"
    assert f"config: WARNING: {reason}: the model will be trained WITHOUT evaluation" in err
    assert f"train: WARNING: training WITHOUT evaluation: {reason}" in err
    assert "evaluation: step" not in out and f"(step 2: NOT EVALUATED: {reason})" in out
    assert metrics == json.loads((result_dir / "metrics.json").read_text()) == {
        "step": 2, "evaluated": False, "reason": reason}
    assert not (result_dir / "model" / "validation").exists()
    assert json.loads((result_dir / "model" / "dataset.json").read_text()) == {
        "labels": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]}

    added = json.loads(json.dumps(original))
    added["labels"].append("star")
    next(boxes for boxes in added["annotations"].values() if boxes)[0]["label"] = "star"
    removed = {**original, "labels": ["circle", "square"],
               "annotations": {image: [box for box in boxes if box["label"] != "triangle"]
                               for image, boxes in original["annotations"].items()}}
    reordered = {**original, "labels": ["square", "circle", "triangle"]}
    for changed, change in ((added, "added star"), (removed, "removed triangle"),
                            (reordered, "reordered: was ['circle', 'square', 'triangle'], "
                                        "now ['square', 'circle', 'triangle']")):
        with pytest.raises(UserError) as error:
            rerun(changed, 3)
        message = str(error.value)
        assert f"{result_dir / 'model'} holds checkpoints trained on other labels ({change}); " in message
        assert message.endswith("use a new RESULT_DIR for this dataset") and "\n" not in message
    capsys.readouterr()
    assert rerun(original, 3)["step"] == 3  # unchanged: resumed from ckpt-2
    assert "train: restored ckpt-2: continuing at step 2" in capsys.readouterr().out
