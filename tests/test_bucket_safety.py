"""The bucket is never written or deleted: not by an overlapping RESULT_DIR, not by a failing stage, not by a run.

Every test takes a digest of every file under the bucket before, and compares after.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from digests import tree_digests

from trainer.errors import UserError
from trainer.prepare import prepare
from trainer.run import run
from trainer.sample import make_sample_bucket

REPO = Path(__file__).resolve().parent.parent


def _bucket_inside_result(tmp_path):
    """prepare --data-dir P/data --result-dir P: the layout that deleted the bucket."""
    make_sample_bucket(tmp_path / "P" / "data", 6)
    return tmp_path / "P" / "data", tmp_path / "P", tmp_path / "P"


def _images_under_data(tmp_path):
    """RESULT_DIR = DATA_DIR with the images in data/: prepare's output folder is the images' folder."""
    bucket = tmp_path / "B"
    annotations = make_sample_bucket(bucket / "data", 6)
    annotations["annotations"] = {f"data/{key}": boxes for key, boxes in annotations["annotations"].items()}
    (bucket / "_annotations.json").write_text(json.dumps(annotations))
    (bucket / "data" / "_annotations.json").unlink()
    return bucket, bucket, bucket


def _result_inside_bucket(tmp_path):
    make_sample_bucket(tmp_path / "B", 6)
    return tmp_path / "B", tmp_path / "B" / "runs" / "one", tmp_path / "B"


LAYOUTS = [_bucket_inside_result, _images_under_data, _result_inside_bucket]
OVERLAP = r"(are the same folder|overlap: the (bucket|result folder) is inside the (result folder|bucket)); the " \
          r"bucket is never written"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_prepare_and_run_refuse_overlapping_folders(tmp_path, layout):
    data_dir, result_dir, whole = layout(tmp_path)
    before = tree_digests(whole)
    for stage in (prepare, run):
        with pytest.raises(UserError, match=OVERLAP):
            stage(data_dir, result_dir, model="demo")
        assert tree_digests(whole) == before


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_command_line_and_start_sh_refuse_overlapping_folders(tmp_path, layout):
    """One line, a failure marker, and no logs/ or anything else written into the bucket."""
    data_dir, result_dir, whole = layout(tmp_path)
    before = tree_digests(whole)
    env = {**os.environ, "DATA_DIR": str(data_dir), "RESULT_DIR": str(result_dir), "MODEL": "demo",
           "PYTHON": sys.executable}
    for command in ([sys.executable, "-m", "trainer", "prepare", "--data-dir", str(data_dir),
                     "--result-dir", str(result_dir)],
                    [sys.executable, "-m", "trainer", "run", "--data-dir", str(data_dir),
                     "--result-dir", str(result_dir)],
                    ["bash", str(REPO / "packaging" / "start.sh"), "5"]):
        completed = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert completed.returncode == 1, completed.stderr
        errors = completed.stderr.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("error: RESULT_DIR "), completed.stderr
        assert " the bucket is never written" in errors[0]
        assert completed.stdout.strip() == ("CACLI-TRAINING-FAILED" if command[0] == "bash" else "")
        assert tree_digests(whole) == before


def test_a_failing_stage_leaves_the_bucket_as_it_was(tmp_path):
    """prepare on a bucket with no readable image fails with one line; the bucket's files are untouched."""
    bucket = tmp_path / "bucket"
    annotations = make_sample_bucket(bucket, 3)
    for key in annotations["annotations"]:
        (bucket / key).write_bytes(b"not a jpeg")
    before = tree_digests(bucket)
    with pytest.raises(UserError, match="no usable image"):
        prepare(bucket, tmp_path / "result")
    assert tree_digests(bucket) == before


def test_the_bucket_is_unchanged_after_every_stage_of_a_run(trained_run, sample_bucket):
    """The shared start.sh run (prepare, config, train, export, report) kept the digests taken before it."""
    before = json.loads((trained_run.parent / "bucket-digests.json").read_text())
    assert len(before) == len(list(sample_bucket.iterdir()))
    assert tree_digests(sample_bucket) == before
