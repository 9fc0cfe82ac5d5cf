"""The whole job on a RESULT_DIR audited as Cloud Storage FUSE would need: no directory renames."""
import os
import subprocess
import sys

from conftest import REPO
from fuse_audit import assert_no_directory_renames


def test_the_whole_job_renames_no_directory_under_result_dir(trained_run):
    """The shared run (start.sh: every stage and every export format) ran under the audit hook
    (conftest's trained_run); test_train's killed, preempted and resumed job checks its own log the same way."""
    assert_no_directory_renames(trained_run.parent / "fuse-audit.log", runs=1)


def test_the_audit_hook_logs_directory_renames_under_result_dir_only(tmp_path):
    """The hook the job test relies on: a folder moved by os.rename, os.replace or shutil.move is caught."""
    result_dir, log = tmp_path / "result", tmp_path / "audit.log"
    (result_dir / "a").mkdir(parents=True)
    (result_dir / "b").mkdir()
    (result_dir / "f").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    code = ("import os, shutil, sys, fuse_audit; sys.addaudithook(fuse_audit._audit); "
            "os.rename('result/a', 'result/a2'); os.replace('result/f', 'result/f2'); "
            "shutil.move('result/b', 'result/b2'); os.rename('elsewhere', 'elsewhere2')")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO / "tests"), "RESULT_DIR": str(result_dir),
                        "FUSE_AUDIT_LOG": str(log)})
    assert [line.split(" at ")[0] for line in log.read_text().splitlines()] == [
        "os.rename of a directory: result/a -> result/a2", "os.rename of a directory: result/b -> result/b2"]
