"""tf.data service: the data-service stage's roles (command line and Vertex AI's CLUSTER_SPEC), training's address,
and a rehearsal on 127.0.0.1: a dispatcher and two workers, each `python -m trainer data-service` in its own process,
feed the demo model's training."""
import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from processes import START_SH, free_port, run_trainer
from trainer import config
from trainer.__main__ import main
from trainer.errors import UserError
from trainer.hardware import (DataServiceRole, data_service_address, data_service_role, detect_hardware,
                              training_tf_config)
from waiting import wait_until

POOLS = {"workerpool0": ["chief:2222"], "workerpool1": ["worker:2222"], "workerpool2": ["ds0:2222", "ds1:2222"]}


def cluster_spec(pool, index):
    """The environment Vertex AI gives replica INDEX of POOL in a job with POOLS (the data service in workerpool2)."""
    spec = {"cluster": POOLS, "environment": "cloud", "task": {"type": pool, "index": index}}
    return {"CLUSTER_SPEC": json.dumps(spec)}


def test_roles_and_address_come_from_the_data_service_pool_of_cluster_spec():
    assert data_service_role(cluster_spec("workerpool2", 0)) == DataServiceRole(
        dispatcher=True, worker=True, port=2222, worker_port=2223, host="ds0")
    assert data_service_role(cluster_spec("workerpool2", 1)) == DataServiceRole(
        dispatcher=False, worker=True, dispatcher_address="ds0:2222", worker_port=2223, host="ds1")
    assert data_service_address(cluster_spec("workerpool0", 0)) == "grpc://ds0:2222"
    assert data_service_address({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["a:1"]}})}) is None
    assert data_service_address({}) is None


def test_the_data_service_pool_is_no_training_replica():
    """Vertex AI's TF_CONFIG calls workerpool2 "ps": training counts and connects to the chief and workers only."""
    env = cluster_spec("workerpool1", 0)
    assert detect_hardware(env, 1).num_workers == 2
    assert training_tf_config(env) == {"cluster": {"chief": ["chief:2222"], "worker": ["worker:2222"]},
                                       "task": {"type": "worker", "index": 0}}
    vertex = {"cluster": {"chief": ["chief:2222"], "ps": POOLS["workerpool2"]}, "task": {"type": "chief", "index": 0}}
    assert training_tf_config({"TF_CONFIG": json.dumps(vertex)})["cluster"] == {"chief": ["chief:2222"]}


