"""The trainer in fresh processes, for tests that run it as a job does: `python -m trainer` or start.sh, on free ports."""
import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import REPO

START_SH = REPO / "packaging" / "start.sh"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_trainer(args, env, log_path, timeout=600):
    """`python -m trainer ARGS` (or start.sh when ARGS[0] is START_SH) in a fresh process; its output."""
    command = ["bash", *map(str, args)] if args[0] == START_SH else [sys.executable, "-m", "trainer", *map(str, args)]
    completed = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                                             "PYTHON": sys.executable, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    Path(log_path).write_text(completed.stdout)
    return completed
