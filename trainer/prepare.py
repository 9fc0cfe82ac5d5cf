"""Stage 1, prepare: a Cloud Annotations bucket -> TFRecords, label map and report in RESULT_DIR/data/.

Every image is fully verified (a truncated JPEG would otherwise crash training
hours later), turned upright by its EXIF orientation (the annotator saw it
upright; Model Garden's decoder ignores EXIF), converted to RGB JPEG when it is
not one and downscaled past `max_side`. JPEGs that need none of this are copied
byte for byte. Bad images and boxes are skipped or repaired, never fatal, and
each one is listed in report.json.

The split is by content hash, so copies of one image never straddle train and
val. Outputs are built in a temporary folder inside RESULT_DIR and renamed to
data/ when complete; report.json records a fingerprint of the inputs and
options, and a rerun with the same fingerprint does nothing.

Records are written with protobuf and google-crc32c rather than TensorFlow:
importing TensorFlow costs ~10 s and ~700 MB per process, more than verifying a
thousand images, and prepare then also runs where TensorFlow is absent.
"""
import hashlib
import io
import json
import math
import multiprocessing
import os
import shutil
import struct
import uuid
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_encoding
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from trainer import console
from trainer.annotations import REPAIRED, SKIPPED, parse_annotations
from trainer.errors import UserError