@pytest.mark.parametrize("args, env, message", [
    ([], {}, "data-service: give --dispatcher and/or --worker, or run it in Vertex AI's workerpool2"),
    ([], cluster_spec("workerpool0", 0), "data-service runs in Vertex AI's workerpool2, but CLUSTER_SPEC puts "
                                         "this replica in workerpool0 (index 0) with 2 workerpool2 replica(s)"),
    (["--worker"], {}, "data-service --worker needs --dispatcher-address HOST:PORT"),
    (["--dispatcher-address", "a:1"], {}, "data-service --dispatcher-address is where a --worker registers"),
    (["--dispatcher", "--worker", "--dispatcher-address", "a:1"], {}, "data-service --dispatcher-address is where"),
    (["--worker", "--dispatcher-address", "a"], {}, "--dispatcher-address: 'a' is not HOST:PORT"),
])
def test_bad_roles_are_one_line_errors(args, env, message, monkeypatch, capsys):
    monkeypatch.delenv("CLUSTER_SPEC", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["data-service", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_malformed_service_address_is_refused_first(tmp_path):
    with pytest.raises(UserError, match=r"^--data-service must be grpc://HOST:PORT \(the data-service dispatcher\), "
                                        r"not 'localhost:5050'$"):
        config.write_params(tmp_path, "demo", data_service="localhost:5050")


def test_config_takes_the_address_from_cluster_spec_unless_given(small_bucket, tmp_path, monkeypatch):
    """On a Vertex AI chief beside a workerpool2, DATA_SERVICE may be left out; a given address wins."""
    from trainer.prepare import prepare

    prepare(small_bucket, tmp_path)
    monkeypatch.setenv("CLUSTER_SPEC", cluster_spec("workerpool0", 0)["CLUSTER_SPEC"])
    for given, address in ((None, "grpc://ds0:2222"), ("grpc://other:5050", "grpc://other:5050")):
        params = config.load_params(config.write_params(tmp_path, "demo", data_service=given).parent)
        assert (params.task.train_data.enable_tf_data_service, params.task.train_data.tf_data_service_address,
                params.task.validation_data.enable_tf_data_service) == (True, address, False)
        assert json.loads((tmp_path / "experiment.json").read_text())["data_service"] == address


def test_two_workers_produce_the_training_input(small_bucket, tmp_path):
    """A dispatcher and two workers on 127.0.0.1 feed 4 steps of the demo model (start.sh, DATA_SERVICE=). Each worker's log (its tf.data
    service task at VLOG 3) shows it built the training dataset's iterator and served elements to training; the
    dataset graph it ran (TF_DUMP_GRAPH_PREFIX) is our Parser's: Model Garden's box crop, not its image crop."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "0",
           "TF_CPP_VMODULE": "worker_impl=3"}
    roles = {"dispatcher": ["--dispatcher", "--port", str(port)],
             **{f"worker{n}": ["--worker", "--dispatcher-address", f"127.0.0.1:{port}"] for n in (1, 2)}}
    processes = {}

    def log(name):
        return (tmp_path / f"{name}.log").read_text()

    try:
        for name, args in roles.items():
            (tmp_path / name).mkdir()
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "trainer", "data-service", *args], stdout=open(tmp_path / f"{name}.log", "w"),
                stderr=subprocess.STDOUT, start_new_session=True,
                env={**env, "TF_DUMP_GRAPH_PREFIX": str(tmp_path / name)})
        for name, process in processes.items():
            wait_until(lambda: "data-service: " in log(name), process, lambda: log(name), timeout=120)
        result_dir = tmp_path / "result"
        completed = run_trainer([START_SH, 4], {"DATA_DIR": str(small_bucket), "RESULT_DIR": str(result_dir),
                                                "MODEL": "demo", "EXPORT_FORMATS": "none",
                                                "DATA_SERVICE": f"grpc://127.0.0.1:{port}"},
                                tmp_path / "start.log", timeout=300)
        assert all(process.poll() is None for process in processes.values()), {n: log(n) for n in processes}
        processes["dispatcher"].send_signal(signal.SIGTERM)
        assert processes["dispatcher"].wait(timeout=30) == 0 and "data-service: stopped" in log("dispatcher")
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert completed.returncode == 0 and "CACLI-TRAINING-SUCCESS" in completed.stdout, completed.stdout[-3000:]
    assert "config: training input from the tf.data service at grpc://127.0.0.1:" in completed.stdout
    assert json.loads((result_dir / "metrics.json").read_text())["step"] == 4
    task = yaml.safe_load((result_dir / "params.yaml").read_text())["task"]
    assert (task["train_data"]["enable_tf_data_service"], task["train_data"]["tf_data_service_address"],
            task["train_data"]["tf_data_service_job_name"]) == (True, f"grpc://127.0.0.1:{port}", "train")
    assert task["validation_data"]["enable_tf_data_service"] is False  # evaluation reads its records itself
    assert json.loads((result_dir / "experiment.json").read_text())["data_service"] == f"grpc://127.0.0.1:{port}"
    for worker in ("worker1", "worker2"):
        assert f"registered with the dispatcher at 127.0.0.1:{port}" in log(worker)
        assert "Created iterator for task" in log(worker) and "Received GetElement request" in log(worker)
        graphs = "".join(path.read_text() for path in (tmp_path / worker).glob("*TaskDef*"))
        assert "resize_and_crop_boxes" in graphs and "resize_and_crop_image" not in graphs
