"""Stage 1, prepare: a Cloud Annotations bucket -> TFRecords, label map and report in RESULT_DIR/data/.

One pass over the images: each is read and decoded once (trainer.images), by
a pool of processes that return the finished record. Bad images and boxes are
skipped or repaired, never fatal, and each one is listed in report.json. The
split comes from each image's content hash (trainer.dataset), so it is known
as the image is read and copies of one image never straddle train and val;
a bucket with `_split.json` (an imported dataset's own split) keeps that one.

Records are written in place in data/ and report.json is written last as the
marker of a complete run (trainer.records): RESULT_DIR may be a Cloud Storage
FUSE mount, where a directory rename is refused or not atomic. report.json
records a fingerprint of the inputs and options; a rerun with the same
fingerprint does nothing, any other rerun first removes what is there.
"""
import contextlib
import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from PIL import ImageFile

from trainer import catalogue, console, tasks
from trainer.annotations import REPAIRED, SKIPPED, read_annotations
from trainer.dataset import (DEFAULT_SEED, DEFAULT_VAL_FRACTION, SPLIT_FILE, Item, check_distinct, choose_split,
                             counted, dataset_warnings, label_ids, read_split_file, seeded_hash, split_counts)
from trainer.errors import UserError
from trainer.folders import refuse_overlap
from trainer.images import StoredSize, load_image, map_images
from trainer.records import ShardWriter, clear_outputs, complete_report, example_record, write_label_files
from trainer.run_dir import Report, RunDir

ANNOTATIONS_FILE = "_annotations.json"
FORMAT_VERSION = 5            # part of the fingerprint: bump when the records or report change
SHARD_BYTES = 100 * 2**20     # TensorFlow's guidance: shards of 100-200 MB read efficiently


def prepare(data_dir, result_dir, val_fraction=DEFAULT_VAL_FRACTION, seed=DEFAULT_SEED, max_side=None,
            num_shards=None, model=None, strict=False):
    """Write RESULT_DIR/data/ from the bucket in DATA_DIR; return the report (also data/report.json).

    val_fraction: share of images for evaluation, by content hash. With 2 or more
    distinct images at least one goes to val and one to train; 0 gives no val split.
    num_shards: TFRecord files per split; default one per ~100 MB of images.
    model: the catalogue model the data is for (default: the bucket type's; `demo` is the demo model of
    that type); its input size decides which boxes are too small, and its augmentation the size images are
    stored at (its task's `stored_size`: the detail its training reads). A model of the other task is refused.
    max_side: store images with the longer side at most this instead (config refuses a model that needs more).
    strict: raise UserError when there are dataset warnings (after writing the outputs).
    Skips the work when data/report.json holds the fingerprint of the same input and options.
    """
    data_dir, result_dir = Path(data_dir), Path(result_dir)
    refuse_overlap(data_dir, result_dir)
    options = {"val_fraction": val_fraction, "seed": seed, "max_side": max_side, "num_shards": num_shards}
    _check_options(options)
    annotations_path = data_dir / ANNOTATIONS_FILE
    if not annotations_path.is_file():
        raise UserError(f"no {ANNOTATIONS_FILE} in {data_dir}")
    annotation_set, annotations_digest = read_annotations(annotations_path)
    options["model"] = catalogue.resolve_model(model, annotation_set.task)
    entry = catalogue.load_model(options["model"])
    stored_size = StoredSize.longest(max_side) if max_side else tasks.get(entry.task).stored_size(entry)
    options["stored_size"] = asdict(stored_size)
    file_sizes, fingerprint = _fingerprint(annotations_digest, data_dir, annotation_set, options)
    run = RunDir(result_dir)
    report = complete_report(run, fingerprint)
    if report:
        _log(f"{run.data} is up to date (fingerprint {fingerprint[:12]}); nothing to do")
    else:
        report = _write(data_dir, run, annotation_set, options, entry.input_side, stored_size, file_sizes,
                        fingerprint)
    _log_warnings(report.warnings)
    if strict and report.warnings:
        raise UserError(f"--strict: {len(report.warnings)} dataset warning(s), listed above and in "
                        f"{run.report_json}")
    return report.as_dict()


