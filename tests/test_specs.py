"""Job specs: every shipped spec fills and parses into the real aiplatform_v1.CustomJobSpec; mistakes name the field."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.cloud import aiplatform_v1
from google.protobuf import json_format

from cloud.__main__ import main as cloud_main
from cloud.estimate import PRICES, THROUGHPUT
from cloud.specs import PLACEHOLDERS, fill_job_spec
from trainer.errors import UserError
from trainer.hardware import DATA_SERVICE_POOL

REPO = Path(__file__).resolve().parent.parent
SPECS = sorted(set((REPO / "configs" / "jobs").glob("*.yaml")) - {THROUGHPUT, PRICES})  # the rest: the estimate's tables
VALUES = {
    "IMAGE": "europe-west4-docker.pkg.dev/proj/repo/trainer",
    "DATA_DIR": "/gcs/data-bucket/kangaroo",
    "RESULT_DIR": "/gcs/out-bucket/runs/r1",
    "OUTPUT_URI": "gs://out-bucket/runs/r1",
    "STEPS": "500",
    "MODEL": "demo",
    "RUN_NAME": "r1",
    "STRATEGY": "",
    "PACKAGE_PATH": "/gcs/out-bucket/runs/r1/package/ca_detector_trainer-0.1.0.tar.gz",
}


def write_spec(tmp_path, spec):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def minimal_spec(**container):
    return {"workerPoolSpecs": [{"machineSpec": {"machineType": "n1-standard-8"}, "replicaCount": 1,
                                 "containerSpec": {"imageUri": "${IMAGE}:gpu", **container}}]}


def test_the_required_specs_are_shipped():
    assert {path.stem for path in SPECS} >= {"gpu", "multi-gpu", "multi-worker", "tpu", "cpu", "python-package"}


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_every_shipped_spec_fills_into_a_custom_job_spec(path):
    spec = fill_job_spec(path, VALUES)
    parsed = json_format.ParseDict(spec, aiplatform_v1.CustomJobSpec.pb()())
    assert "${" not in json.dumps(spec)
    assert parsed.base_output_directory.output_uri_prefix == VALUES["OUTPUT_URI"]
    for index, pool in enumerate(parsed.worker_pool_specs):
        if not pool.machine_spec.machine_type:  # an empty pool ({}): how a spec skips one
            continue
        if f"workerpool{index}" == DATA_SERVICE_POOL:  # reads its role from CLUSTER_SPEC, trains nothing
            assert list(pool.container_spec.command) == ["python", "-m", "trainer", "data-service"]
            continue
        env = {variable.name: variable.value for variable in pool.container_spec.env}
        assert (env["DATA_DIR"], env["RESULT_DIR"], env["MODEL"]) == (VALUES["DATA_DIR"], VALUES["RESULT_DIR"], "demo")
        assert list(pool.container_spec.args) == ["500"]


def test_hardware_of_the_shipped_specs():
    pools = {path.stem: fill_job_spec(path, VALUES)["workerPoolSpecs"] for path in SPECS}
    assert pools["gpu"][0]["machineSpec"] == {"machineType": "g2-standard-8", "acceleratorType": "NVIDIA_L4",
                                              "acceleratorCount": 1}
    assert pools["multi-gpu"][0]["machineSpec"]["acceleratorCount"] == 4
    assert [pool["replicaCount"] for pool in pools["multi-worker"]] == [1, 2]
    assert pools["tpu"][0]["machineSpec"] == {"machineType": "ct5lp-hightpu-4t", "tpuTopology": "2x2"}
    assert pools["tpu"][0]["containerSpec"]["imageUri"].endswith(":tpu")
    assert "acceleratorType" not in pools["cpu"][0]["machineSpec"]
    assert pools["data-service"][0] == pools["gpu"][0] and pools["data-service"][1] == {}
    assert (pools["data-service"][2]["machineSpec"], pools["data-service"][2]["replicaCount"]) == (
        {"machineType": "n2-highcpu-16"}, 2)
    package = pools["python-package"][0]["containerSpec"]
    assert package["imageUri"].endswith(":gpu")
    assert {"name": "PACKAGE", "value": VALUES["PACKAGE_PATH"]} in package["env"]


@pytest.mark.parametrize("strategy, expected", [("", "STANDARD"), ("SPOT", "SPOT")])
def test_every_shipped_spec_takes_spot_scheduling(strategy, expected):
    for path in SPECS:
        parsed = json_format.ParseDict(fill_job_spec(path, {**VALUES, "STRATEGY": strategy}),
                                       aiplatform_v1.CustomJobSpec.pb()())
        assert aiplatform_v1.Scheduling.Strategy(parsed.scheduling.strategy).name == expected, path.stem
        # only jobs whose replicas cannot take back a restarted one (collectives, the data service's dispatcher)
        # restart all replicas together when Vertex restarts one
        assert parsed.scheduling.restart_job_on_worker_restart is (path.stem in ("multi-worker", "data-service")), \
            path.stem


def test_optional_values_not_given_are_left_out_and_defaults_apply():
    values = {**VALUES, "STEPS": "", "MODEL": ""}
    for spec in ("gpu", "python-package"):
        container = fill_job_spec(REPO / f"configs/jobs/{spec}.yaml", values)["workerPoolSpecs"][0]["containerSpec"]
        assert container["args"] == []
        assert "MODEL" not in {variable["name"] for variable in container["env"]}
    cpu = fill_job_spec(REPO / "configs/jobs/cpu.yaml", values)["workerPoolSpecs"][0]["containerSpec"]
    assert cpu["args"] == ["20"]
    assert {"name": "MODEL", "value": "demo"} in cpu["env"]


def test_a_typo_in_a_field_name_is_an_error_naming_it(tmp_path):
    spec = minimal_spec()
    spec["workerPoolSpec"] = spec.pop("workerPoolSpecs")
    with pytest.raises(UserError, match=r'has no field named "workerPoolSpec"'):
        fill_job_spec(write_spec(tmp_path, spec), VALUES)


@pytest.mark.parametrize("field, value, named", [
    ("replicaCount", "two", "replicaCount"),
    ("machineSpec", {"machineType": "a2-highgpu-1g", "acceleratorType": "NVIDIA_A9000"}, "acceleratorType"),
    ("containerSpec", {"imageUri": "x", "env": [{"name": "A", "value": 3}]}, "value"),
])
def test_a_wrong_type_is_an_error_naming_the_field(tmp_path, field, value, named):
    spec = minimal_spec()
    spec["workerPoolSpecs"][0][field] = value
    with pytest.raises(UserError, match=named) as raised:
        fill_job_spec(write_spec(tmp_path, spec), VALUES)
    assert "\n" not in str(raised.value)


def test_an_unknown_placeholder_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"unknown placeholder \$\{BUCKET\}"):
        fill_job_spec(write_spec(tmp_path, minimal_spec(args=["${BUCKET}"])), VALUES)


def test_a_missing_image_says_how_to_give_it(tmp_path):
    with pytest.raises(UserError, match=r"needs \$\{IMAGE\}.*--image"):
        fill_job_spec(write_spec(tmp_path, minimal_spec()), {**VALUES, "IMAGE": None})


def test_every_placeholder_is_documented():
    readme = (REPO / "configs" / "jobs" / "README.md").read_text()
    assert all(f"${{{name}}}" in readme for name in PLACEHOLDERS)


def run_cloud(*args):
    return subprocess.run([sys.executable, "-m", "cloud", *args], cwd=REPO, capture_output=True, text=True)


def test_dry_run_prints_the_custom_job_and_the_gcloud_command(tmp_path):
    config = tmp_path / "filled.yaml"
    result = run_cloud("submit", "configs/jobs/multi-worker.yaml", "--data", "gs://data-bucket/kangaroo",
                       "--output", "gs://out-bucket/runs", "--image", VALUES["IMAGE"], "--model", "demo",
                       "--steps", "300", "--run-name", "r1", "--region", "europe-west4", "--project", "proj",
                       "--spot", "--dry-run", "--config-out", str(config))
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    json_format.ParseDict(job, aiplatform_v1.CustomJob.pb()())
    assert job["displayName"] == "r1"
    chief = job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    assert chief["args"] == ["300"]
    assert {"name": "RESULT_DIR", "value": "/gcs/out-bucket/runs/r1"} in chief["env"]
    assert yaml.safe_load(config.read_text()) == job["jobSpec"]
    assert job["jobSpec"]["scheduling"] == {"timeout": "86400s", "strategy": "SPOT", "restartJobOnWorkerRestart": True}
    assert (f"gcloud ai custom-jobs create --region=europe-west4 --display-name=r1 --config={config} "
            f"--project=proj") in result.stderr


@pytest.mark.parametrize("extra, message", [
    (["--image", VALUES["IMAGE"], "--model", "no-such-model"], "error: unknown model 'no-such-model'"),
    (["--image", VALUES["IMAGE"] + ":v2"], "error: --image '" + VALUES["IMAGE"] + ":v2': give the repository without"),
    ([], "error: " + str(REPO / "configs/jobs/gpu.yaml") + " needs ${IMAGE}"),
    (["--image", VALUES["IMAGE"], "--steps", "0"], "error: --steps must be a positive number"),
    (["--image", VALUES["IMAGE"], "--run-name", "a/b"], "error: --run-name 'a/b'"),
])
def test_submit_rejects_bad_flags_in_one_line(capsys, monkeypatch, tmp_path, extra, message):
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    argv = ["submit", str(REPO / "configs/jobs/gpu.yaml"), "--data", "gs://data-bucket", "--output",
            "gs://out-bucket/runs", "--dry-run", "--config-out", str(tmp_path / "filled.yaml"), *extra]
    assert cloud_main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_make_submit_passes_spot_and_the_run_name():
    result = subprocess.run(["make", "-n", "submit", "DATA=gs://d/k", "OUTPUT=gs://o/runs", "RUN=r1", "SPOT=1",
                             f"IMAGE={VALUES['IMAGE']}"], cwd=REPO, capture_output=True, text=True, check=True)
    [command] = [line for line in result.stdout.splitlines() if " -m cloud submit " in line]
    assert command.split(" -m cloud submit ", 1)[1].split() == [
        "configs/jobs/gpu.yaml", "--data", "gs://d/k", "--output", "gs://o/runs", "--image", VALUES["IMAGE"],
        "--run-name", "r1", "--spot"]
