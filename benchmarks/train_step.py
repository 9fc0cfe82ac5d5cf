"""Benchmark: how soon start.sh trains, and how fast, with the demo model on this machine.

Runs `start.sh STEPS` on a fresh sample bucket into a temporary RESULT_DIR and
timestamps every output line. Progress lines come once per Orbit loop (10 steps
on CPU), so the first step's time is the first progress line's time less nine
steady-state steps; steady-state speed is the median of the later progress lines
(each measures its own loop, evaluation excluded). Target: <= 90 s to the first
step on 2 CPU cores.

    python benchmarks/train_step.py [--steps 60] [--model demo]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROGRESS = re.compile(r"^progress: step (\d+)/\d+ .*\| ([\d.]+) images/s")
TARGET_SECONDS = 90


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--model", default="demo")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from trainer.sample import make_sample_bucket

    with tempfile.TemporaryDirectory() as scratch:
        bucket, result_dir = Path(scratch) / "bucket", Path(scratch) / "result"
        make_sample_bucket(bucket)
        env = {**os.environ, "DATA_DIR": str(bucket), "RESULT_DIR": str(result_dir), "MODEL": args.model,
               "PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "2"}
        started = time.monotonic()
        process = subprocess.Popen(["bash", str(REPO / "packaging" / "start.sh"), str(args.steps)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        progress = []  # (seconds since start, step, images/s)
        for line in process.stdout:
            match = PROGRESS.match(line)
            if match:
                progress.append((time.monotonic() - started, int(match.group(1)), float(match.group(2))))
        total = time.monotonic() - started
        if process.wait() or len(progress) < 2:
            sys.exit(f"start.sh failed (exit {process.returncode}) or trained under two loops")
        batch = int(re.search(r"global_batch_size: (\d+)", (result_dir / "params.yaml").read_text()).group(1))

    steady_steps_per_second = statistics.median(images for _, _, images in progress[1:]) / batch
    first_loop_seconds, first_loop_steps, _ = progress[0]
    first_step_seconds = first_loop_seconds - (first_loop_steps - 1) / steady_steps_per_second
    print(f"model {args.model}, batch {batch}, {args.steps} steps, {os.cpu_count()} CPUs")
    print(f"start.sh -> first progress line (step {first_loop_steps}): {first_loop_seconds:.1f} s")
    print(f"start.sh -> first training step: {first_step_seconds:.1f} s (target <= {TARGET_SECONDS} s)")
    print(f"steady state: {steady_steps_per_second:.2f} steps/s ({1 / steady_steps_per_second:.2f} s/step, "
          f"{steady_steps_per_second * batch:.1f} images/s)")
    print(f"whole run (with evaluations): {total:.1f} s")


if __name__ == "__main__":
    main()
