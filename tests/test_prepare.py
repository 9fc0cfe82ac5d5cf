"""prepare: each kind of input gets its documented outcome, checked in the records Model Garden reads."""
import hashlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder
from PIL import Image, ImageDraw

from trainer.errors import UserError
from trainer.images import EXIF_DROPPED
from trainer.prepare import prepare

from raw_exif import LONG, with_raw_exif

DECODER = TfExampleDecoder()
RECORD_KEYS = {"image/encoded", "image/format", "image/height", "image/width", "image/source_id", "image/filename",
               "image/object/bbox/xmin", "image/object/bbox/xmax", "image/object/bbox/ymin",
               "image/object/bbox/ymax", "image/object/class/label", "image/object/class/text",
               "image/object/area", "image/object/is_crowd"}
GREY, RED, BLUE = (128, 128, 128), (220, 20, 20), (20, 40, 220)


# --- building buckets -------------------------------------------------------------------------

def encode(image, image_format="JPEG", **params):
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def jpeg(size=(64, 48), colour=RED, **params):
    return encode(Image.new("RGB", size, colour), "JPEG", quality=95, **params)


def jpegs(keys, size=(64, 48)):
    """{key: a JPEG of its own colour}: distinct bytes, since copies of one image are grouped and refused."""
    return {key: jpeg(size, (20 + 9 * index, 128, 200 - 9 * index)) for index, key in enumerate(keys)}


def noisy_jpeg(size=(96, 64), seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def box(x, y, x2, y2, label="cat"):
    return {"x": x, "y": y, "x2": x2, "y2": y2, "label": label}


def make_bucket(path, files, annotations, labels=None):
    """Write FILES (key -> bytes) and an _annotations.json; labels default to the used ones, sorted."""
    for key, data in files.items():
        (path / key).parent.mkdir(parents=True, exist_ok=True)
        (path / key).write_bytes(data)
    if labels is None:
        labels = sorted({entry.get("label") for entries in annotations.values() for entry in entries} - {None})
    document = {"version": "1.0", "type": "localization", "labels": labels, "annotations": annotations}
    (path / "_annotations.json").write_text(json.dumps(document))
    return path


def tree_state(path):
    """{relative path: (sha256, mtime_ns)} of every file under PATH."""
    return {str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def bucket(tmp_path):
    path = tmp_path / "bucket"
    path.mkdir()
    return path


@pytest.fixture
def result(tmp_path):
    return tmp_path / "result"


# --- reading the outputs -------------------------------------------------------------------------

def read_records(result_dir, report):
    """{filename: fields} for every record, decoded by Model Garden's TfExampleDecoder, plus its split."""
    records = {}
    for split, names in report["files"].items():
        for name in names:
            for serialized in tf.data.TFRecordDataset(str(result_dir / "data" / name)):
                example = tf.train.Example.FromString(serialized.numpy())
                feature = example.features.feature
                decoded = {key: value.numpy() for key, value in DECODER.decode(serialized).items()}
                filename = feature["image/filename"].bytes_list.value[0].decode()
                records[filename] = {
                    **decoded, "split": split, "file": name, "keys": set(feature.keys()),
                    "encoded": feature["image/encoded"].bytes_list.value[0],
                    "format": feature["image/format"].bytes_list.value[0],
                    "text": [text.decode() for text in feature["image/object/class/text"].bytes_list.value]}
    return records


def label_map_class():
    """object_detection's StringIntLabelMap, declared here to parse label_map.pbtxt as the old API did."""
    proto = descriptor_pb2.FileDescriptorProto(name="test_label_map.proto", package="object_detection.protos")
    field = descriptor_pb2.FieldDescriptorProto
    item = proto.message_type.add(name="StringIntLabelMapItem")
    item.field.add(name="name", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    item.field.add(name="id", number=2, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    item.field.add(name="display_name", number=3, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    proto.message_type.add(name="StringIntLabelMap").field.add(
        name="item", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
        type_name=".object_detection.protos.StringIntLabelMapItem")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("object_detection.protos.StringIntLabelMap"))


def colour_at(image, x, y):
    return tuple(int(v) for v in image[y, x])


def close(colour, expected, tolerance=12):
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected))


# --- formats, modes, orientation, size --------------------------------------------------------------

def test_formats_and_modes_become_rgb_jpeg_and_rgb_jpegs_are_copied_byte_for_byte(bucket, result):
    rgba = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    rgba.paste((20, 40, 220, 255), (30, 0, 60, 40))  # right half opaque blue, left half transparent
    palette = Image.new("RGB", (50, 30), (30, 160, 40)).convert("P")
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))
    files = {
        "plain.jpg": jpeg(),
        "UPPER.JPG": jpeg(colour=BLUE),
        "sub/dir/nested.jpg": jpeg((32, 32), GREY),
        "photo.PNG": encode(rgba, "PNG"),
        "anim.gif": encode(palette, "GIF"),
        "gray.bmp": encode(Image.new("L", (30, 20), 90), "BMP"),
        "pic.webp": encode(Image.new("RGB", (40, 30), RED), "WEBP", lossless=True),
        "cmyk.jpg": encode(cmyk, "JPEG", quality=95),
        "gray.jpg": encode(Image.new("L", (30, 20), 200), "JPEG", quality=95),
    }
    make_bucket(bucket, files, {key: [box(0.1, 0.2, 0.6, 0.9)] for key in files})
    before = tree_state(bucket)

    report = prepare(bucket, result)

    assert tree_state(bucket) == before
    assert report["skipped"] == []
    assert report["repaired"] == [
        {"image": "anim.gif", "reason": "converted: GIF P to RGB JPEG"},
        {"image": "cmyk.jpg", "reason": "converted: JPEG CMYK to RGB JPEG"},
        {"image": "gray.bmp", "reason": "converted: BMP L to RGB JPEG"},
        {"image": "gray.jpg", "reason": "converted: JPEG L to RGB JPEG"},
        {"image": "photo.PNG", "reason": "converted: PNG RGBA to RGB JPEG"},
        {"image": "pic.webp", "reason": "converted: WEBP RGB to RGB JPEG"},
    ]
    records = read_records(result, report)
    assert sorted(records) == sorted(files)
    for key, data in files.items():
        record = records[key]
        source = Image.open(io.BytesIO(data))
        assert record["image"].shape == (source.height, source.width, 3), key
        assert (record["height"], record["width"]) == (source.height, source.width)
        assert record["format"] == b"jpeg"
        assert Image.open(io.BytesIO(record["encoded"])).format == "JPEG"
        np.testing.assert_allclose(record["groundtruth_boxes"], [[0.2, 0.1, 0.9, 0.6]], rtol=1e-6)
        assert record["keys"] == RECORD_KEYS
    for key in ("plain.jpg", "UPPER.JPG", "sub/dir/nested.jpg"):
        assert records[key]["encoded"] == files[key], f"{key} was re-encoded"
    assert close(colour_at(records["photo.PNG"]["image"], 45, 20), BLUE)
    assert close(colour_at(records["photo.PNG"]["image"], 10, 20), (255, 255, 255))  # transparent -> white
    assert close(colour_at(records["anim.gif"]["image"], 25, 15), (30, 160, 40))
    assert close(colour_at(records["gray.bmp"]["image"], 15, 10), (90, 90, 90))
    assert close(colour_at(records["pic.webp"]["image"], 20, 15), RED)
    assert close(colour_at(records["cmyk.jpg"]["image"], 20, 20), (255, 0, 0))
    assert close(colour_at(records["gray.jpg"]["image"], 15, 10), (200, 200, 200))


