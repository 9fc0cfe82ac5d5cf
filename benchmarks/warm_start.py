"""Benchmark: does a warm start from a run on half the bucket beat the catalogue's start on the whole bucket?

The labelling loop's promise: label more images, then train from the last run
(`--init-from`) instead of from the start. Per repetition:

1. `run` on half the bucket (every other key) for --half-steps from the
   catalogue's start (scratch for the demo model: no zoo download here);
2. `run` on the whole bucket for --steps warm-started from (1);
3. `run` on the whole bucket for --steps from the catalogue's start.

All with `--patience 0` and no export. The split is by content, so each half
image is in the same split in the whole bucket (no val image is trained on).
It prints AP / AP50 at every evaluation of (2) and (3), on the whole bucket's
val split, and as its last line the mean AP of each at the first and at the
last evaluation. Training is not bit-reproducible: that is why it repeats.

    python benchmarks/warm_start.py [--bucket DIR] [--half-steps 300] [--steps 120] [--repetitions 2]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KANGAROO = REPO.parent / "shared" / "datasets" / "kangaroo"
EVALUATION = re.compile(r"^evaluation: step (\d+): AP ([\d.]+) AP50 ([\d.]+)")


def half_bucket(source, destination):
    """A bucket of every other key of SOURCE (sorted), as symlinks: the source is only read."""
    document = json.loads((source / "_annotations.json").read_text())
    kept = dict(sorted(document["annotations"].items())[::2])
    destination.mkdir(parents=True)
    for key in kept:
        (destination / key).parent.mkdir(parents=True, exist_ok=True)
        (destination / key).symlink_to((source / key).resolve())
    (destination / "_annotations.json").write_text(json.dumps({**document, "annotations": kept}))
    return len(kept)


def train(bucket, result_dir, model, steps, init_from=None, trainer=(sys.executable, "-m", "trainer")):
    """`TRAINER run` (`python -m trainer run`) without export; return [(step, AP, AP50)] of its evaluations and its
    seconds."""
    command = [*trainer, "run", "--data-dir", str(bucket), "--result-dir", str(result_dir),
               "--model", model, "--steps", str(steps), "--patience", "0", "--formats", "none"]
    if init_from:
        command += ["--init-from", str(init_from)]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.monotonic() - started
    (result_dir.parent / f"{result_dir.name}.log").write_text(completed.stdout)
    if completed.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{completed.stdout[-3000:]}")
    curve = [(int(step), float(ap), float(ap50)) for step, ap, ap50 in
             (match.groups() for match in map(EVALUATION.match, completed.stdout.splitlines()) if match)]
    return curve, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", type=Path, default=KANGAROO, help="a Cloud Annotations bucket (default: kangaroo)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--half-steps", type=int, default=300, help="steps of the run on half the bucket")
    parser.add_argument("--steps", type=int, default=120, help="steps of each run on the whole bucket")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the run folders and their logs here")
    args = parser.parse_args()
    if not (args.bucket / "_annotations.json").is_file():
        sys.exit(f"no bucket at {args.bucket}: pass --bucket DIR")

    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        half = work / "half-bucket"
        print(f"{args.bucket}: half bucket of {half_bucket(args.bucket, half)} images; model {args.model}; "
              f"{args.half_steps} steps on half, {args.steps} on all; {os.cpu_count()} CPUs", flush=True)
        first, last = {"warm": [], "scratch": []}, {"warm": [], "scratch": []}
        for repetition in range(1, args.repetitions + 1):
            half_curve, seconds = train(half, work / f"half-{repetition}", args.model, args.half_steps)
            best = max(half_curve, key=lambda row: row[1])
            print(f"repetition {repetition}: half, {args.half_steps} steps: best AP {best[1]:.3f} AP50 {best[2]:.3f} "
                  f"at step {best[0]} ({seconds:.0f} s)", flush=True)
            for name, init_from in (("warm", work / f"half-{repetition}"), ("scratch", None)):
                curve, seconds = train(args.bucket, work / f"{name}-{repetition}", args.model, args.steps, init_from)
                shown = ", ".join(f"step {step}: {ap:.3f} / {ap50:.3f}" for step, ap, ap50 in curve)
                print(f"repetition {repetition}: all, {name:7}: AP / AP50 {shown} ({seconds:.0f} s)", flush=True)
                first[name].append(curve[0][1])
                last[name].append(curve[-1][1])
    mean = {name: (statistics.mean(first[name]), statistics.mean(last[name])) for name in first}
    print(f"mean AP at the first / last evaluation: warm {mean['warm'][0]:.3f} / {mean['warm'][1]:.3f}, "
          f"scratch {mean['scratch'][0]:.3f} / {mean['scratch'][1]:.3f}; warm - scratch "
          f"{mean['warm'][0] - mean['scratch'][0]:+.3f} / {mean['warm'][1] - mean['scratch'][1]:+.3f}")


if __name__ == "__main__":
    main()
