"""`python tests/fuse_audit.py -m trainer ARGS`: the trainer with a Cloud Storage FUSE audit hook.

On Vertex's /gcs/ mounts a directory rename is refused or done as a non-atomic
copy and delete, so nothing under RESULT_DIR may rename a directory. The hook
sees every os.rename / os.replace (shutil.move renames through them) and
appends each directory rename under RESULT_DIR, with the calling code's file
and line, to $FUSE_AUDIT_LOG; the run itself carries on, so one run lists them all.
Each audited process also adds a line to $FUSE_AUDIT_LOG.started, so a test can
tell "audited and clean" from "never audited".
"""
import os
import runpy
import sys
import traceback
from pathlib import Path


def python_wrapper(folder):
    """An executable FOLDER/python that start.sh can run as $PYTHON: the trainer under this audit."""
    wrapper = Path(folder) / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def assert_no_directory_renames(log, runs):
    """At least RUNS trainer processes ran under this audit (LOG.started) and none renamed a directory (no LOG)."""
    started = Path(f"{log}.started").read_text().splitlines()
    assert len(started) >= runs and all(" run --data-dir " in line for line in started), started
    assert not Path(log).exists(), Path(log).read_text()


def _under_result_dir(path):
    return os.path.realpath(os.fsdecode(path)).startswith(os.path.realpath(os.environ["RESULT_DIR"]) + os.sep)


def _audit(event, args):
    if event not in ("os.rename", "os.replace"):
        return
    source, target = args[0], args[1]
    if isinstance(source, int) or not os.path.isdir(source):
        return
    if _under_result_dir(source) or _under_result_dir(target):
        caller = next((frame for frame in reversed(traceback.extract_stack()[:-1])
                       if "/trainer/" in frame.filename), traceback.extract_stack()[-2])
        with open(os.environ["FUSE_AUDIT_LOG"], "a") as log:
            log.write(f"{event} of a directory: {os.fsdecode(source)} -> {os.fsdecode(target)} "
                      f"at {caller.filename}:{caller.lineno}\n")


if __name__ == "__main__":
    if sys.argv[1:3] != ["-m", "trainer"]:
        raise SystemExit("usage: fuse_audit.py -m trainer ARGS")
    sys.addaudithook(_audit)
    with open(os.environ["FUSE_AUDIT_LOG"] + ".started", "a") as started:
        started.write(f"pid {os.getpid()}: {' '.join(sys.argv[3:])}\n")
    sys.argv = ["trainer", *sys.argv[3:]]
    runpy.run_module("trainer", run_name="__main__", alter_sys=True)