@pytest.mark.parametrize("max_side", [1024, 100])
def test_exif_orientation_turns_pixels_upright_and_boxes_stay_as_annotated(bucket, result, max_side):
    """The annotator saw the image upright: a red block at the annotated box must be red in the record."""
    upright = Image.new("RGB", (200, 100), GREY)
    ImageDraw.Draw(upright).rectangle((100, 25, 149, 74), fill=RED)  # box x 0.5-0.75, y 0.25-0.75
    undo = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}  # stored pixels = upright turned the way each camera writes them
    files = {}
    for orientation, transpose in undo.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        files[f"o{orientation}.jpg"] = encode(upright.transpose(transpose), "JPEG", quality=95, exif=exif)
    make_bucket(bucket, files, {key: [box(0.5, 0.25, 0.75, 0.75)] for key in files})

    report = prepare(bucket, result, max_side=max_side)

    scale = min(1, max_side / 200)
    downscaled = ["downscaled: 200x100 to 100x50"] if scale < 1 else []
    assert report["repaired"] == [{"image": f"o{o}.jpg", "reason": reason}
                                  for o in undo for reason in [f"rotated: EXIF orientation {o}", *downscaled]]
    for key, record in read_records(result, report).items():
        assert record["image"].shape == (round(100 * scale), round(200 * scale), 3), key
        np.testing.assert_allclose(record["groundtruth_boxes"], [[0.25, 0.5, 0.75, 0.75]])
        assert close(colour_at(record["image"], int(125 * scale), int(50 * scale)), RED, 30), key
        assert close(colour_at(record["image"], int(40 * scale), int(50 * scale)), GREY, 30), key
        assert Image.open(io.BytesIO(record["encoded"])).getexif().get(0x0112) in (None, 1)
        np.testing.assert_allclose(record["groundtruth_area"], [50 * 50 * scale * scale], rtol=1e-5)


def test_an_exif_pillow_cannot_write_back_is_left_out_of_the_stored_copy_only(bucket, result):
    """Downscaling re-encodes the image with its EXIF: one Pillow cannot write (SHORT tags holding LONG values)
    is left out, said in the report, and the image is stored, not skipped (it failed the whole prepare)."""
    odd = with_raw_exif(encode(Image.new("RGB", (400, 300), RED), "JPEG"),
                        [(0x0112, LONG, 65537), (0x0128, LONG, 131074)])  # Orientation, ResolutionUnit
    make_bucket(bucket, {"odd.jpg": odd, "plain.jpg": jpeg((400, 300))},
                {"odd.jpg": [box(0.1, 0.1, 0.5, 0.5)], "plain.jpg": [box(0.1, 0.1, 0.5, 0.5)]})
    before = tree_state(bucket)

    report = prepare(bucket, result, max_side=200)

    assert report["repaired"] == [{"image": "odd.jpg", "reason": "downscaled: 400x300 to 200x150"},
                                  {"image": "odd.jpg", "reason": EXIF_DROPPED},
                                  {"image": "plain.jpg", "reason": "downscaled: 400x300 to 200x150"}]
    records = read_records(result, report)
    assert records["odd.jpg"]["image"].shape == records["plain.jpg"]["image"].shape == (150, 200, 3)
    assert dict(Image.open(io.BytesIO(records["odd.jpg"]["encoded"])).getexif()) == {}
    assert close(colour_at(records["odd.jpg"]["image"], 100, 75), RED)  # not turned: 65537 is no orientation
    assert tree_state(bucket) == before


