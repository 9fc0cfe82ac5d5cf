"""Benchmark: does train's input pipeline cost AP? Model Garden's training input against ours, on kangaroo.

Ours (trainer/input_pipeline.py: its parser, anchor labels and records decoded once) computes
Model Garden's augmentation and labels in other ways (equal within 1e-3 of a normalised
pixel and 1e-6 of a box target: tests/test_input_pipeline.py, tests/test_anchor_labels.py)
and shuffles decoded images instead of records. Each repetition trains the same model the
same steps both ways (`run --patience 0 --formats none`, evaluating as `run` does); the
Model Garden runs replace train's training input by Model Garden's own (its RetinaNet
task's `build_inputs`, decoding every epoch), their validation input unchanged. Training
is not seeded nor bit-reproducible (Model Garden sets no seed), so the spread between
repetitions of one pipeline is the noise the difference is read against. It prints each
run's AP at every evaluation and, last, each pipeline's mean and spread of the best AP.

    python benchmarks/pipeline_ap.py [--bucket DIR] [--model demo] [--steps 400] [--repetitions 2]
"""
import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from warm_start import KANGAROO, REPO, train

MODEL_GARDEN_INPUT = "--as-model-garden-input"


def main():
    if sys.argv[1:2] == [MODEL_GARDEN_INPUT]:
        return run_with_model_gardens_input(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", type=Path, default=KANGAROO, help="a Cloud Annotations bucket (default: kangaroo)")
    parser.add_argument("--model", default="demo", help="a catalogue RetinaNet (default: demo)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the run folders and their logs here")
    args = parser.parse_args()
    if not (args.bucket / "_annotations.json").is_file():
        sys.exit(f"no bucket at {args.bucket}: pass --bucket DIR")
    trainers = {"model_garden": (sys.executable, __file__, MODEL_GARDEN_INPUT),
                "ours": (sys.executable, "-m", "trainer")}
    print(f"{args.bucket}; model {args.model}; {args.steps} steps; {os.cpu_count()} CPUs", flush=True)
    best = {name: [] for name in trainers}
    with tempfile.TemporaryDirectory() as scratch:
        work = args.keep or Path(scratch)
        for repetition in range(1, args.repetitions + 1):
            for name, trainer in trainers.items():
                curve, seconds = train(args.bucket, work / f"{name}-{repetition}", args.model, args.steps,
                                       trainer=trainer)
                shown = ", ".join(f"step {step}: {ap:.4f}" for step, ap, _ in curve)
                print(f"repetition {repetition}: {name:12}: AP {shown} ({seconds:.0f} s)", flush=True)
                best[name].append(max(ap for _, ap, _ in curve))
    summary = {name: (statistics.mean(aps), max(aps) - min(aps)) for name, aps in best.items()}
    print("best AP, mean (spread): " + ", ".join(f"{name} {mean:.4f} ({spread:.4f})"
                                                  for name, (mean, spread) in summary.items())
          + f"; ours - model_garden {summary['ours'][0] - summary['model_garden'][0]:+.4f}")


def run_with_model_gardens_input(argv):
    """`python -m trainer ARGV` with train's training input Model Garden's own, decoded every epoch."""
    sys.path.insert(0, str(REPO))
    from official.vision.tasks import retinanet

    from trainer import __main__, input_pipeline

    input_pipeline.RetinaNetTask.build_inputs = retinanet.RetinaNetTask.build_inputs
    input_pipeline.decodes_once = lambda decoded, available: (False, "decoding the training images every epoch "
                                                                     "(Model Garden's training input: the benchmark)")
    return __main__.main(argv)


if __name__ == "__main__":
    sys.exit(main())