def _write(data_dir, run, annotation_set, options, input_size, stored_size, file_sizes, fingerprint):
    """Read every image once and write records, label files and, last, the report; return the report."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # tensorflow_datasets turns it on process-wide; verifying needs it off
    seed = options["seed"]
    splitter = choose_split(read_split_file(data_dir), [image.key for image in annotation_set.images], seed,
                            options["val_fraction"])
    val_fraction = splitter.val_fraction
    if splitter.source == SPLIT_FILE:
        _log(f"train/val split from {SPLIT_FILE} (the dataset's own, kept by import): "
             f"{val_fraction:.0%} of the images in val; --val-fraction does not apply")
    labels, warnings = label_ids(annotation_set.labels, annotation_set.images)
    task = annotation_set.task
    first_id = tasks.get(task).FIRST_LABEL_ID
    label_numbers = {name: number for number, name in enumerate(labels, start=first_id)}
    # source_id (COCO evaluation's image id) numbers the images in key order: Model Garden
    # parses it as an integer, and small ones survive a float32 cast.
    source_ids = {key: number for number, key in enumerate(sorted(i.key for i in annotation_set.images), start=1)}
    # Read in a seeded order of keys: within a split records come in this order, so every shard mixes the classes.
    ordered = sorted(annotation_set.images, key=lambda image: seeded_hash(seed, image.key))
    work = [(task, image.key, str(data_dir / image.key), stored_size, source_ids[image.key],
              [(b.x, b.y, b.x2, b.y2, label_numbers[b.label], b.label) for b in image.boxes]) for image in ordered]
    total_bytes = sum(file_sizes.values())
    planned = {"train": _planned_shards(total_bytes * (1 - val_fraction), options["num_shards"]),
               "val": _planned_shards(total_bytes * val_fraction, options["num_shards"]) if val_fraction else 0}
    skipped = [issue for issue in annotation_set.issues if issue["action"] == SKIPPED]
    repaired = [issue for issue in annotation_set.issues if issue["action"] == REPAIRED]
    items, held = [], {}
    output_dir = run.data
    clear_outputs(run)
    writer = ShardWriter(output_dir, planned)

    def emit(released):
        for digest, split in released:
            for image, size, record in held.pop(digest):
                items.append(Item(image.key, image.boxes, digest, split, size))
                writer.write(split, record)

    try:
        for image, (loaded, record) in zip(ordered, map_images(_load_record, work, "reading images")):
            if loaded.skip:
                skipped.append({"image": image.key, "reason": loaded.skip})
                continue
            repaired.extend({"image": image.key, "reason": reason} for reason in loaded.changes)
            split, released = splitter.place(loaded.digest, image.key)
            held.setdefault(loaded.digest, []).append((image, loaded.size, record))
            emit(released + ([(loaded.digest, split)] if split else []))
        emit(splitter.finish())
        _log_issues("skipped", skipped)
        _log_issues("repaired", repaired)
        if not items:
            if not skipped:
                raise UserError(f"{ANNOTATIONS_FILE} in {data_dir} annotates no images")
            for issue in sorted(skipped, key=_issue_order)[:10]:
                _log(f"skipped {issue['image']}: {issue['reason']}")
            raise UserError(f"no usable image in {data_dir}: all {len(skipped)} annotated images were skipped")
        check_distinct(len(items), len({item.digest for item in items}), data_dir)
        files = writer.finish()
    except BaseException:
        writer.close()
        clear_outputs(run)
        with contextlib.suppress(OSError):  # a folder someone put there keeps data/ alive: fine
            output_dir.rmdir()
        raise
    items.sort(key=lambda item: item.key)
    report = Report(
        task=task,
        labels=labels,
        split_from=splitter.source,
        splits={split: split_counts(items, labels, split, task) for split in ("train", "val")},
        files=files,
        max_boxes_per_image=max(len(item.boxes) for item in items),
        input_size=input_size,
        stored_pixels={split: sum(item.size[0] * item.size[1] for item in items if item.split == split)
                       for split in ("train", "val")},
        skipped=[{"image": i["image"], "reason": i["reason"]} for i in sorted(skipped, key=_issue_order)],
        repaired=[{"image": i["image"], "reason": i["reason"]} for i in sorted(repaired, key=_issue_order)],
        warnings=warnings + splitter.warnings() + dataset_warnings(items, labels, input_size, val_fraction, task),
        options=options,
        fingerprint=fingerprint,
    )
    write_label_files(run, labels, first_id)
    report.write(run)  # last: the marker that data/ is complete
    counts = report.splits
    _log(f"wrote {counts['train']['images']} train and {counted(counts['val']['images'], 'val image')} "
         f"({counted(len(labels), 'class', 'classes')}{tasks.get(task).SUMMARY}) to "
         f"{output_dir}, images with {stored_size.describe()}")
    return report


def _load_record(work):
    """In a worker: (LoadedImage without its bytes, the framed record or None when skipped)."""
    task, key, path, stored_size, source_id, boxes = work
    loaded = load_image(path, stored_size)
    if loaded.skip:
        return loaded, None
    features = tasks.get(task).record_features(key, loaded.jpeg, loaded.size, boxes, source_id)
    record = example_record(features)
    loaded.jpeg = None  # already in the record: do not send it back twice
    return loaded, record


def _planned_shards(expected_bytes, num_shards):
    """NUM_SHARDS, or one shard per SHARD_BYTES of source images expected in the split (fewer if fewer records).

    The old trainer always wrote 10 + 10: twenty 1 MB files for a small bucket,
    twenty multi-GB files for a large one. ~100 MB shards read efficiently and
    give a large dataset enough files to shard across workers; with fewer files
    than workers, Model Garden reads every file and shards by record instead.
    """
    return num_shards or max(1, math.ceil(expected_bytes / SHARD_BYTES))


def _check_options(options):
    if not 0 <= options["val_fraction"] < 1:
        raise UserError(f"--val-fraction must be in [0, 1), not {options['val_fraction']}")
    if options["max_side"] is not None and options["max_side"] < 32:
        raise UserError(f"--max-side must be at least 32 pixels, not {options['max_side']}")
    if options["num_shards"] is not None and options["num_shards"] < 1:
        raise UserError(f"--num-shards must be at least 1, not {options['num_shards']}")


def _fingerprint(annotations_digest, data_dir, annotation_set, options):
    """({key: file size}, sha256 of everything the outputs depend on); image files by size and mtime, as make does.

    ANNOTATIONS_DIGEST: the sha256 hex of _annotations.json's bytes, hashed as they were streamed.
    """
    files, sizes = [], {}
    for image in annotation_set.images:
        try:
            stat = (data_dir / image.key).stat()
            files.append([image.key, stat.st_size, stat.st_mtime_ns])
            sizes[image.key] = stat.st_size
        except OSError:
            files.append([image.key, None, None])
    split_file = data_dir / SPLIT_FILE
    state = {"format": FORMAT_VERSION, "options": options, "files": files,
             "annotations": annotations_digest,
             "split": hashlib.sha256(split_file.read_bytes()).hexdigest() if split_file.is_file() else None}
    return sizes, hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _issue_order(issue):
    return issue["image"]  # a stable sort: an image's issues stay in the order they were found


def _log(message):
    console.say(f"prepare: {message}", error=True)


def _log_warnings(warnings):
    for warning in warnings:
        _log(f"WARNING: {warning['message']}")


def _log_issues(action, issues):
    """One stderr line per kind of issue ("unreadable image", "box clipped", ...) with its count."""
    if issues:
        kinds = Counter(issue["reason"].split(":")[0] for issue in issues)
        summary = ", ".join(f"{kind} ({count})" for kind, count in kinds.most_common())
        _log(f"{action} {len(issues)}: {summary}; each one is listed in report.json")


def add_arguments(parser):
    parser.add_argument("--data-dir", required=True, help="the bucket: _annotations.json and the images (read only)")
    parser.add_argument("--result-dir", required=True, help="where data/ is written")
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help=f"share of distinct images for evaluation, by content hash (default "
                             f"{DEFAULT_VAL_FRACTION}); 0: no validation split, training then runs without "
                             "evaluation")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the train/val split (default {DEFAULT_SEED})")
    parser.add_argument("--max-side", type=int, default=None,
                        help="downscale images whose longer side exceeds this (default: the size --model's "
                             "training reads in full, its input side times its largest scale jitter; "
                             "config refuses a model that needs more than was stored)")
    parser.add_argument("--num-shards", type=int, default=None,
                        help="TFRecord files per split (default: one per ~100 MB of images)")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help=f"catalogue model the data is for; its input size decides which boxes are too small "
                             f"to detect (default by the bucket's type: {catalogue.defaults_help()}; demo: the demo "
                             "model of that type)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with an error when there are dataset warnings (the outputs are still written)")


def main(args):
    prepare(args.data_dir, args.result_dir, val_fraction=args.val_fraction, seed=args.seed,
            max_side=args.max_side, num_shards=args.num_shards, model=args.model, strict=args.strict)
    return 0
