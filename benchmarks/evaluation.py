"""Benchmark: how long export's evaluation of every format takes, and what a 500-image split would cost.

Each format a run exported (model_export/export.json) is evaluated as export evaluates it
(`trainer.export.evaluate.evaluate`: its runtime started, every image run, COCO AP), on the
first half of the run's validation split and on all of it, after a first evaluation of 2
images that pays the runtime's one-time start-up: the difference between the half and the
whole is the cost of an image, the first evaluation less that the start-up, and the two give
the projected wall time of a split of --images images on this machine. The baseline, in the same run, is Core ML's
evaluation as it was before its NMS stopped at COCO's 100 boxes per label: suppressed
through every box above the score threshold. The run is copied to a temporary folder
first: evaluating writes model_export/evaluation/, and the benchmark leaves the run as it was.

    python benchmarks/evaluation.py RESULT_DIR [--images 500]

RESULT_DIR: a detector's run exported with every format, e.g. from
`python -m trainer run --data-dir ../shared/datasets/kangaroo --result-dir runs/kangaroo --val-fraction 0.9`
(151 validation images).
"""
import argparse
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

from trainer.export import evaluate as evaluation
from trainer.export.common import float32_policy, load_job
from trainer.export.formats import EXPORT_FORMATS
from trainer.export.serving import detection
from trainer.run_dir import ExportManifest, RunDir


WARM_IMAGES = 2  # the cold first evaluation of each format, which pays its runtime's start-up


class FirstImages:
    """The first COUNT of a split's images (evaluation.SplitImages), decoded afresh on each pass."""

    def __init__(self, images, count):
        self.images, self.count = images, count

    def __len__(self):
        return self.count

    def __iter__(self):
        return itertools.islice(iter(self.images), self.count)


def first_truth(truth, count):
    """TRUTH's COCO ground truth for its first COUNT images (the order the split's images come in)."""
    images = truth["images"][:count]
    kept = {image["id"] for image in images}
    return {**truth, "images": images, "annotations": [a for a in truth["annotations"] if a["image_id"] in kept]}


def timed_evaluation(job, name, output, images, truth):
    """(wall seconds, the evaluation entry) of one format on IMAGES."""
    start = time.perf_counter()
    entry = evaluation.evaluate(job, {name: output}, EXPORT_FORMATS, images, truth, "val")[name]
    return time.perf_counter() - start, entry


def cost(job, name, output, images, truth):
    """(seconds per image, start-up seconds, the whole split's entry): a first, cold evaluation of WARM_IMAGES, then
    the first half and the whole split warm; the cost per image from the two warm ones (the first call of a runtime
    in a process pays one-time work the later ones do not), the start-up from the cold one."""
    half = len(images) // 2
    cold_seconds, _ = timed_evaluation(job, name, output, FirstImages(images, WARM_IMAGES),
                                       first_truth(truth, WARM_IMAGES))
    half_seconds, _ = timed_evaluation(job, name, output, FirstImages(images, half), first_truth(truth, half))
    all_seconds, entry = timed_evaluation(job, name, output, images, truth)
    per_image = (all_seconds - half_seconds) / (len(images) - half)
    start_up = cold_seconds - per_image * WARM_IMAGES
    print(f"{name}: {WARM_IMAGES} images cold {cold_seconds:.1f} s, {half} images {half_seconds:.1f} s, "
          f"{len(images)} images {all_seconds:.1f} s: {per_image * 1000:.0f} ms per image + {start_up:.1f} s start-up; "
          f"latency_ms {entry.get('latency_ms')}, AP {entry.get('AP')}", flush=True)
    return per_image, start_up, entry


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result_dir", type=Path, help="an exported detector run (every format written)")
    parser.add_argument("--images", type=int, default=500, help="the split size to project (default 500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary, float32_policy():
        run = Path(temporary) / "run"
        shutil.copytree(args.result_dir, run, symlinks=True)
        job = load_job(run, 3)
        written = {name: {"path": str(run / r["path"]), "bytes": r["bytes"]}
                   for name, r in ExportManifest.find(RunDir(run)).results.items() if "path" in r}
        images, truth = evaluation.load_split(run, "val", job.task)
        print(f"{job.model}: {len(images)} validation images, {len(os.sched_getaffinity(0))} CPU cores")
        costs = {name: cost(job, name, output, images, truth) for name, output in written.items()}
        stopped = detection.core_ml_nms
        # The baseline: Core ML's NMS through every box above the threshold (the per-label stop ignored).
        detection.core_ml_nms = lambda confidence, coordinates, iou, threshold, per_label=None: stopped(
            confidence, coordinates, iou, threshold)
        try:
            print("baseline:", end=" ")
            baseline = cost(job, "coreml", written["coreml"], images, truth) if "coreml" in written else None
        finally:
            detection.core_ml_nms = stopped

    def projected(table):
        return sum(per_image * args.images + start_up for per_image, start_up, _ in table.values())

    ours = projected(costs)
    print(f"{args.images} images, every format: {ours:.0f} s ({ours / 60:.1f} min) on this machine")
    if baseline:
        before = projected({**costs, "coreml": baseline})
        print(f"baseline (Core ML's NMS through every box): {before:.0f} s ({before / 60:.1f} min); "
              f"ratio {ours / before:.2f}")


if __name__ == "__main__":
    main()
