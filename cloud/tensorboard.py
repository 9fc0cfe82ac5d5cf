"""TensorBoard on a run's logs, local or gs://, with the URL printed first.

The job writes its events under RESULT_DIR/model (`train/` and `validation/`),
that is gs://OUTBUCKET/PREFIX/RUN/model; TensorBoard reads gs:// with the
user's Application Default Credentials.
"""
import os
import shutil
import sys
from pathlib import Path

from trainer.errors import UserError

DEFAULT_PORT = 6006


def run_tensorboard(logdir, port=DEFAULT_PORT):
    """Replace this process with TensorBoard on LOGDIR, so Ctrl-C and kill reach TensorBoard itself."""
    if not logdir.startswith("gs://") and not Path(logdir).exists():
        raise UserError(f"{logdir} does not exist: pass a run's model folder, e.g. gs://BUCKET/PREFIX/RUN/model")
    executable = shutil.which("tensorboard", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                   os.environ.get("PATH", "")]))
    if executable is None:
        raise UserError("tensorboard is not installed: `pip install tensorboard` (it comes with tensorflow)")
    print(f"TensorBoard on {logdir}: http://localhost:{port}/ (Ctrl-C stops it)", flush=True)
    os.execv(executable, [executable, "--logdir", logdir, "--port", str(port)])


def main(args):
    """`tensorboard LOGDIR`."""
    return run_tensorboard(args.logdir, args.port)
