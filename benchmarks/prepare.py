"""Benchmark: our prepare against the seed trainer's record writing, on the kangaroo bucket replicated.

The baseline does what the old Cloud Annotations trainer did: one process reads
each file, opens its header with PIL for the size, and writes one tf.train.Example
per image into 10 + 10 TFRecord shards; it verifies nothing. Ours fully checks
every image (a JPEG's whole entropy-coded stream is decoded), converts and
rotates where needed, splits by content and writes the report.

The limit, also in the same run, is the floor of prepare's work: every annotated image
read and verified as prepare verifies it (`trainer.images.load_image`) on every core,
with nothing kept or written; ours / limit says what the rest costs (start-up, moving
the records to the writer, writing, splitting).

Each run is its own subprocess, timed from start to exit; memory is the peak
resident size of the largest process (ru_maxrss from wait4) and the peak sum
over the process tree (sampled every 20 ms). Both are printed at two dataset
sizes to show that memory does not grow with the number of images.

    python benchmarks/prepare.py [--images 5000] [--small 1000] [--source DIR]
"""
import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
KANGAROO = REPO.parent / "shared" / "datasets" / "kangaroo"


def replicate_bucket(source, destination, count):
    """A bucket of COUNT images: symlinks to SOURCE's images, each under a unique key, annotations copied."""
    document = json.loads((source / "_annotations.json").read_text())
    originals = list(document["annotations"].items())
    annotations = {}
    destination.mkdir(parents=True)
    for index in range(count):
        key, boxes = originals[index % len(originals)]
        copy = f"{index:06d}-{Path(key).name}"
        (destination / copy).symlink_to((source / key).resolve())
        annotations[copy] = boxes
    document["annotations"] = annotations
    (destination / "_annotations.json").write_text(json.dumps(document))
    return destination


def seed_trainer_baseline(data_dir, out_dir):
    """The old trainer's conversion: read, PIL header for the size, tf.train.Example, 10 + 10 shards, 70/30 split."""
    started = time.perf_counter()
    import tensorflow as tf
    from PIL import Image

    print(json.dumps({"import_seconds": time.perf_counter() - started}))

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    annotations = json.loads((data_dir / "_annotations.json").read_text())
    labels = annotations["labels"]
    keys = list(annotations["annotations"])
    random.Random(42).shuffle(keys)
    cut = int(len(keys) * 0.7)
    for split, split_keys in (("train", keys[:cut]), ("val", keys[cut:])):
        writers = [tf.io.TFRecordWriter(str(out_dir / f"{split}.record-{i:05d}-of-00010")) for i in range(10)]
        for index, key in enumerate(split_keys):
            encoded = (data_dir / key).read_bytes()
            width, height = Image.open(io.BytesIO(encoded)).size
            boxes = annotations["annotations"][key]

            def floats(name):
                return tf.train.Feature(float_list=tf.train.FloatList(value=[b[name] for b in boxes]))

            feature = {
                "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
                "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
                "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
                "image/source_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[key.encode()])),
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg"])),
                "image/object/bbox/xmin": floats("x"), "image/object/bbox/xmax": floats("x2"),
                "image/object/bbox/ymin": floats("y"), "image/object/bbox/ymax": floats("y2"),
                "image/object/class/text": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[b["label"].encode() for b in boxes])),
                "image/object/class/label": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[labels.index(b["label"]) + 1 for b in boxes])),
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writers[index % 10].write(example.SerializeToString())
        for writer in writers:
            writer.close()


def verify(stored_size, path):
    """In a worker: PATH read and verified as prepare verifies it; nothing returned."""
    from trainer.images import load_image

    load_image(path, stored_size)


def verification_limit(data_dir):
    """Each image DATA_DIR annotates verified as prepare verifies it, on every core (prepare's pool)."""
    import functools

    from trainer import catalogue, tasks
    from trainer.images import map_images

    entry = catalogue.load_model(catalogue.resolve_model(None, "detection"))
    paths = [str(Path(data_dir) / key) for key in json.loads((Path(data_dir) / "_annotations.json").read_text())[
        "annotations"]]
    for _ in map_images(functools.partial(verify, tasks.get(entry.task).stored_size(entry)), paths, "verifying"):
        pass


def measure(command):
    """(wall seconds, CPU seconds, largest process's peak RSS in MiB, peak tree RSS in MiB, stdout) of COMMAND.

    CPU seconds (user + system, all processes of the run) do not depend on what
    else the machine runs; wall seconds do.
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    tree_peak = 0
    done = threading.Event()

    def sample():
        nonlocal tree_peak
        parent = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [parent, *parent.children(recursive=True)]
                tree_peak = max(tree_peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"{command} failed with exit status {process.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, tree_peak / 2**20, output


def run_both(bucket, work):
    ours = measure([sys.executable, "-m", "trainer", "prepare", "--data-dir", str(bucket),
                    "--result-dir", str(work / "ours")])
    (work / "baseline").mkdir()
    baseline = measure([sys.executable, __file__, "--baseline", str(bucket), str(work / "baseline")])
    limit = measure([sys.executable, __file__, "--limit", str(bucket)])
    skipped = json.loads((work / "ours" / "data" / "report.json").read_text())["skipped"]
    return ours, baseline, limit, Counter(entry["reason"] for entry in skipped)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000, help="images in the large run (default 5000)")
    parser.add_argument("--small", type=int, default=1000, help="images in the small run (default 1000)")
    parser.add_argument("--source", type=Path, default=KANGAROO, help="bucket to replicate (default: kangaroo)")
    parser.add_argument("--baseline", nargs=2, metavar=("DATA_DIR", "OUT_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--limit", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        seed_trainer_baseline(*args.baseline)
        return
    if args.limit:
        verification_limit(args.limit)
        return
    if not (args.source / "_annotations.json").is_file():
        raise SystemExit(f"no bucket at {args.source}")
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as temp:
        for count in (args.small, args.images):
            work = Path(temp) / str(count)
            bucket = replicate_bucket(args.source, work / "bucket", count)
            print(f"{count} images: running prepare, the baseline, then the limit ...", file=sys.stderr)
            rows.append((count, *run_both(bucket, work)))
    print(f"\n{'images':>7} {'ours s':>7} {'base s':>7} {'(TF import)':>11} {'ratio':>6} {'limit s':>7} "
          f"{'/ limit':>7}  {'ours CPU s':>10} {'base CPU s':>10} {'limit CPU s':>11}  {'ours MiB largest/tree':>22} "
          f"{'base MiB largest/tree':>22}")
    for count, ours, baseline, limit, _ in rows:
        tf_import = json.loads(baseline[4])["import_seconds"]
        print(f"{count:>7} {ours[0]:>7.1f} {baseline[0]:>7.1f} {tf_import:>11.1f} {ours[0] / baseline[0]:>6.2f} "
              f"{limit[0]:>7.1f} {ours[0] / limit[0]:>7.2f}  {ours[1]:>10.1f} {baseline[1]:>10.1f} {limit[1]:>11.1f}  "
              f"{ours[2]:>13.0f} / {ours[3]:<6.0f} {baseline[2]:>13.0f} / {baseline[3]:<6.0f}")
    print(f"cores: {len(os.sched_getaffinity(0))}, load average before: {load}; ratio = ours / baseline, "
          "wall clock from process start to exit (below 1: ours is faster); / limit = ours / the verification alone")
    for count, *_, skipped in rows:
        print(f"{count} images: ours skipped " + "; ".join(f"{n} x {reason}" for reason, n in skipped.items())
              + " (the baseline wrote them)")


if __name__ == "__main__":
    main()
