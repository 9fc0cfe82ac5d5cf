"""`python tests/fuse_audit.py -m trainer ARGS`: the trainer with a Cloud Storage FUSE audit hook.

On Vertex's /gcs/ mounts a directory rename is refused or done as a non-atomic
copy and delete, so nothing under RESULT_DIR may rename a directory. The hook
sees every os.rename / os.replace (shutil.move renames through them) and
appends each directory rename under RESULT_DIR, with the calling code's file
and line, to $FUSE_AUDIT_LOG; the run itself carries on, so one run lists them all.
"""
import os
import runpy
import sys
import traceback

RESULT_DIR = os.path.realpath(os.environ["RESULT_DIR"])
LOG = os.environ["FUSE_AUDIT_LOG"]


def _under_result_dir(path):
    return os.path.realpath(os.fsdecode(path)).startswith(RESULT_DIR + os.sep)


def _audit(event, args):
    if event not in ("os.rename", "os.replace"):
        return
    source, target = args[0], args[1]
    if isinstance(source, int) or not os.path.isdir(source):
        return
    if _under_result_dir(source) or _under_result_dir(target):
        caller = next((frame for frame in reversed(traceback.extract_stack()[:-1])
                       if "/trainer/" in frame.filename), traceback.extract_stack()[-2])
        with open(LOG, "a") as log:
            log.write(f"{event} of a directory: {os.fsdecode(source)} -> {os.fsdecode(target)} "
                      f"at {caller.filename}:{caller.lineno}\n")


if __name__ == "__main__":
    if sys.argv[1:3] != ["-m", "trainer"]:
        raise SystemExit("usage: fuse_audit.py -m trainer ARGS")
    sys.addaudithook(_audit)
    sys.argv = ["trainer", *sys.argv[3:]]
    runpy.run_module("trainer", run_name="__main__", alter_sys=True)
