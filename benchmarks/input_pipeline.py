"""Benchmark: CPU per training image in Model Garden's input pipeline, as train configures it, per model.

The pipeline is the one `train` runs: the task's `build_inputs` on params.yaml's
`train_data` (decode, the catalogue's augmentation, anchor labelling, batching),
on records `prepare` wrote for that model as `run` does (images stored at the size its
training reads: trainer/tasks' `stored_size`). Each pipeline runs in its own
process; the figure is the process CPU time
(all threads) over the images of BATCHES batches after an epoch and WARMUP batches, so it
is what the CPUs of a training machine spend per image whatever their number, once a
pipeline that decodes the records once (train's, when they fit in memory) has.

Three pipelines per model, each in its own process: Model Garden's own (its task's
`build_inputs`, the baseline), ours (`trainer.input_pipeline.get_task`, what `train`
runs; for models other than RetinaNet it is Model Garden's parser), and the floor of a
pipeline that decodes every epoch: decoding each stored JPEG and resizing it to the
model's input in the same tf.data settings, with no augmentation or labelling. The ratio
is ours / Model Garden's.

Buckets: kangaroo as it is (about 640x480), and its photos upscaled to 4032x3024 and
re-encoded at quality 92 (phone photos: decode cost follows pixels). A classifier
measures the same photos as a classification bucket (each labelled by its number of
kangaroos, one or more: the labels do not change what the pipeline costs). `--bucket DIR
--model NAME` measures one bucket and model instead, and its last line is
`ms_per_image=X images_per_s=Y` (ours).

    python benchmarks/input_pipeline.py [--models demo,retinanet_spinenet49_mobile] [--batches 20]
    python benchmarks/input_pipeline.py --bucket DIR --model NAME
    python benchmarks/input_pipeline.py --settings [--repetitions 2]

`--settings` measures ours for the default model on kangaroo with one tf.data setting
changed at a time from train's (Model Garden's defaults: deterministic, AUTOTUNE
prefetch and algorithm, the shared thread pool), each setting --repetitions times in
turn, so that a drift of the machine shows in every row.
"""
import argparse
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KANGAROO = REPO.parent / "shared" / "datasets" / "kangaroo"
MODELS = ("retinanet_spinenet49_mobile", "retinanet_resnet50_fpn", "retinanet_spinenet96", "fasterrcnn_resnet50_fpn",
          "demo", "mobilenet_v2")
