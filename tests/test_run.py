"""The run stage's multi-worker rule: only the chief prepares and configures."""
import json

import pytest

from trainer import config
from trainer import run as run_stage
from trainer.errors import UserError


@pytest.mark.parametrize("env, chief", [
    ({}, True),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}})}, True),
    ({"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}})}, False),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}})}, True),
    ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}})}, False),
    ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1", "c:1"]},
                                  "task": {"type": "workerpool1", "index": 1}})}, False),
    ({"CLUSTER_SPEC": json.dumps({"cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1"]},
                                  "task": {"type": "workerpool0", "index": 0}})}, True),
])
def test_only_the_chief_prepares(env, chief):
    assert config.is_chief(env) is chief


def test_a_worker_waits_for_the_chief_and_writes_nothing(tmp_path, sample_bucket, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    monkeypatch.setattr(run_stage, "CHIEF_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(run_stage, "CHIEF_POLL_SECONDS", 0.05)
    with pytest.raises(UserError, match="the chief did not write .*params.yaml within 0.3 s"):
        run_stage.run(sample_bucket, tmp_path / "result", model="demo")
    assert not (tmp_path / "result").exists()