# (model, stored photo, stored wide image, stored tall image): its input times its largest scale jitter on the
# shorter side when stretched (mobile 384 x 2.0, SpineNet-96 1024 x 2.0; the longer side up to twice that), on
# the longer side when it keeps the aspect ratio (Faster R-CNN 640 x 1.25).
STORED_FOR = [("retinanet_spinenet49_mobile", (1024, 768), (1536, 384), (300, 1500)),
              ("retinanet_spinenet96", (2731, 2048), (2000, 500), (300, 1500)),
              ("fasterrcnn_resnet50_fpn", (800, 600), (800, 200), (160, 800))]


@pytest.mark.parametrize("model, photo, wide, tall", STORED_FOR)
def test_images_are_stored_at_the_size_the_models_training_reads_and_boxes_stay_valid(bucket, result, model,
                                                                                        photo, wide, tall):
    files = {"photo.jpg": jpeg((4032, 3024)), "wide.jpg": jpeg((2000, 500)), "small.jpg": jpeg((640, 480)),
             "tall.png": encode(Image.new("RGB", (300, 1500)), "PNG")}
    make_bucket(bucket, files, {key: [box(0.25, 0.5, 0.75, 1.0)] for key in files})

    report = prepare(bucket, result, model=model)

    stored = {"photo.jpg": photo, "wide.jpg": wide, "tall.png": tall, "small.jpg": (640, 480)}
    sources = {"photo.jpg": (4032, 3024), "wide.jpg": (2000, 500), "tall.png": (300, 1500)}
    assert report["repaired"] == [
        *([{"image": "photo.jpg", "reason": f"downscaled: 4032x3024 to {photo[0]}x{photo[1]}"}]),
        {"image": "tall.png", "reason": "converted: PNG RGB to RGB JPEG"},
        *[{"image": key, "reason": f"downscaled: {sources[key][0]}x{sources[key][1]} to {size[0]}x{size[1]}"}
          for key, size in (("tall.png", tall), ("wide.jpg", wide)) if size != sources[key]],
    ]
    records = read_records(result, report)
    for key, (width, height) in stored.items():
        assert records[key]["image"].shape == (height, width, 3), key
        np.testing.assert_allclose(records[key]["groundtruth_boxes"], [[0.5, 0.25, 1.0, 0.75]])
    assert records["small.jpg"]["encoded"] == files["small.jpg"]
    assert records["wide.jpg"]["encoded"] == files["wide.jpg"] or wide != (2000, 500)
    # what train's decision to keep the decoded images in memory counts (trainer/input_pipeline.decodes_once)
    assert sum(report["stored_pixels"].values()) == sum(width * height for width, height in stored.values())


def test_max_side_stores_the_longer_side_at_most_that(bucket, result):
    make_bucket(bucket, {"wide.jpg": jpeg((2000, 500)), "tall.jpg": jpeg((300, 1500))},
                {"wide.jpg": [], "tall.jpg": []})

    report = prepare(bucket, result, max_side=1000)

    assert report["options"]["stored_size"] == {"short": 1000, "long": 1000}
    assert [issue["reason"] for issue in report["repaired"]] == ["downscaled: 300x1500 to 200x1000",
                                                                 "downscaled: 2000x500 to 1000x250"]


# --- bad files and keys ---------------------------------------------------------------------------

