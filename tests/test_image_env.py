"""The job in the training images' Python environment, not the tests' own.

`make image-env` builds .venv-image with packaging/image-env.sh, the script both Dockerfiles run (the
`train,export` extras, Node and @tensorflow/tfjs; CUDA's libraries left out). The job runs there as the
image runs it: the unzipped dist/trainer.zip, start.sh, a gs:// zoo checkpoint (from fake-gcs-server).
"""
import ast
import json
import os
import subprocess
import sys
import zipfile

import pytest
import yaml
from conftest import REPO, load_build_module

from trainer.run_dir import EXPORT_DIR

IMAGE_PYTHON = REPO / ".venv-image" / "bin" / "python"
# Scripts that trainer/ runs with another interpreter, not the image's: MediaPipe has an environment of its own.
OTHER_INTERPRETERS = {REPO / "trainer" / "export" / "mediapipe_run.py"}


@pytest.fixture(scope="module")
def image_python():
    assert IMAGE_PYTHON.is_file(), f"{IMAGE_PYTHON} is missing: run `make image-env` (`make test` does)"
    return IMAGE_PYTHON


def third_party_imports():
    """Every import statement in trainer/ of a module outside the standard library and the trainer, as source."""
    statements = set()
    for path in sorted(set((REPO / "trainer").rglob("*.py")) - OTHER_INTERPRETERS):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            if any(name.split(".")[0] not in sys.stdlib_module_names | {"trainer"} for name in names):
                statements.add(ast.unparse(node))
    return sorted(statements)


def test_every_module_the_trainer_imports_is_in_the_image(image_python):
    """`from google.cloud import storage` (download.py) once failed there: only the cloud extra brought it."""
    statements = third_party_imports()
    assert "from google.cloud import storage" in statements and "import tensorflow as tf" in statements
    probe = ("import json, sys\nfailed = {}\nfor statement in json.loads(sys.argv[1]):\n"
             "    try:\n        exec(statement, {})\n"
             "    except Exception as err:\n        failed[statement] = f'{type(err).__name__}: {err}'\n"
             "print(json.dumps(failed))\n")
    completed = subprocess.run([str(image_python), "-c", probe, json.dumps(statements)], capture_output=True,
                               text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {}


def _demo_zoo_archive(bucket, folder):
    """The demo model's checkpoint in Model Garden's published layout, tarred (tests/zoo_archive.py)."""
    from zoo_archive import tar_folder, write_checkpoint

    from trainer import config
    from trainer.hardware import Hardware
    from trainer.prepare import prepare

    prepare(bucket, folder / "zoo", model="demo")
    config.write_params(folder / "zoo", "demo", hardware=Hardware("cpu"), init_checkpoint="")
    write_checkpoint(config.load_params(folder / "zoo"), folder / "demo-zoo")
    return tar_folder(folder / "demo-zoo", folder / "demo-zoo.tar.gz")


def test_the_job_runs_in_the_image_environment_from_the_zip_with_a_gs_checkpoint(image_python, gcs_client,
                                                                                   gcs_server, tmp_path):
    from trainer.sample import make_sample_bucket

    job_dir, bucket, result_dir = tmp_path / "app", tmp_path / "bucket", tmp_path / "result"
    with zipfile.ZipFile(load_build_module().build_zip(tmp_path / "trainer.zip")) as bundle:
        bundle.extractall(job_dir)
    make_sample_bucket(bucket, 16)
    archive = _demo_zoo_archive(bucket, tmp_path)
    gcs_client.create_bucket("zoo-image-env").blob("demo/demo-zoo.tar.gz").upload_from_filename(str(archive))

    env = {**{key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "TFJS_NODE_MODULES")},
           "DATA_DIR": str(bucket), "RESULT_DIR": str(result_dir), "MODEL": "demo", "PYTHON": str(image_python),
           "CHECKPOINT_URL": "gs://zoo-image-env/demo/demo-zoo.tar.gz", "CHECKPOINT_CACHE": str(tmp_path / "cache"),
           "STORAGE_EMULATOR_HOST": gcs_server.url, "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(["bash", "start.sh", "4"], cwd=job_dir, env=env, capture_output=True, text=True,
                               timeout=1500)
    console = completed.stdout + completed.stderr
    assert completed.returncode == 0 and completed.stdout.strip().splitlines()[-1] == "CACLI-TRAINING-SUCCESS", \
        console[-5000:]
    assert "CONVERSION-FAILED" not in console and "WARNING: failed" not in console, console[-5000:]

    init = yaml.safe_load((result_dir / "params.yaml").read_text())["task"]["init_checkpoint"]
    assert init.startswith(str(tmp_path / "cache")) and os.path.isfile(f"{init}.index"), init
    evaluation = json.loads((result_dir / EXPORT_DIR / "evaluation.json").read_text())
    written = ["coreml", "saved_model", "tfjs", "tflite"]  # and mediapipe, evaluated where .venv-mediapipe is found
    assert set(evaluation) - {"mediapipe"} == set(written), evaluation
    assert all("AP" in evaluation[name] and evaluation[name]["images"] > 0 for name in written), evaluation
