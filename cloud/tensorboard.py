"""TensorBoard on a run's logs, local or gs://, with the URL printed first.

The job writes its events under RESULT_DIR/model (`train/` and `validation/`),
that is gs://OUTBUCKET/PREFIX/RUN/model; TensorBoard reads gs:// with the
user's Application Default Credentials.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from trainer.errors import UserError

DEFAULT_PORT = 6006


def run_tensorboard(logdir, port=DEFAULT_PORT):
    """Run TensorBoard on LOGDIR until interrupted; return its exit status."""
    if not logdir.startswith("gs://") and not Path(logdir).exists():
        raise UserError(f"{logdir} does not exist: pass a run's model folder, e.g. gs://BUCKET/PREFIX/RUN/model")
    executable = shutil.which("tensorboard", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                   os.environ.get("PATH", "")]))
    if executable is None:
        raise UserError("tensorboard is not installed: `pip install tensorboard` (it comes with tensorflow)")
    print(f"TensorBoard on {logdir}: http://localhost:{port}/ (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.run([executable, "--logdir", logdir, "--port", str(port)], check=False).returncode
    except KeyboardInterrupt:
        return 0


def main(args):
    """`tensorboard LOGDIR`."""
    return run_tensorboard(args.logdir, args.port)
