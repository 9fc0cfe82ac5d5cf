"""The chief's ready.json marker and a worker's wait, with the functions themselves (no training)."""
import json
import threading
import time

import pytest

from trainer import run as run_stage
from trainer.errors import UserError

CLUSTER = {"cluster": {"chief": ["10.0.0.2:2222"], "worker": ["10.0.0.3:2222"]}}
WANTED = {"model": "demo", "steps": None, "batch_size": None}


def replica(role, job="1234567890", cluster=CLUSTER):
    """The environment Vertex AI gives a replica of job JOB: its TF_CONFIG and CLOUD_ML_JOB_ID."""
    return {"CLOUD_ML_JOB_ID": job, "TF_CONFIG": json.dumps({**cluster, "task": {"type": role, "index": 0}})}


@pytest.fixture
def result_dir(tmp_path):
    """What a chief writes for its workers, before its marker."""
    result_dir = tmp_path / "result"
    (result_dir / "data").mkdir(parents=True)
    for name, text in (("data/report.json", "{}"), ("data/labels.json", '["a"]'), ("params.yaml", "task: {}\n"),
                       ("experiment.json", json.dumps({"model": "demo", "steps": 20, "batch_size": 4}))):
        (result_dir / name).write_text(text)
    return result_dir


@pytest.fixture
def quick_wait(monkeypatch):
    monkeypatch.setattr(run_stage, "CHIEF_WAIT_SECONDS", 0.5)
    monkeypatch.setattr(run_stage, "CHIEF_POLL_SECONDS", 0.02)


def test_a_restarted_worker_waits_for_the_new_attempts_marker(result_dir, quick_wait):
    """Attempt 1: the worker starts from the chief's marker. Both die; the restarted worker must not take that
    marker again (its chief is gone), only the one the restarted chief writes."""
    chief, worker = replica("chief"), replica("worker")
    run_stage._write_ready(result_dir, chief)
    first = json.loads((result_dir / "ready.json").read_text())
    assert run_stage._chief_ready(result_dir, WANTED, worker) == first
    run_stage._wait_for_chief(result_dir, WANTED, worker)
    assert json.loads((result_dir / "ready-worker-0.json").read_text()) == {"nonce": first["nonce"]}

    # attempt 2: the worker is up before the chief; the files and the marker are attempt 1's, unchanged
    assert run_stage._chief_ready(result_dir, WANTED, worker) is None
    with pytest.raises(UserError, match="^the chief did not write .*ready.json within 0.5 s$"):
        run_stage._wait_for_chief(result_dir, WANTED, worker)

    def restarted_chief():
        time.sleep(0.1)
        (result_dir / "ready.json").unlink()
        run_stage._write_ready(result_dir, chief)

    thread = threading.Thread(target=restarted_chief)
    thread.start()
    run_stage._wait_for_chief(result_dir, WANTED, worker)
    thread.join()
    second = json.loads((result_dir / "ready.json").read_text())
    assert second["nonce"] != first["nonce"] and second["files"] == first["files"]
    assert json.loads((result_dir / "ready-worker-0.json").read_text()) == {"nonce": second["nonce"]}


@pytest.mark.parametrize("other", [
    replica("worker", job="999"),  # the same RESULT_DIR, submitted again: a new job
    replica("worker", cluster={"cluster": {"chief": ["10.0.0.2:2222"], "worker": ["10.0.0.9:2222"]}}),
    {},  # a single-machine run's marker
])
def test_a_worker_never_takes_another_jobs_marker(result_dir, other):
    run_stage._write_ready(result_dir, other if other else {})
    assert run_stage._chief_ready(result_dir, WANTED, replica("worker")) is None
    run_stage._write_ready(result_dir, replica("chief"))
    assert run_stage._chief_ready(result_dir, WANTED, replica("worker"))


def test_the_job_identity_is_the_same_on_every_replica_of_vertex_ai():
    """The chief's CLUSTER_SPEC/TF_CONFIG and the worker's differ in their task only."""
    spec = {"cluster": {"workerpool0": ["cmle-chief:2222"], "workerpool1": ["cmle-worker-0:2222"]}}
    chief, worker = ({"CLOUD_ML_JOB_ID": "42", "CLUSTER_SPEC": json.dumps({**spec, "task": {"type": pool, "index": 0}})}
                     for pool in ("workerpool0", "workerpool1"))
    assert run_stage._job_identity(chief) == run_stage._job_identity(worker)
    assert run_stage._job_identity(chief) != run_stage._job_identity({**chief, "CLOUD_ML_JOB_ID": "43"})


def test_a_marker_without_an_identity_is_not_taken(result_dir):
    """A marker as the previous release wrote it (digests only) comes from an attempt that cannot be told apart."""
    run_stage._write_ready(result_dir, replica("chief"))
    marker = json.loads((result_dir / "ready.json").read_text())
    (result_dir / "ready.json").write_text(json.dumps({"files": marker["files"]}))
    assert run_stage._chief_ready(result_dir, WANTED, replica("worker")) is None
