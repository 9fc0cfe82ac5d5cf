"""Polling for tests that drive long-running processes (start.sh, the trainer)."""
import time


def wait_until(condition, process, describe, timeout=300, interval=0.2):
    """Return once CONDITION() holds; fail with DESCRIBE() if PROCESS exits first or TIMEOUT seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited ({process.returncode}) {describe()}"
        assert time.monotonic() < deadline, f"timed out {describe()}"
        time.sleep(interval)