ANNOTATIONS_FILE = "_annotations.json"
OUTPUT_DIR = "data"
FORMAT_VERSION = 1            # part of the fingerprint: bump when the records or report change
JPEG_QUALITY = 95
DEFAULT_MAX_SIDE = 1024       # the largest model input in configs/models/: every model sees full resolution
SHARD_BYTES = 100 * 2**20     # TensorFlow's guidance: shards of 100-200 MB read efficiently
MIN_TRAIN_IMAGES_PER_CLASS = 10
POOL_MIN_IMAGES = 64          # below this, starting worker processes costs more than it saves
POOL_WINDOW = 256             # images handed to the workers at a time
POOL_CHUNK = 8                # images per message to a worker
EXIF_ORIENTATION = 0x0112
TURNED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def prepare(data_dir, result_dir, val_fraction=0.2, seed=42, max_side=DEFAULT_MAX_SIDE, num_shards=None):
    """Write RESULT_DIR/data/ from the bucket in DATA_DIR; return the report (also data/report.json).

    val_fraction: share of images for evaluation. With 2 or more images at least one
    goes to val and one to train; 0 gives no val split (and no val files).
    num_shards: TFRecord files per split; default one per ~100 MB of images.
    Skips the work when data/report.json holds the fingerprint of the same input and options.
    """
    data_dir, result_dir = Path(data_dir), Path(result_dir)
    options = {"val_fraction": val_fraction, "seed": seed, "max_side": max_side, "num_shards": num_shards}
    _check_options(options)
    annotations_path = data_dir / ANNOTATIONS_FILE
    if not annotations_path.is_file():
        raise UserError(f"no {ANNOTATIONS_FILE} in {data_dir}")
    raw = annotations_path.read_bytes()
    annotation_set = parse_annotations(raw)
    fingerprint = _fingerprint(raw, data_dir, annotation_set, options)
    output_dir = result_dir / OUTPUT_DIR
    existing = _complete_report(output_dir, fingerprint)
    if existing:
        _log(f"{output_dir} is up to date (fingerprint {fingerprint[:12]}); nothing to do")
        return existing

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # tensorflow_datasets turns it on process-wide; verifying needs it off
    checked = list(_map_images(_check_image, [(image.key, str(data_dir / image.key), max_side)
                                              for image in annotation_set.images], "checking images"))
    skipped = [issue for issue in annotation_set.issues if issue["action"] == SKIPPED]
    repaired = [issue for issue in annotation_set.issues if issue["action"] == REPAIRED]
    kept = []
    for image, check in zip(annotation_set.images, checked):
        if check["skip"]:
            skipped.append({"image": image.key, "reason": check["skip"]})
        else:
            repaired.extend({"image": image.key, "reason": reason} for reason in check["changes"])
            kept.append((image, check))
    _log_issues("skipped", skipped)
    _log_issues("repaired", repaired)
    if not kept:
        if not skipped:
            raise UserError(f"{ANNOTATIONS_FILE} in {data_dir} annotates no images")
        for issue in skipped[:10]:
            _log(f"skipped {issue['image']}: {issue['reason']}")
        raise UserError(f"no usable image in {data_dir}: all {_count(len(skipped), 'annotated image')} were skipped")

    labels, warnings = _label_ids(annotation_set.labels, [image for image, _ in kept])
    splits = _split(kept, val_fraction, seed)
    report = {
        "labels": labels,
        "splits": {name: _split_counts(records, labels) for name, records in splits.items()},
        "files": {},
        "max_boxes_per_image": max(len(image.boxes) for image, _ in kept),
        "skipped": [{"image": i["image"], "reason": i["reason"]} for i in sorted(skipped, key=_issue_order)],
        "repaired": [{"image": i["image"], "reason": i["reason"]} for i in sorted(repaired, key=_issue_order)],
        "warnings": warnings + _dataset_warnings(kept, splits, labels),
        "options": options,
        "fingerprint": fingerprint,
    }
    result_dir.mkdir(parents=True, exist_ok=True)
    for stale in result_dir.glob(".prepare-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    staging = result_dir / f".prepare-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        report["files"] = _write_records(staging, splits, labels, data_dir, num_shards)
        _write_label_files(staging, labels)
        (staging / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        _replace_dir(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for warning in report["warnings"]:
        _log(f"warning: {warning}")
    counts = report["splits"]
    _log(f"wrote {counts['train']['images']} train and {_count(counts['val']['images'], 'val image')} "
         f"({_count(len(labels), 'class', 'classes')}) to {output_dir}")
    return report


def _check_options(options):
    if not 0 <= options["val_fraction"] < 1:
        raise UserError(f"--val-fraction must be in [0, 1), not {options['val_fraction']}")
    if options["max_side"] < 32:
        raise UserError(f"--max-side must be at least 32 pixels, not {options['max_side']}")
    if options["num_shards"] is not None and options["num_shards"] < 1:
        raise UserError(f"--num-shards must be at least 1, not {options['num_shards']}")


def _fingerprint(raw, data_dir, annotation_set, options):
    """sha256 of everything the outputs depend on; image files by size and mtime, as make does."""
    files = []
    for image in annotation_set.images:
        try:
            stat = (data_dir / image.key).stat()
            files.append([image.key, stat.st_size, stat.st_mtime_ns])
        except OSError:
            files.append([image.key, None, None])
    state = {"format": FORMAT_VERSION, "options": options, "files": files,
             "annotations": hashlib.sha256(raw).hexdigest()}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _complete_report(output_dir, fingerprint):
    """The report in OUTPUT_DIR when it was written for FINGERPRINT and its files are all there."""
    try:
        report = json.loads((output_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None
    names = [*report.get("files", {}).get("train", []), *report.get("files", {}).get("val", []),
             "labels.json", "label_map.pbtxt"]
    if report.get("fingerprint") == fingerprint and all((output_dir / name).is_file() for name in names):
        return report
    return None


def _map_images(function, tasks, description):
    """Yield FUNCTION(task) for TASKS in order, on every CPU core when there are enough, with a progress bar.

    At most two windows of results wait in memory, however far the workers run
    ahead of the writer: memory stays flat with the number of images.
    """
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # macOS
    progress = tqdm(total=len(tasks), desc=f"prepare: {description}", unit="img", file=console.stream(), mininterval=1)
    with progress:
        if workers < 2 or len(tasks) < POOL_MIN_IMAGES:
            yield from _counted(map(function, tasks), progress)
            return
        # spawn, not fork: the caller may have imported TensorFlow, whose threads do not survive fork
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            windows = deque()
            for start in range(0, len(tasks), POOL_WINDOW):
                windows.append(pool.map(function, tasks[start:start + POOL_WINDOW], chunksize=POOL_CHUNK))
                if len(windows) == 2:
                    yield from _counted(windows.popleft(), progress)
            while windows:
                yield from _counted(windows.popleft(), progress)


def _counted(results, progress):
    for result in results:
        progress.update()
        yield result


def _check_image(task):
    """Read and fully decode one image: its content hash, stored size and the changes it needs, or why it is skipped.

    For JPEGs, draft mode decodes at 1/8 scale: the whole entropy-coded stream is
    still read, so truncation and corruption are caught at about half the cost.
    """
    key, path, max_side = task
    result = {"skip": None, "changes": [], "sha256": None, "bytes": 0, "size": None}
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        result["skip"] = "missing file: not found in DATA_DIR"
        return result
    except OSError as err:
        result["skip"] = f"unreadable file: {err.strerror or err}"
        return result
    result.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    try:
        with Image.open(io.BytesIO(data)) as image:
            source_format, mode, (width, height) = image.format, image.mode, image.size
            orientation = _orientation(image)
            if source_format == "JPEG":
                image.draft(mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except UnidentifiedImageError:  # its message holds a memory address: not reproducible
        result["skip"] = "unreadable image: not an image format Pillow can read"
        return result
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        result["skip"] = f"unreadable image: {err or type(err).__name__}"
        return result
    if source_format != "JPEG" or mode != "RGB":
        result["changes"].append(f"converted: {source_format} {mode} to RGB JPEG")
    if orientation:
        result["changes"].append(f"rotated: EXIF orientation {orientation}")
        if orientation in TURNED_ORIENTATIONS:
            width, height = height, width
    size = _fitted_size(width, height, max_side)
    if size != (width, height):
        result["changes"].append(f"downscaled: {width}x{height} to {size[0]}x{size[1]}")
    result["size"] = size
    return result


def _orientation(image):
    """The EXIF orientation (2..8) that needs a transpose, else None (1, absent, or out of range)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION)
    except (OSError, SyntaxError, ValueError, struct.error):
        return None
    return orientation if orientation in range(2, 9) else None


def _fitted_size(width, height, max_side):
    """(width, height) scaled down so that the longer side is at most MAX_SIDE."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    return max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest))


def _label_ids(listed, kept_images):
    """Label names in id order (id = index + 1): the used ones, in `labels` order, then unlisted ones sorted."""
    used = {box.label for image in kept_images for box in image.boxes}
    unlisted = sorted(used - set(listed))
    warnings = [f"label {name!r} is used but not listed in 'labels'" for name in unlisted]
    return [name for name in listed if name in used] + unlisted, warnings


def _split(kept, val_fraction, seed):
    """{"train": [...], "val": [...]} of (image, check), deterministic for SEED.

    Images with identical bytes form one group and go to the same split, so val
    never scores an image the model trained on. Groups are ordered by a seeded
    hash of their content and fill val up to round(n * val_fraction) images
    (at least 1, and at most n - 1, when n >= 2); within a split, records are
    ordered by a seeded hash of the key so that every shard mixes the classes.
    """
    groups = {}
    for record in kept:
        groups.setdefault(record[1]["sha256"], []).append(record)
    count = len(kept)
    target = round(count * val_fraction)
    if count >= 2 and val_fraction > 0:
        target = min(max(target, 1), count - 1)
    splits = {"train": [], "val": []}
    for content in sorted(groups, key=lambda sha: _seeded_hash(seed, sha)):
        group = groups[content]
        splits["val" if len(splits["val"]) + len(group) <= target else "train"].extend(group)
    for records in splits.values():
        records.sort(key=lambda record: _seeded_hash(seed, record[0].key))
    return splits


def _seeded_hash(seed, text):
    return hashlib.sha256(f"{seed}:{text}".encode()).digest()


def _split_counts(records, labels):
    per_class = Counter(box.label for image, _ in records for box in image.boxes)
    return {"images": len(records),
            "boxes": sum(len(image.boxes) for image, _ in records),
            "negatives": sum(1 for image, _ in records if not image.boxes),
            "per_class": {name: per_class[name] for name in labels}}


def _dataset_warnings(kept, splits, labels):
    warnings = []
    for name in labels:
        images = sum(1 for image, _ in splits["train"] if any(box.label == name for box in image.boxes))
        if images < MIN_TRAIN_IMAGES_PER_CLASS:
            warnings.append(f"class {name!r} has only {_count(images, 'training image')}; a detector needs at least "
                            f"{MIN_TRAIN_IMAGES_PER_CLASS}, and does well with 50 or more")
    copies = len(kept) - len({check["sha256"] for _, check in kept})
    if copies:
        warnings.append(f"{_count(copies, 'image')} byte-identical to another image; each set of copies is "
                        "kept in one split")
    if not splits["val"]:
        warnings.append("no validation images: evaluation has nothing to score")
    return warnings


def _issue_order(issue):
    return issue["image"]  # a stable sort: an image's issues stay in the order they were found


def _write_records(directory, splits, labels, data_dir, num_shards):
    """Write each split's TFRecord shards into DIRECTORY, records dealt round-robin; return file names per split.

    `image/source_id` (COCO evaluation's image id) numbers the images 1..N in key
    order: Model Garden parses it as an integer, and small ones survive a float32 cast.
    """
    label_ids = {name: number for number, name in enumerate(labels, start=1)}
    source_ids = {key: number for number, key in enumerate(sorted(image.key for records in splits.values()
                                                                 for image, _ in records), start=1)}
    files, tasks, targets = {}, [], []
    for split, records in splits.items():
        shards = _shard_count(records, num_shards)
        files[split] = [f"{split}-{index:05d}-of-{shards:05d}.tfrecord" for index in range(shards)]
        for position, (image, check) in enumerate(records):
            boxes = [(box.x, box.y, box.x2, box.y2, label_ids[box.label], box.label) for box in image.boxes]
            tasks.append((image.key, str(data_dir / image.key), check["sha256"], bool(check["changes"]),
                          check["size"], boxes, source_ids[image.key]))
            targets.append((split, position % shards))
    handles = {(split, index): open(directory / name, "wb")
               for split, names in files.items() for index, name in enumerate(names)}
    try:
        for target, record in zip(targets, _map_images(_encode_record, tasks, "writing records")):
            handles[target].write(record)
    finally:
        for handle in handles.values():
            handle.close()
    return files


def _shard_count(records, num_shards):
    """NUM_SHARDS, or one shard per SHARD_BYTES of source images; never more shards than images.

    The old trainer always wrote 10 + 10: twenty 1 MB files for a small bucket,
    twenty multi-GB files for a large one. ~100 MB shards read efficiently and
    give a large dataset enough files to shard across workers; with fewer files
    than workers, Model Garden reads every file and shards by record instead.
    """
    if not records:
        return 0
    wanted = num_shards or math.ceil(sum(check["bytes"] for _, check in records) / SHARD_BYTES)
    return max(1, min(wanted, len(records)))


def _encode_record(task):
    """One framed TFRecord: the image as JPEG (the source bytes when they need no change) and its boxes."""
    key, path, sha256, needs_change, (width, height), boxes, source_id = task
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(f"{key} changed while prepare was reading the bucket; run prepare again")
    if needs_change:
        data = _upright_rgb_jpeg(data, (width, height))
    example = _EXAMPLE()
    feature = example.features.feature
    feature["image/encoded"].bytes_list.value.append(data)
    feature["image/format"].bytes_list.value.append(b"jpeg")
    feature["image/height"].int64_list.value.append(height)
    feature["image/width"].int64_list.value.append(width)
    feature["image/source_id"].bytes_list.value.append(str(source_id).encode())
    feature["image/filename"].bytes_list.value.append(key.encode())
    for name, values in (("image/object/bbox/xmin", [box[0] for box in boxes]),
                         ("image/object/bbox/ymin", [box[1] for box in boxes]),
                         ("image/object/bbox/xmax", [box[2] for box in boxes]),
                         ("image/object/bbox/ymax", [box[3] for box in boxes]),
                         ("image/object/area", [(box[2] - box[0]) * (box[3] - box[1]) * width * height
                                                for box in boxes])):
        feature[name].float_list.value.extend(values)
    feature["image/object/class/label"].int64_list.value.extend(box[4] for box in boxes)
    feature["image/object/class/text"].bytes_list.value.extend(box[5].encode() for box in boxes)
    feature["image/object/is_crowd"].int64_list.value.extend(0 for _ in boxes)
    return _tfrecord(example.SerializeToString())


def _upright_rgb_jpeg(data, size):
    """DATA re-encoded as an upright RGB JPEG of SIZE, keeping its EXIF (orientation reset) and RGB colour profile."""
    with Image.open(io.BytesIO(data)) as source:
        icc_profile = source.info.get("icc_profile") if source.mode == "RGB" else None
        if source.format == "JPEG":  # decode at the smallest DCT scale still >= SIZE: a 12 MP photo decodes 4x faster
            turned = (source.width >= source.height) != (size[0] >= size[1])
            source.draft(source.mode, (size[1], size[0]) if turned else tuple(size))
        image = ImageOps.exif_transpose(source)
    if image.mode != "RGB":
        if image.has_transparency_data:
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, "white")
            image.paste(rgba, mask=rgba.getchannel("A"))
        else:
            image = image.convert("RGB")
    if image.size != tuple(size):
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    output = io.BytesIO()
    image.save(output, "JPEG", quality=JPEG_QUALITY, exif=image.getexif(), icc_profile=icc_profile)
    return output.getvalue()


def _tfrecord(payload):
    """PAYLOAD framed as one TFRecord: length, masked CRC32C of the length, payload, masked CRC32C of it."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", _masked_crc(length)) + payload + struct.pack("<I", _masked_crc(payload))


def _masked_crc(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _example_message_class():
    """tf.train.Example declared from tensorflow/core/example/{feature,example}.proto (same wire format)."""
    proto = descriptor_pb2.FileDescriptorProto(name="trainer/tf_example.proto", package="tensorflow",
                                               syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    for name, value_type in (("BytesList", field.TYPE_BYTES), ("FloatList", field.TYPE_FLOAT),
                             ("Int64List", field.TYPE_INT64)):
        proto.message_type.add(name=name).field.add(name="value", number=1, type=value_type,
                                                    label=field.LABEL_REPEATED)
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in enumerate(("bytes_list", "float_list", "int64_list"), start=1):
        feature.field.add(name=name, number=number, type=field.TYPE_MESSAGE, oneof_index=0,
                          type_name=f".tensorflow.{name.title().replace('_', '')}", label=field.LABEL_OPTIONAL)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, type_name=".tensorflow.Feature",
                    label=field.LABEL_OPTIONAL)
    features.field.add(name="feature", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                       type_name=".tensorflow.Features.FeatureEntry")
    proto.message_type.add(name="Example").field.add(name="features", number=1, type=field.TYPE_MESSAGE,
                                                     type_name=".tensorflow.Features", label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()  # private: no clash with TensorFlow's own registration
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


_EXAMPLE = _example_message_class()


def _write_label_files(directory, labels):
    """labels.json (names in id order) and label_map.pbtxt (protobuf text format, names C-escaped)."""
    (directory / "labels.json").write_text(json.dumps(labels, ensure_ascii=False) + "\n", encoding="utf-8")
    items = [f'item {{\n  id: {number}\n  name: "{text_encoding.CEscape(name.encode(), as_utf8=False)}"\n}}\n'
             for number, name in enumerate(labels, start=1)]
    (directory / "label_map.pbtxt").write_text("".join(items), encoding="ascii")


def _replace_dir(staging, output_dir):
    """Move the finished STAGING folder to OUTPUT_DIR, replacing an older one: readers see old or new, never half."""
    retired = output_dir.parent / f".prepare-old-{uuid.uuid4().hex}"
    if output_dir.exists():
        output_dir.rename(retired)
    staging.rename(output_dir)
    shutil.rmtree(retired, ignore_errors=True)


def _count(number, noun, plural=None):
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def _log(message):
    console.say(f"prepare: {message}", error=True)


def _log_issues(action, issues):
    """One stderr line per kind of issue ("unreadable image", "box clipped", ...) with its count."""
    if issues:
        kinds = Counter(issue["reason"].split(":")[0] for issue in issues)
        summary = ", ".join(f"{kind} ({count})" for kind, count in kinds.most_common())
        _log(f"{action} {len(issues)}: {summary}; each one is listed in report.json")


def add_arguments(parser):
    parser.add_argument("--data-dir", required=True, help="the bucket: _annotations.json and the images (read only)")
    parser.add_argument("--result-dir", required=True, help="where data/ is written")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of images for evaluation (default 0.2)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/val split (default 42)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                        help=f"downscale images whose longer side exceeds this (default {DEFAULT_MAX_SIDE})")
    parser.add_argument("--num-shards", type=int, default=None,
                        help="TFRecord files per split (default: one per ~100 MB of images)")


def main(args):
    prepare(args.data_dir, args.result_dir, val_fraction=args.val_fraction, seed=args.seed,
            max_side=args.max_side, num_shards=args.num_shards)
    return 0