PHONE_SIZE = (4032, 3024)
PHONE_QUALITY = 92
BATCH = 16
# One tf.data setting changed from train's: a train_data field of params.yaml, or the dataset's private thread pool.
SETTINGS = ("default", "deterministic=false", "prefetch_buffer_size=2", "prefetch_buffer_size=8",
            "autotune_algorithm=MAX_PARALLELISM", "autotune_algorithm=STAGE_BASED", "private_threadpool_size=2",
            "private_threadpool_size=4")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated catalogue models")
    parser.add_argument("--bucket", type=Path, help="measure this bucket (with --model) instead of kangaroo")
    parser.add_argument("--model", help="the catalogue model for --bucket (default: the bucket type's)")
    parser.add_argument("--batches", type=int, default=20, help="batches measured per model (after an epoch and --warmup)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--phone-images", type=int, default=48, help="kangaroo photos upscaled to phone size")
    parser.add_argument("--settings", action="store_true",
                        help="the default model on kangaroo with each tf.data setting changed in turn")
    parser.add_argument("--repetitions", type=int, default=2, help="rounds over the settings (with --settings)")
    parser.add_argument("--measure", nargs=3, metavar=("RESULT_DIR", "MODEL", "WHAT"), help=argparse.SUPPRESS)
    parser.add_argument("--setting", default="default", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer import catalogue

    if args.measure:
        result_dir, model, what = args.measure
        print(json.dumps(measure(Path(result_dir), model, what, args.batches, args.warmup, args.setting)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.bucket:
            figures = run_model(prepared(args.bucket, scratch / "one", args.model), args.model, args)
            print(f"ms_per_image={figures['ours'] * 1000:.2f} images_per_s={figures['images_per_s']:.1f}")
            return
        if args.settings:
            compare_settings(prepared(KANGAROO, scratch / "settings", None), args)
            return
        if not KANGAROO.is_dir():
            sys.exit(f"no kangaroo bucket at {KANGAROO}: pass --bucket DIR")
        buckets = {"kangaroo": KANGAROO, "phone 4032x3024": phone_bucket(KANGAROO, scratch / "phone",
                                                                         args.phone_images)}
        print(f"{os.cpu_count()} CPUs, batch {BATCH}, {args.batches} batches after an epoch and {args.warmup}; "
              "CPU ms per image")
        print(f"{'bucket':18} {'model':28} {'Model Garden':>12} {'ours':>6} {'ratio':>6} {'floor':>6} "
              f"{'ours img/s':>10} {'ours decodes':>12}")
        for index, (name, bucket) in enumerate(buckets.items()):
            for model in args.models.split(","):
                if catalogue.load_model(model).task == "classification":
                    bucket = classification_bucket(bucket, scratch / f"classes-{index}")
                result_dir = prepared(bucket, scratch / f"records-{index}-{model}", model)
                figures = run_model(result_dir, model, args)
                print(f"{name:18} {model:28} {figures['model_garden'] * 1000:12.2f} {figures['ours'] * 1000:6.2f} "
                      f"{figures['ours'] / figures['model_garden']:6.2f} {figures['floor'] * 1000:6.2f} "
                      f"{figures['images_per_s']:10.1f} {'once' if figures['decodes_once'] else 'every epoch':>12}",
                      flush=True)


def prepared(bucket, result_dir, model):
    """RESULT_DIR with data/ written by prepare from BUCKET for MODEL (None: the bucket type's default), as run does."""
    from trainer.prepare import prepare

    prepare(bucket, result_dir, model=model)
    return result_dir


def classification_bucket(source, destination):
    """SOURCE's photos (linked) as a classification bucket in DESTINATION: each labelled "one kangaroo" or
    "kangaroos" by its boxes; made once."""
    if destination.is_dir():
        return destination
    document = json.loads((source / "_annotations.json").read_text())
    destination.mkdir(parents=True)
    annotations = {}
    for key, boxes in document["annotations"].items():
        (destination / key).symlink_to((source / key).resolve())
        annotations[key] = [{"label": "one kangaroo" if len(boxes) == 1 else "kangaroos"}]
    (destination / "_annotations.json").write_text(json.dumps(
        {"version": "1.0", "type": "classification", "labels": ["one kangaroo", "kangaroos"],
         "annotations": annotations}))
    return destination


def phone_bucket(source, destination, count):
    """The first COUNT photos of SOURCE upscaled to PHONE_SIZE (landscape; portrait photos turned), at quality 92."""
    from PIL import Image, ImageOps

    document = json.loads((source / "_annotations.json").read_text())
    kept = dict(list(document["annotations"].items())[:count])
    destination.mkdir(parents=True)
    for key in kept:
        with Image.open(source / key) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            size = PHONE_SIZE if image.width >= image.height else PHONE_SIZE[::-1]
            image.resize(size, Image.BICUBIC).save(destination / key, quality=PHONE_QUALITY)
    document["annotations"] = kept  # Cloud Annotations boxes are 0..1: they hold at any size
    (destination / "_annotations.json").write_text(json.dumps(document))
    return destination


def compare_settings(result_dir, args):
    """Print ours per tf.data setting (SETTINGS), each in a fresh process, the settings in turn per repetition."""
    print(f"{os.cpu_count()} CPUs, default model, kangaroo, batch {BATCH}, {args.batches} batches after an epoch and "
          f"{args.warmup}; ours, CPU ms per image (images/s)")
    rows = {setting: [] for setting in SETTINGS}
    for _ in range(args.repetitions):
        for setting in SETTINGS:
            measured = measured_in_process(result_dir, "", "ours", args, setting)
            rows[setting].append(f"{measured['cpu_per_image'] * 1000:.2f} ({measured['images_per_s']:.0f})")
            print(f"{setting:36} {'  '.join(rows[setting])}", flush=True)


def measured_in_process(result_dir, model, what, args, setting="default"):
    """measure() in a fresh process (TensorFlow's thread pools and caches start cold and equal)."""
    done = subprocess.run([sys.executable, __file__, "--measure", str(result_dir), model or "", what, "--batches",
                           str(args.batches), "--warmup", str(args.warmup), "--setting", setting],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{model} {what} {setting} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_model(result_dir, model, args):
    """{"model_garden", "ours", "floor": CPU seconds per image, "images_per_s": ours, wall, "decodes_once": whether
    ours did} for MODEL on RESULT_DIR,
    each in a fresh process (TensorFlow's thread pools and caches start cold and equal)."""
    figures = {}
    for what in ("model_garden", "ours", "floor"):
        measured = measured_in_process(result_dir, model, what, args)
        figures[what] = measured["cpu_per_image"]
        if what == "ours":
            figures["images_per_s"], figures["decodes_once"] = measured["images_per_s"], measured["decodes_once"]
    return figures


def measure(result_dir, model, what, batches, warmup, setting="default"):
    """CPU seconds per image and wall images/s over BATCHES batches of WHAT ("model_garden", "ours" or "floor", see
    the module) for MODEL's params on RESULT_DIR's records, with SETTING (one of SETTINGS) applied."""
    import tensorflow as tf
    import yaml
    from official.core import task_factory

    from trainer import input_pipeline
    from trainer.config import load_params, write_params
    from trainer.hardware import available_memory
    from trainer.run_dir import Report, RunDir

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch) / "run"
        run_dir.mkdir()
        (run_dir / "data").symlink_to(result_dir / "data")
        write_params(run_dir, model=model or None, batch_size=BATCH, init_checkpoint="")
        params = load_params(run_dir)
        data = params.task.train_data
        name, _, value = setting.partition("=")
        if name in data.as_dict():
            data.override({name: yaml.safe_load(value)})
        decode_once = False
        if what == "floor":
            dataset = floor_dataset(data, params.task.model.input_size[:2])
        else:
            get_task = task_factory.get_task
            if what == "ours":  # as train runs it: decoding once when the decoded images fit
                decode_once, _ = input_pipeline.decodes_once(Report.load(RunDir(result_dir)).decoded_bytes("train"),
                                                             available_memory())
                get_task = functools.partial(input_pipeline.get_task, decode_once=decode_once)
            dataset = get_task(params.task).build_inputs(data)
        if name == "private_threadpool_size":
            options = tf.data.Options()
            options.threading.private_threadpool_size = int(value)
            dataset = dataset.with_options(options)
        batches_seen = iter(dataset)
        # An epoch first, so a pipeline that decodes once is measured after it has (as for the most of a training).
        epoch = math.ceil(Report.load(RunDir(result_dir)).images("train") / data.global_batch_size)
        for _ in range(warmup + epoch):
            next(batches_seen)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(batches):
            next(batches_seen)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    images = batches * data.global_batch_size
    return {"cpu_per_image": cpu / images, "images_per_s": images / wall, "decodes_once": decode_once}


def floor_dataset(data, size):
    """DATA's records decoded and resized to SIZE, batched as DATA: the work every pipeline must do."""
    import tensorflow as tf

    feature = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}

    def decode(record):
        encoded = tf.io.parse_single_example(record, feature)["image/encoded"]
        return tf.image.resize(tf.io.decode_jpeg(encoded, channels=3), size)

    files = tf.data.Dataset.list_files(data.input_path, shuffle=False)
    return (tf.data.TFRecordDataset(files).repeat().map(decode, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(data.global_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))


if __name__ == "__main__":
    main()
