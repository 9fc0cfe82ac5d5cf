"""Packaging: dist/trainer.zip's members and determinism, the sdist, the Dockerfiles, and the zip as a job runs it."""
import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def load_build_module():
    spec = importlib.util.spec_from_file_location("packaging_build", REPO / "packaging" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """What `make package` builds, written to a temporary dist folder."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "packaging/build.py", "--dist-dir", str(out)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def repo_files(tree, suffix=""):
    return {path.relative_to(REPO).as_posix() for path in (REPO / tree).rglob(f"*{suffix}")
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}


def test_zip_holds_start_sh_the_trainer_package_and_the_model_catalogue(dist):
    with zipfile.ZipFile(dist / "trainer.zip") as bundle:
        infos = bundle.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert set(names) == {"start.sh"} | repo_files("trainer") | repo_files("configs/models")
    assert {"trainer/__main__.py", "trainer/catalogue.py", "configs/models/demo.yaml"} <= set(names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    modes = {info.filename: info.external_attr >> 16 for info in infos}
    assert modes.pop("start.sh") == 0o100755 and set(modes.values()) == {0o100644}


def test_zip_is_deterministic(dist, tmp_path):
    rebuilt = load_build_module().build_zip(tmp_path / "trainer.zip")
    assert rebuilt.read_bytes() == (dist / "trainer.zip").read_bytes()


def test_sdist_holds_both_packages(dist):
    [sdist] = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"setup.py", "trainer/__main__.py", "trainer/catalogue.py", "cloud/__main__.py"} <= names


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.tpu"])
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run([str(VENV_BIN / "hadolint"), str(REPO / "packaging" / dockerfile)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.tpu"])
def test_docker_build_context_holds_what_the_dockerfile_copies(dockerfile):
    ignore = (REPO / "packaging" / f"{dockerfile}.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {source for line in (REPO / "packaging" / dockerfile).read_text().splitlines()
              if line.startswith("COPY ") and "--from" not in line for source in line.split()[1:-1]}
    assert copied == allowed
    assert "*" in ignore


def test_the_unzipped_bundle_trains_the_demo_model(dist, sample_bucket, tmp_path):
    """A bare `unzip trainer.zip && bash start.sh 2`, outside the repo, with the zip's own trainer package."""
    job_dir, result_dir = tmp_path / "job", tmp_path / "result"
    with zipfile.ZipFile(dist / "trainer.zip") as bundle:
        bundle.extractall(job_dir)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(job_dir),
           "DATA_DIR": str(sample_bucket), "RESULT_DIR": str(result_dir), "MODEL": "demo",
           "EXPORT_FORMATS": "none", "TF_CPP_MIN_LOG_LEVEL": "2"}

    imported = subprocess.run(["python", "-c", "import trainer; print(trainer.__file__)"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == str(job_dir / "trainer" / "__init__.py")

    run = subprocess.run(["bash", "start.sh", "2"], cwd=job_dir, env=env, capture_output=True, text=True,
                         timeout=1500)
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "CACLI-TRAINING-SUCCESS" in output, output[-4000:]
    assert (result_dir / "params.yaml").is_file()
