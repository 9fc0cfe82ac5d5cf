"""The whole job on a RESULT_DIR audited as Cloud Storage FUSE would need: no directory renames."""
import os
import subprocess
import sys

from conftest import REPO


def test_the_whole_job_and_its_resume_rename_no_directory_under_result_dir(tmp_path, sample_bucket):
    """start.sh (demo model) for 2 steps without exports, then for 4 with every export format: the rerun finds
    data/ complete, resumes from ckpt-2, trains on and exports (exports once, to keep `make test` short)."""
    log = tmp_path / "fuse-audit.log"
    python = tmp_path / "python"  # start.sh runs "$PYTHON -m trainer ...": a wrapper that installs the hook
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests" / "fuse_audit.py"}" "$@"\n')
    python.chmod(0o755)
    result_dir = tmp_path / "result"
    env = {**os.environ, "DATA_DIR": str(sample_bucket), "RESULT_DIR": str(result_dir), "MODEL": "demo",
           "PYTHON": str(python), "FUSE_AUDIT_LOG": str(log), "TF_CPP_MIN_LOG_LEVEL": "2"}
    marker_written = []
    for steps, formats in (("2", "none"), ("4", "")):
        run = subprocess.run(["bash", str(REPO / "packaging" / "start.sh"), steps], cwd=tmp_path,
                             env={**env, "EXPORT_FORMATS": formats},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
        assert run.returncode == 0, run.stdout[-4000:]
        assert run.stdout.rstrip().endswith("CACLI-TRAINING-SUCCESS"), run.stdout[-2000:]
        marker_written.append((result_dir / "data" / "report.json").stat().st_mtime_ns)
    assert marker_written[0] == marker_written[1]  # the rerun found data/ complete and left it alone
    assert (result_dir / "model" / "ckpt-4.index").is_file()
    assert (result_dir / "model_android" / "model.tflite").is_file()
    assert (result_dir / "model_web" / "model.json").is_file()
    assert not log.exists(), log.read_text()


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
