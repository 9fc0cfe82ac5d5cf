"""What a person reads on the console, and RESULT_DIR/logs/ that keeps everything else.

Quiet mode (the default for stages that have a result dir) points file descriptors
1 and 2 at logs/STAGE.log, so TensorFlow's and absl's C++ logs, Python warnings and
every third-party print (pycocotools, coremltools, Orbit, child processes) land
there in full, whatever library writes them and however. Our own lines go through
`say` to a saved duplicate of the real console and to the log. Verbose mode
redirects nothing: `say` is print.
"""
import os
import sys
import time
import traceback
from pathlib import Path

from trainer.errors import UserError
from trainer.hardware import tf_config_from_env

# In quiet mode training progress reaches the console about this many times a run (plus the first and last
# report): each shown progress line comes with its cacli line, and a demo console should fit in 60 lines.
PROGRESS_SHOWN = 5


class _Console:
    verbose = True    # until `start` says otherwise, `say` is plain print
    out = err = None  # duplicates of the real stdout / stderr (quiet mode)
    log = None        # the open log file (quiet mode)
    log_dir = None
    shown_step = None  # progress: the last step shown on the console


_state = _Console()


def start(log_dir, name, verbose=False):
    """From now on keep everything in LOG_DIR/NAME.log and show only `say`'s lines, unless VERBOSE."""
    try:
        sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # streams replaced in-process (a test's capture): keep them
        verbose = True
    _state.verbose = verbose
    if verbose:
        return
    if _state.out is None:
        sys.stdout.flush()
        sys.stderr.flush()
        _state.out = os.fdopen(os.dup(1), "w", buffering=1)
        _state.err = os.fdopen(os.dup(2), "w", buffering=1)
    _state.log_dir = Path(log_dir)
    try:
        switch(name)
    except UserError:  # RESULT_DIR not writable, a bad TF_CONFIG: the error goes to the real console
        stop()
        raise


def switch(name):
    """Send what follows to LOG_DIR/NAME.log (appended: a rerun adds to the same file)."""
    if _state.verbose:
        return
    path = _state.log_dir / f"{name}{_replica_suffix()}.log"
    try:
        _state.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(path, "a", buffering=1)
    except OSError as err:
        raise UserError(f"cannot write the log {path}: {err.strerror or err}") from None
    sys.stdout.flush()
    sys.stderr.flush()
    log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: {' '.join(sys.argv)}\n")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    if _state.log is not None:
        _state.log.close()
    _state.log = log


def stop():
    """Point file descriptors 1 and 2 back at the real console; `say` is print again."""
    if _state.out is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(_state.out.fileno(), 1)
        os.dup2(_state.err.fileno(), 2)
        for stream in (_state.out, _state.err, _state.log):
            if stream is not None:
                stream.close()
    _state.out = _state.err = _state.log = _state.log_dir = _state.shown_step = None
    _state.verbose = True


def log_path():
    """The file the current stage logs to, or None when nothing is redirected."""
    return None if _state.log is None or _state.verbose else Path(_state.log.name)


def say(message, error=False):
    """Show MESSAGE on the console (stderr when ERROR) and keep it in the log."""
    if _state.verbose or _state.out is None:
        print(message, file=sys.stderr if error else sys.stdout, flush=True)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    (_state.err if error else _state.out).write(message + "\n")
    _state.log.write(message + "\n")


def warn_failure(what, err):
    """A failure after training, as a warning: the traceback to the log, one line to the console; the reason."""
    traceback.print_exc()
    reason = f"{type(err).__name__}: {err}".strip().splitlines()[0][:500]
    where = f" (traceback in {log_path()})" if log_path() else ""
    say(f"{what}: WARNING: failed, the trained model is kept: {reason}{where}", error=True)
    return reason


def stage(name, what):
    """The `==> NAME: WHAT` header of a stage of `run`; the stage logs to logs/NAME.log."""
    say(f"==> {name}: {what}")
    switch(name)


def progress(step, total, *lines):
    """Training progress LINES at STEP of TOTAL: all kept in the log, about PROGRESS_SHOWN times a run on the console.

    Quiet mode shows the first report, then one per fifth of the run, and the last.
    """
    every = max(total // PROGRESS_SHOWN, 1)
    shown = _state.shown_step
    if _state.verbose or shown is None or step >= total or step // every > shown // every:
        _state.shown_step = step
        for line in lines:
            say(line)
    else:
        for line in lines:
            _state.log.write(line + "\n")


def stream():
    """The file for progress bars (tqdm): the real console's stderr even in quiet mode."""
    return sys.stderr if _state.verbose or _state.err is None else _state.err


def _replica_suffix():
    """`-worker-N` on a multi-worker job's workers (TF_CONFIG / CLUSTER_SPEC), which share RESULT_DIR."""
    task = tf_config_from_env(os.environ).get("task") or {"type": "chief"}
    return "" if task["type"] == "chief" else f"-{task['type']}-{task.get('index', 0)}"
