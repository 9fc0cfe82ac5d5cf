"""`cloud submit --dry-run`'s estimate: each shipped spec's lines, figures taken from configs/jobs' tables here."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cloud import estimate
from cloud.__main__ import main as cloud_main
from trainer.catalogue import MODELS_DIR, load_model

REPO = Path(__file__).resolve().parent.parent
TABLE = yaml.safe_load(estimate.THROUGHPUT.read_text())
PRICE_TABLE = yaml.safe_load(estimate.PRICES.read_text())
DEFAULT = "retinanet_spinenet49_mobile"
DEFAULT_LINE = (f"estimate: {DEFAULT} (no MODEL: the trainer's default for a localization bucket; "
                f"a classification bucket trains mobilenet_v2), global batch ")
IMAGE = "europe-west4-docker.pkg.dev/proj/repo/trainer"
# spec: (the machine that runs its input pipeline, replicas of it, device, hardware kind, devices a batch is split
# over), as the spec says: the training machine, or the data-service pool's
SHIPPED = {
    "gpu": ("g2-standard-8", 1, "NVIDIA_L4", "gpu", 1),
    "python-package": ("g2-standard-8", 1, "NVIDIA_L4", "gpu", 1),
    "multi-gpu": ("a2-highgpu-4g", 1, "NVIDIA_TESLA_A100", "gpu", 4),
    "multi-worker": ("g2-standard-8", 3, "NVIDIA_L4", "gpu", 3),
    "tpu": ("ct5lp-hightpu-4t", 1, "ct5lp-hightpu-4t", "tpu", 1),
    "data-service": ("n2-highcpu-16", 2, "NVIDIA_L4", "gpu", 1),
}
UNPRICED = {"data-service": "g2-standard-8, NVIDIA_L4, n2-highcpu-16"}  # where the input runs on other machines


def submit_argv(spec, tmp_path, *flags):
    return ["submit", str(REPO / f"configs/jobs/{spec}.yaml"), "--data", "gs://data-bucket/kangaroo", "--output",
            "gs://out-bucket/runs", "--image", IMAGE, "--run-name", "r1", "--region", "europe-west4", "--project",
            "proj", "--dry-run", "--config-out", str(tmp_path / "filled.yaml"), *flags]


def dry_run(spec, tmp_path, *flags):
    """The estimate lines of `python -m cloud submit configs/jobs/SPEC.yaml ... --dry-run FLAGS`."""
    result = subprocess.run([sys.executable, "-m", "cloud", *submit_argv(spec, tmp_path, *flags)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return estimate_lines(result.stderr)


def in_process_dry_run(monkeypatch, capsys, tmp_path, spec, *flags):
    """The same in this process, where the tables' paths can be monkeypatched, from TMP_PATH with an sdist in
    dist/ (python-package.yaml needs one)."""
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dist").mkdir(exist_ok=True)
    (tmp_path / "dist" / "ca_detector_trainer-0.1.0.tar.gz").write_bytes(b"sdist")
    assert cloud_main(submit_argv(spec, tmp_path, *flags)) == 0
    return estimate_lines(capsys.readouterr().err)


def estimate_lines(stderr):
    lines = stderr.splitlines()
    found = [line for line in lines if line.startswith("estimate: ")]
    assert found and lines[-len(found):] == found  # after everything else
    return found


def write_table(tmp_path, name, table):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(table))
    return path


def input_rate(machine, replicas, model=DEFAULT):
    return TABLE["machine_vcpus"][machine] * replicas * 1000 / TABLE["models"][model]["cpu_ms_per_image"]


def batch(kind, devices, model=DEFAULT):
    return load_model(model).hardware.of(kind).batch_size * devices


def test_the_tables_cover_the_catalogue_and_every_shipped_spec():
    assert set(TABLE["models"]) == {path.stem for path in MODELS_DIR.glob("*.yaml")}
    machines = {machine for machine, *_ in SHIPPED.values()} | {"n1-standard-8"}
    assert set(TABLE["machine_vcpus"]) == set(PRICE_TABLE["machines"]) == machines
    assert set(PRICE_TABLE["accelerators"]) == {"NVIDIA_L4", "NVIDIA_TESLA_A100"}
    devices = {device for _, _, device, *_ in SHIPPED.values()} | {"n1-standard-8"}
    # no device was measured yet: every estimate is an input-bound lower limit (configs/jobs/README.md)
    assert all(model["device_images_per_s"] == dict.fromkeys(devices) for model in TABLE["models"].values())


@pytest.mark.parametrize("spec", sorted(SHIPPED))
def test_each_shipped_spec_prints_its_input_bound_lower_limit(monkeypatch, capsys, tmp_path, spec):
    machine, replicas, device, kind, devices = SHIPPED[spec]
    rate, images = input_rate(machine, replicas), 10_000_000 * batch(kind, devices)
    minutes = int(images / rate // 60)
    assert minutes >= 60  # so it is printed in hours and minutes
    unpriced = UNPRICED.get(spec) or ", ".join([machine] + ([device] if device != machine else []))
    cpu_ms = TABLE["models"][DEFAULT]["cpu_ms_per_image"]
    assert in_process_dry_run(monkeypatch, capsys, tmp_path, spec, "--steps", "10000000") == [
        f"{DEFAULT_LINE}{batch(kind, devices)}",
        f"estimate: input pipeline {TABLE['machine_vcpus'][machine] * replicas} vCPUs x 1000 / {cpu_ms:g} ms per "
        f"image = {rate:,.1f} images/s; {device}: not measured",
        f"estimate: 10,000,000 steps ({images:,} images): input-bound lower limit: at least {minutes // 60} h "
        f"{minutes % 60} min; price not in configs/jobs/prices.yaml: {unpriced}"]


def test_without_steps_the_estimate_is_per_1000_steps_and_says_why(tmp_path):
    lines = dry_run("gpu", tmp_path, "--model", "retinanet_resnet50_fpn")
    images = 1000 * batch("gpu", 1, "retinanet_resnet50_fpn")
    seconds = images / input_rate("g2-standard-8", 1, "retinanet_resnet50_fpn")
    assert seconds < 60  # so it is printed in seconds
    assert lines[0] == "estimate: retinanet_resnet50_fpn, global batch 16"
    assert lines[2:] == [
        f"estimate: per 1,000 steps ({images:,} images): input-bound lower limit: at least {int(seconds)} s; "
        f"price not in configs/jobs/prices.yaml: g2-standard-8, NVIDIA_L4",
        "estimate: no --steps: the trainer's default is 20 passes over the training images (at least 100 steps), "
        "which a dry run cannot count without reading the bucket"]


def test_under_an_hour_the_time_is_in_minutes(tmp_path):
    images = 5000 * batch("gpu", 1)
    minutes = int(images / input_rate("g2-standard-8", 1) // 60)
    assert 0 < minutes < 60
    assert dry_run("gpu", tmp_path, "--steps", "5000")[-1].startswith(
        f"estimate: 5,000 steps ({images:,} images): input-bound lower limit: at least {minutes} min; ")


def test_a_model_without_a_measured_input_pipeline_gets_no_estimate(tmp_path):
    """cpu.yaml trains the demo model for 20 steps unless told otherwise; no figure was measured for it."""
    assert TABLE["models"]["demo"]["cpu_ms_per_image"] is None
    assert dry_run("cpu", tmp_path) == [
        f"estimate: demo, global batch {batch('cpu', 1, 'demo')}",
        "estimate: no training input pipeline figure was measured for demo (configs/jobs/throughput.yaml): "
        "no time or cost estimate"]


def test_prices_give_a_cost_summed_over_every_pool_and_a_null_price_is_named(monkeypatch, capsys, tmp_path):
    prices = {**PRICE_TABLE, "date": "2026-01-01", "machines": {"g2-standard-8": 0.75},
              "accelerators": {"NVIDIA_L4": 0.5}}
    monkeypatch.setattr(estimate, "PRICES", write_table(tmp_path, "prices.yaml", prices))
    lines = in_process_dry_run(monkeypatch, capsys, tmp_path, "multi-worker", "--steps", "300000")
    seconds = 300000 * batch("gpu", 3) / input_rate("g2-standard-8", 3)
    cost = math.floor(seconds / 3600 * (0.75 + 0.5) * 3 * 100) / 100
    assert lines[-1].endswith(f"; at least ${cost:,.2f} ({PRICE_TABLE['region']} prices read 2026-01-01)")

    prices["accelerators"] = {"NVIDIA_L4": None}
    write_table(tmp_path, "prices.yaml", prices)
    lines = in_process_dry_run(monkeypatch, capsys, tmp_path, "multi-worker", "--steps", "300000")
    assert lines[-1].endswith(f"; price not in {tmp_path / 'prices.yaml'}: NVIDIA_L4")


@pytest.mark.parametrize("share, bound", [(0.5, "NVIDIA_TESLA_A100"), (2.0, "input pipeline")])
def test_a_measured_device_makes_the_slower_side_the_bound(monkeypatch, capsys, tmp_path, share, bound):
    """With a device figure the time is the slower rate's, no longer a lower limit, and the cost an estimate too."""
    rate = input_rate("a2-highgpu-4g", 1)
    per_gpu = rate * share / 4
    table = {**TABLE, "models": {DEFAULT: {**TABLE["models"][DEFAULT],
                                           "device_images_per_s": {"NVIDIA_TESLA_A100": per_gpu}}}}
    monkeypatch.setattr(estimate, "THROUGHPUT", write_table(tmp_path, "throughput.yaml", table))
    monkeypatch.setattr(estimate, "PRICES", write_table(tmp_path, "prices.yaml", {
        **PRICE_TABLE, "machines": {"a2-highgpu-4g": 1.25}, "accelerators": {"NVIDIA_TESLA_A100": 2.5}}))
    lines = in_process_dry_run(monkeypatch, capsys, tmp_path, "multi-gpu", "--steps", "900000")
    images = 900000 * batch("gpu", 4)
    seconds = images / min(rate, per_gpu * 4)
    minutes = int(seconds // 60)
    cost = math.floor(seconds / 3600 * (1.25 + 2.5 * 4) * 100) / 100
    assert lines[1].endswith(f"; NVIDIA_TESLA_A100: {per_gpu * 4:,.1f} images/s")
    assert lines[2] == (f"estimate: 900,000 steps ({images:,} images): {minutes // 60} h {minutes % 60} min, "
                        f"bound: {bound}; ${cost:,.2f} ({PRICE_TABLE['region']} prices read {PRICE_TABLE['date']})")