def test_broken_missing_and_escaping_files_are_skipped_with_reasons(bucket, result, tmp_path):
    (tmp_path / "outside.jpg").write_bytes(jpeg())  # a real image, outside DATA_DIR
    (bucket / "folder.jpg").mkdir()
    whole = noisy_jpeg()
    files = {"good.jpg": jpeg(), "truncated.jpg": whole[: len(whole) * 2 // 3], "empty.jpg": b"",
             "notes.jpg": b"these are not pixels", "cut-short.jpg": whole[:-2]}
    keys = [*files, "missing.jpg", "../outside.jpg", "/etc/passwd", "folder.jpg"]
    make_bucket(bucket, files, {key: [box(0.1, 0.1, 0.5, 0.5)] for key in keys})

    report = prepare(bucket, result)

    unreadable = "unreadable image: not an image format Pillow can read"
    unsafe = "unsafe key: absolute or outside DATA_DIR, not opened"
    assert report["skipped"] == [
        {"image": "../outside.jpg", "reason": unsafe},
        {"image": "/etc/passwd", "reason": unsafe},
        {"image": "cut-short.jpg", "reason": "unreadable image: image file is truncated (225 bytes not processed)"},
        {"image": "empty.jpg", "reason": unreadable},
        {"image": "folder.jpg", "reason": "unreadable file: Is a directory"},
        {"image": "missing.jpg", "reason": "missing file: not found in DATA_DIR"},
        {"image": "notes.jpg", "reason": unreadable},
        {"image": "truncated.jpg", "reason": "unreadable image: image file is truncated (17 bytes not processed)"},
    ]
    assert list(read_records(result, report)) == ["good.jpg"]
    assert report["splits"]["train"]["images"] == 1


def test_box_repairs_negatives_and_unlabelled_boxes_in_the_records(bucket, result):
    files = jpegs(["repaired.jpg", "negative.jpg", "empty.jpg", "unlabelled.jpg"])
    make_bucket(bucket, files, {
        "repaired.jpg": [box(-0.1, 0.2, 0.5, 1.4), box(0.9, 0.8, 0.6, 0.3, "dog"), box(0.3, 0.3, 0.3, 0.6)],
        "negative.jpg": [{"label": "dog"}],  # image-level label only
        "empty.jpg": [],
        "unlabelled.jpg": [box(0.1, 0.1, 0.5, 0.5), {"x": 0.6, "y": 0.6, "x2": 0.9, "y2": 0.9}],
    })

    report = prepare(bucket, result, val_fraction=0)

    assert report["skipped"] == [{"image": "unlabelled.jpg", "reason": "unlabelled box: box 2 has no label"}]
    assert report["repaired"] == [
        {"image": "repaired.jpg", "reason": "box clipped: box 1 reached outside the image"},
        {"image": "repaired.jpg", "reason": "box reordered: box 2 had its corners swapped"},
        {"image": "repaired.jpg", "reason": "box dropped: box 3 has zero area"},
    ]
    assert report["labels"] == ["cat", "dog"]
    assert report["splits"]["train"] == {"images": 3, "boxes": 2, "negatives": 2, "per_class": {"cat": 1, "dog": 1}}
    assert report["stored_pixels"] == {"train": 3 * 64 * 48, "val": 0}
    records = read_records(result, report)
    np.testing.assert_allclose(records["repaired.jpg"]["groundtruth_boxes"],
                               [[0.2, 0.0, 1.0, 0.5], [0.3, 0.6, 0.8, 0.9]])
    assert list(records["repaired.jpg"]["groundtruth_classes"]) == [1, 2]
    assert records["repaired.jpg"]["text"] == ["cat", "dog"]
    assert list(records["repaired.jpg"]["groundtruth_is_crowd"]) == [False, False]
    for key in ("negative.jpg", "empty.jpg"):
        assert records[key]["groundtruth_boxes"].shape == (0, 4)


# --- labels ---------------------------------------------------------------------------------------

def test_nasty_labels_round_trip_through_label_map_labels_json_and_records(bucket, result):
    nasty = ['say "hi"', "a/b", "back\\slash", "it's", "café", "日本", "tab\there"]
    listed = ["never used", *nasty]
    files = jpegs(f"{index}.jpg" for index in range(len(nasty) + 1))
    annotations = {f"{index}.jpg": [box(0.1, 0.1, 0.5, 0.5, label)] for index, label in enumerate(nasty)}
    annotations[f"{len(nasty)}.jpg"] = [box(0.1, 0.1, 0.5, 0.5, "unlisted")]
    make_bucket(bucket, files, annotations, labels=listed)

    report = prepare(bucket, result, val_fraction=0)

    assert report["labels"] == [*nasty, "unlisted"]
    assert json.loads((result / "data" / "labels.json").read_text(encoding="utf-8")) == report["labels"]
    label_map_text = (result / "data" / "label_map.pbtxt").read_text(encoding="ascii")
    label_map = text_format.Parse(label_map_text, label_map_class()())
    assert [(item.id, item.name) for item in label_map.item] == list(enumerate(report["labels"], start=1))
    records = read_records(result, report)
    for index, label in enumerate(nasty):
        assert records[f"{index}.jpg"]["text"] == [label]
        assert list(records[f"{index}.jpg"]["groundtruth_classes"]) == [index + 1]
    assert {"code": "unlisted_label", "message": "label 'unlisted' is used but not listed in 'labels'",
            "numbers": {"label": "unlisted"}} in report["warnings"]


def test_label_ids_are_stable_and_only_used_labels_get_one(bucket, result, tmp_path):
    files = {"a.jpg": jpeg(), "b.jpg": jpeg(colour=BLUE)}
    make_bucket(bucket, files, {"a.jpg": [box(0, 0, 1, 1, "zebra")], "b.jpg": [box(0, 0, 1, 1, "ant")]},
                labels=["unused", "zebra", "ant"])
    assert prepare(bucket, result)["labels"] == ["zebra", "ant"]
    assert prepare(bucket, tmp_path / "again")["labels"] == ["zebra", "ant"]


def test_more_than_100_boxes_are_all_kept_and_the_maximum_is_reported(bucket, result):
    crowd = [box(col / 15, row / 10, (col + 1) / 15, (row + 1) / 10) for row in range(10) for col in range(15)]
    make_bucket(bucket, {"crowd.jpg": jpeg((300, 200)), "one.jpg": jpeg()},
                {"crowd.jpg": crowd, "one.jpg": [box(0, 0, 1, 1)]})

    report = prepare(bucket, result)

    assert report["max_boxes_per_image"] == 150
    record = read_records(result, report)["crowd.jpg"]
    assert record["groundtruth_boxes"].shape == (150, 4)
    assert record["groundtruth_classes"].tolist() == [1] * 150
    np.testing.assert_allclose(record["groundtruth_area"], [20 * 20] * 150, rtol=1e-4)


def test_too_few_images_of_a_class_warns_with_its_name_and_count(bucket, result):
    files = jpegs(f"{index:02d}.jpg" for index in range(13))
    annotations = {key: [box(0, 0, 1, 1, "common")] for key in files}
    for key in list(files)[:3]:
        annotations[key].append(box(0.1, 0.1, 0.2, 0.2, "rare"))
    make_bucket(bucket, files, annotations)

    report = prepare(bucket, result, val_fraction=0)

    assert [w for w in report["warnings"] if w["code"] == "few_images"] == [{
        "code": "few_images",
        "message": "class 'rare' has only 3 training images; a detector needs at least 10, and does well with 50 "
                   "or more",
        "numbers": {"label": "rare", "images": 3, "minimum": 10}}]


# --- split ----------------------------------------------------------------------------------------

def test_records_are_the_same_bytes_from_every_process(bucket, tmp_path):
    """Each Example's features are serialized in key order: unsorted, protobuf's map order changed from one process
    to the next, so the same bucket gave other shard bytes in every run."""
    files = {f"img{index:02d}.jpg": noisy_jpeg(seed=index) for index in range(6)}
    make_bucket(bucket, files, {key: [box(0.1, 0.1, 0.9, 0.9)] for key in files})
    for name in ("first", "second", "third"):
        subprocess.run([sys.executable, "-m", "trainer", "prepare", "--data-dir", str(bucket), "--result-dir",
                        str(tmp_path / name)], check=True, capture_output=True)
    shards = sorted(path.name for path in (tmp_path / "first" / "data").glob("*.tfrecord"))
    assert len(shards) == 2
    for name in shards:
        assert len({(tmp_path / run / "data" / name).read_bytes() for run in ("first", "second", "third")}) == 1, name


def test_split_is_deterministic_by_seed_and_keeps_identical_bytes_together(bucket, tmp_path):
    files = {f"img{index:02d}.jpg": noisy_jpeg(seed=index) for index in range(20)}
    files.update({f"copy-of-{index:02d}.jpg": files[f"img{index:02d}.jpg"] for index in range(0, 20, 3)})
    make_bucket(bucket, files, {key: [box(0.1, 0.1, 0.9, 0.9)] for key in files})

    first = prepare(bucket, tmp_path / "first")
    second = prepare(bucket, tmp_path / "second")
    other_seed = prepare(bucket, tmp_path / "other", seed=7)

    assert first == second
    for name in first["files"]["train"] + first["files"]["val"]:
        assert (tmp_path / "first/data" / name).read_bytes() == (tmp_path / "second/data" / name).read_bytes()
    assert (first["splits"]["train"]["images"], first["splits"]["val"]["images"]) == (25, 2)  # by hash, ~0.2
    assert {"code": "duplicate_images", "numbers": {"copies": 7, "sets": 7},
            "message": "7 images byte-identical to another image (7 sets of copies); each set is kept in one split"
            } in first["warnings"]
    splits = {}
    for name, report in (("first", first), ("other", other_seed)):
        records = read_records(tmp_path / name, report)
        splits[name] = {key: record["split"] for key, record in records.items()}
        for index in range(0, 20, 3):
            assert splits[name][f"img{index:02d}.jpg"] == splits[name][f"copy-of-{index:02d}.jpg"]
        val_bytes = {record["encoded"] for record in records.values() if record["split"] == "val"}
        train_bytes = {record["encoded"] for record in records.values() if record["split"] == "train"}
        assert not val_bytes & train_bytes
    assert splits["first"] != splits["other"]


@pytest.mark.parametrize("count, val_fraction, train, val", [(1, 0.2, 1, 0), (2, 0.2, 1, 1), (3, 0.9, 1, 2),
                                                             (5, 0.0, 5, 0)])
def test_tiny_datasets_get_at_least_one_val_and_one_train_image(bucket, result, count, val_fraction, train, val):
    files = {f"{index}.jpg": noisy_jpeg(seed=index) for index in range(count)}
    make_bucket(bucket, files, {key: [box(0.1, 0.1, 0.9, 0.9)] for key in files})

    report = prepare(bucket, result, val_fraction=val_fraction)

    assert (report["splits"]["train"]["images"], report["splits"]["val"]["images"]) == (train, val)
    assert report["files"] == {"train": ["train-00000-of-00001.tfrecord"],
                               "val": ["val-00000-of-00001.tfrecord"] if val else []}
    assert ("no_validation" in [w["code"] for w in report["warnings"]]) == (val == 0)


def test_num_shards_deals_records_round_robin(bucket, result):
    files = {f"{index:02d}.jpg": noisy_jpeg(seed=index) for index in range(10)}
    make_bucket(bucket, files, {key: [box(0.1, 0.1, 0.9, 0.9)] for key in files})

    report = prepare(bucket, result, num_shards=3)

    # 9 train images over 3 shards; the one val image gets one shard, not 3 (never more shards than records)
    assert report["files"] == {"train": [f"train-0000{i}-of-00003.tfrecord" for i in range(3)],
                               "val": ["val-00000-of-00001.tfrecord"]}
    per_file = {}
    for record in read_records(result, report).values():
        per_file[record["file"]] = per_file.get(record["file"], 0) + 1
    assert per_file == {"train-00000-of-00003.tfrecord": 3, "train-00001-of-00003.tfrecord": 3,
                        "train-00002-of-00003.tfrecord": 3, "val-00000-of-00001.tfrecord": 1}
    source_ids = {key: record["source_id"] for key, record in read_records(result, report).items()}
    assert source_ids == {key: str(number).encode() for number, key in enumerate(sorted(files), start=1)}


# --- reruns, atomic output, errors --------------------------------------------------------------

def output_state(result_dir):
    paths = [result_dir / "data", *(result_dir / "data").iterdir()]
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def test_rerun_on_unchanged_input_skips_and_changed_input_or_options_redo(bucket, result, capsys):
    make_bucket(bucket, {"a.jpg": jpeg(), "b.jpg": jpeg(colour=BLUE)}, {"a.jpg": [box(0, 0, 1, 1)], "b.jpg": []})
    first = prepare(bucket, result)
    written = output_state(result)
    capsys.readouterr()

    assert prepare(bucket, result) == first
    assert output_state(result) == written
    assert f"prepare: {result / 'data'} is up to date (fingerprint {first['fingerprint'][:12]}); nothing to do" \
        in capsys.readouterr().err

    assert prepare(bucket, result, seed=1)["fingerprint"] != first["fingerprint"]
    rewritten = output_state(result)
    assert rewritten["data"] != written["data"]
    os.utime(bucket / "a.jpg", ns=(1, 1))
    prepare(bucket, result, seed=1)
    assert output_state(result)["data"] != rewritten["data"]
    assert sorted(p.name for p in result.iterdir()) == ["data"]


def test_a_killed_run_leaves_nothing_that_looks_complete_and_the_next_run_cleans_up(bucket, result):
    """What a run killed while writing leaves in data/: partial shards, stale shards and labels, no marker."""
    make_bucket(bucket, {"a.jpg": jpeg()}, {"a.jpg": [box(0, 0, 1, 1)]})
    (result / "data").mkdir(parents=True)
    for name in (".train-00000.partial", ".report.json.partial", "train-00003-of-00004.tfrecord", "labels.json"):
        (result / "data" / name).write_bytes(b"half")

    report = prepare(bucket, result)

    assert sorted(p.name for p in result.iterdir()) == ["data"]
    assert sorted(p.name for p in (result / "data").iterdir()) == [
        "label_map.pbtxt", "labels.json", "report.json", "train-00000-of-00001.tfrecord"]
    assert list(read_records(result, report)) == ["a.jpg"]


@pytest.mark.parametrize("annotations_text, message", [
    ("{oops", "_annotations.json is not valid JSON: Expecting property name enclosed in double quotes: line 1 "
              "column 2 (char 1)"),
    ('{"version": "0.9", "annotations": {}}', "_annotations.json has version '0.9'; only Cloud Annotations "
                                              "version '1.0' is supported"),
    ('{"version": "1.0", "labels": ["a"]}', "_annotations.json has no 'annotations' object"),
    ('{"version": "1.0", "type": "classification", "labels": ["a"], "annotations": {"a.jpg": [{"label": "a"}, '
     '{"label": "b"}]}}', "no usable image in {bucket}: all 1 annotated images were skipped"),
    ('{"version": "1.0", "annotations": {"gone.jpg": [], "../x.jpg": []}}',
     "no usable image in {bucket}: all 2 annotated images were skipped"),
    ('{"version": "1.0", "annotations": {}}', "_annotations.json in {bucket} annotates no images"),
])
def test_unusable_input_is_a_one_line_error_and_writes_nothing(bucket, result, annotations_text, message):
    (bucket / "_annotations.json").write_text(annotations_text)
    with pytest.raises(UserError) as error:
        prepare(bucket, result)
    assert str(error.value) == message.format(bucket=bucket)
    assert not result.exists() or list(result.iterdir()) == []


def test_options_out_of_range_and_a_bucket_without_annotations_are_user_errors(bucket, result):
    with pytest.raises(UserError, match=r"^no _annotations.json in "):
        prepare(bucket, result)
    make_bucket(bucket, {"a.jpg": jpeg()}, {"a.jpg": []})
    for options, message in (({"val_fraction": 1.0}, "--val-fraction must be in [0, 1), not 1.0"),
                             ({"max_side": 8}, "--max-side must be at least 32 pixels, not 8"),
                             ({"num_shards": 0}, "--num-shards must be at least 1, not 0")):
        with pytest.raises(UserError) as error:
            prepare(bucket, result, **options)
        assert str(error.value) == message
    assert not result.exists()


def test_cli_prints_one_error_line_and_exits_1(bucket, result):
    (bucket / "_annotations.json").write_text("[1, 2")
    run = subprocess.run([sys.executable, "-m", "trainer", "prepare", "--data-dir", str(bucket),
                          "--result-dir", str(result)], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr == ("error: _annotations.json is not valid JSON: Expecting ',' delimiter: "
                          "line 1 column 6 (char 5)\n")
    assert [path.name for path in result.iterdir()] == ["logs"]  # nothing but the stage's log


def test_cli_writes_the_outputs(bucket, result):
    make_bucket(bucket, {"a.jpg": jpeg(), "b.jpg": jpeg(colour=BLUE)}, {"a.jpg": [box(0, 0, 1, 1)], "b.jpg": []})
    run = subprocess.run([sys.executable, "-m", "trainer", "prepare", "--data-dir", str(bucket), "--result-dir",
                          str(result), "--val-fraction", "0.5", "--seed", "3", "--max-side", "512",
                          "--num-shards", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads((result / "data" / "report.json").read_text())
    assert report["options"] == {"val_fraction": 0.5, "seed": 3, "max_side": 512, "num_shards": 2,
                                 "model": "retinanet_spinenet49_mobile", "stored_size": {"short": 512, "long": 512}}
    assert (f"prepare: wrote 1 train and 1 val image (1 class) to {result / 'data'}, images with shorter side "
            f"at most 512 px, longer side at most 512 px\n") in run.stderr


# --- the real bucket --------------------------------------------------------------------------------

def test_kangaroo_bucket(kangaroo_dir, result):
    """164 photos, 266 boxes: 00090.jpg is truncated; 00153.jpg (776x900) is the one whose shorter side is over the
    default model's 768 px (384 x its 2.0 scale jitter; 00061.jpg, 1038x576, is not); 00007.jpg and
    00033.jpg have the same bytes; 00103.jpg carries a malformed EXIF orientation (65537) that viewers ignore."""
    report = prepare(kangaroo_dir, result)

    assert report["labels"] == ["kangaroo"]
    assert report["skipped"] == [
        {"image": "00090.jpg", "reason": "unreadable image: image file is truncated (20 bytes not processed)"}]
    assert report["repaired"] == [{"image": "00153.jpg", "reason": "downscaled: 776x900 to 768x891"}]
    train, val = report["splits"]["train"], report["splits"]["val"]
    assert (train["images"] + val["images"], train["boxes"] + val["boxes"]) == (163, 263)
    assert (train["images"], val["images"]) == (129, 34)
    assert report["max_boxes_per_image"] == 8
    records = read_records(result, report)
    assert len(records) == 163 and "00090.jpg" not in records
    assert records["00007.jpg"]["split"] == records["00033.jpg"]["split"]
    assert records["00103.jpg"]["image"].shape == (321, 480, 3)
    assert records["00103.jpg"]["encoded"] == (kangaroo_dir / "00103.jpg").read_bytes()
    assert records["00153.jpg"]["image"].shape == (891, 768, 3)
    assert records["00061.jpg"]["encoded"] == (kangaroo_dir / "00061.jpg").read_bytes()


def test_kangaroo_stored_for_the_demo_model_downscales_every_photo(kangaroo_dir, result):
    """At the demo's 160 px every photo is re-encoded, 00103.jpg's malformed EXIF too (it failed the whole prepare)."""
    report = prepare(kangaroo_dir, result, model="demo")

    reasons = {}
    for issue in report["repaired"]:
        reasons.setdefault(issue["image"], []).append(issue["reason"])
    assert len(reasons) == 163 and reasons["00103.jpg"] == ["downscaled: 480x321 to 239x160", EXIF_DROPPED]
    assert sum(EXIF_DROPPED in issue for issue in reasons.values()) == 1
    records = read_records(result, report)
    assert len(records) == 163 and records["00103.jpg"]["image"].shape == (160, 239, 3)


# --- validation edge cases and dataset warnings ---------------------------------------------------------

def test_a_bucket_of_copies_of_one_image_is_refused_and_writes_nothing(bucket, result):
    make_bucket(bucket, {key: jpeg() for key in ("a.jpg", "b.jpg", "c.jpg")},
                {key: [box(0.1, 0.1, 0.5, 0.5)] for key in ("a.jpg", "b.jpg", "c.jpg")})
    with pytest.raises(UserError) as error:
        prepare(bucket, result)
    assert str(error.value) == (f"all 3 usable images in {bucket} are byte-identical copies of one image: a model "
                                "cannot learn or be evaluated on one picture; add different images")
    assert list(result.iterdir()) == []


def test_val_fraction_0_writes_no_val_records_and_warns_loudly(bucket, result, capsys):
    files = jpegs(f"{index:02d}.jpg" for index in range(12))
    make_bucket(bucket, files, {key: [box(0.1, 0.1, 0.6, 0.6)] for key in files})

    report = prepare(bucket, result, val_fraction=0)

    assert report["files"] == {"train": ["train-00000-of-00001.tfrecord"], "val": []}
    assert sorted(p.name for p in (result / "data").iterdir()) == [
        "label_map.pbtxt", "labels.json", "report.json", "train-00000-of-00001.tfrecord"]
    assert report["splits"]["val"] == {"images": 0, "boxes": 0, "negatives": 0, "per_class": {"cat": 0}}
    message = "NO VALIDATION SPLIT (--val-fraction 0): training runs without evaluation, and nothing measures the model"
    assert report["warnings"] == [{"code": "no_validation", "message": message,
                                   "numbers": {"val_fraction": 0, "images": 12}}]
    assert f"prepare: WARNING: {message}\n" in capsys.readouterr().err


def warnings_bucket(bucket):
    """12 images of 'common' (10 boxes each, two of them tiny), a copy of one, 2 images of 'rare': 160x120 px."""
    grid = [box(col / 10, row / 10, (col + 1) / 10, (row + 1) / 10, "common") for row in range(2) for col in range(5)]
    files = jpegs([f"c{index:02d}.jpg" for index in range(12)] + ["r0.jpg", "r1.jpg"], size=(160, 120))
    annotations = {f"c{index:02d}.jpg": list(grid) for index in range(12)}
    annotations["c01.jpg"][:2] = [box(0.5, 0.5, 0.55, 0.8, "common"),     # 6.4 px wide at the demo's 128 px
                                  box(0.6, 0.5, 0.605, 0.8, "common")]    # 0.5% of the image width
    files["c11-copy.jpg"], annotations["c11-copy.jpg"] = files["c11.jpg"], annotations["c11.jpg"]
    annotations.update({"r0.jpg": [box(0.2, 0.2, 0.6, 0.6, "rare")], "r1.jpg": [box(0.3, 0.3, 0.7, 0.7, "rare")]})
    return make_bucket(bucket, files, annotations)


WARNINGS_BUCKET_WARNINGS = [
    {"code": "few_images", "numbers": {"label": "rare", "images": 2, "minimum": 10},
     "message": "class 'rare' has only 2 training images; a detector needs at least 10, and does well with 50 or more"},
    {"code": "class_imbalance",
     "numbers": {"most": "common", "most_boxes": 130, "least": "rare", "least_boxes": 2, "ratio": 65.0,
                 "maximum_ratio": 50},
     "message": "class 'common' has 130 boxes and 'rare' only 2 (65x, more than 50x): the model will mostly ignore "
                "'rare'"},
    {"code": "small_boxes",
     "numbers": {"boxes": 2, "total": 132, "input_size": 128, "min_pixels": 8, "min_fraction": 0.01,
                 "examples": ["c01.jpg"]},
     "message": "2 of 132 boxes are under 8 px at the model's 128 px input or under 1% of the image side, too small "
                "to detect (e.g. c01.jpg)"},
    {"code": "duplicate_images", "numbers": {"copies": 1, "sets": 1},
     "message": "1 image byte-identical to another image (1 set of copies); each set is kept in one split"},
    {"code": "val_missing_class", "numbers": {"labels": ["rare"], "val_images": 2},
     "message": "the validation split has no box of 'rare': evaluation cannot score those classes"},
]


def test_dataset_warnings_carry_their_numbers_and_strict_fails_after_writing(bucket, result):
    warnings_bucket(bucket)

    report = prepare(bucket, result, model="demo")

    assert report["warnings"] == WARNINGS_BUCKET_WARNINGS
    assert (report["splits"]["train"]["images"], report["splits"]["val"]["images"]) == (13, 2)
    assert report["splits"]["val"]["per_class"] == {"common": 20, "rare": 0}
    assert report["input_size"] == 128
    with pytest.raises(UserError) as error:
        prepare(bucket, result, model="demo", strict=True)  # up to date: the warnings still count
    assert str(error.value) == f"--strict: 5 dataset warning(s), listed above and in {result / 'data/report.json'}"
    assert prepare(bucket, result)["input_size"] == 384  # the default model's input size


def test_a_classification_bucket_becomes_model_garden_classification_records_with_0_based_ids(bucket, result):
    from official.vision.dataloaders.classification_input import Decoder

    files = {**jpegs(f"cat{index}.jpg" for index in range(4)), **jpegs(f"dog{index}.jpg" for index in range(3)),
             "both.jpg": jpeg(), "none.jpg": jpeg()}
    annotations = {key: [{"label": key[:3]}] for key in files if key[:3] in ("cat", "dog")}
    annotations.update({"both.jpg": [{"label": "cat"}, {"label": "dog"}], "none.jpg": []})
    make_bucket(bucket, files, annotations, labels=["dog", "cat"])
    document = json.loads((bucket / "_annotations.json").read_text())
    (bucket / "_annotations.json").write_text(json.dumps({**document, "type": "classification"}))

    report = prepare(bucket, result, val_fraction=0, model="demo")

    assert (report["task"], report["labels"], report["options"]["model"]) == ("classification", ["dog", "cat"],
                                                                              "demo_classification")
    assert report["splits"]["train"] == {"images": 7, "per_class": {"dog": 3, "cat": 4}}
    assert [item["image"] for item in report["skipped"]] == ["both.jpg", "none.jpg"]
    label_map = text_format.Parse((result / "data" / "label_map.pbtxt").read_text(), label_map_class()())
    assert [(item.id, item.name) for item in label_map.item] == [(0, "dog"), (1, "cat")]
    decoder = Decoder()  # what Model Garden's image-classification input reads
    found = {}
    for name in report["files"]["train"]:
        for serialized in tf.data.TFRecordDataset(str(result / "data" / name)):
            feature = tf.train.Example.FromString(serialized.numpy()).features.feature
            decoded = decoder.decode(serialized)
            assert not any(key.startswith("image/object/") for key in feature)
            found[feature["image/filename"].bytes_list.value[0].decode()] = (
                int(decoded["image/class/label"]), feature["image/class/text"].bytes_list.value[0].decode(),
                tf.io.decode_jpeg(decoded["image/encoded"]).shape.as_list())
    assert found == {**{f"cat{i}.jpg": (1, "cat", [48, 64, 3]) for i in range(4)},
                     **{f"dog{i}.jpg": (0, "dog", [48, 64, 3]) for i in range(3)}}
    with pytest.raises(UserError, match="model 'retinanet_spinenet49_mobile' is a detection model, but this bucket "
                                        "is for classification"):
        prepare(bucket, result, model="retinanet_spinenet49_mobile")
