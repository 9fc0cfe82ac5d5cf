"""The sample bucket: deterministic, a valid Cloud Annotations bucket, and prepared without a skip."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from trainer.errors import UserError
from trainer.prepare import prepare
from trainer.sample import LABELS, make_sample_bucket


def file_bytes(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    make_sample_bucket(tmp_path / "a", num_images=8, seed=5)
    make_sample_bucket(tmp_path / "b", num_images=8, seed=5)
    make_sample_bucket(tmp_path / "c", num_images=8, seed=6)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert file_bytes(tmp_path / "a")["sample-0000.jpg"] != file_bytes(tmp_path / "c")["sample-0000.jpg"]
    with pytest.raises(UserError, match=r"^--images must be at least 1, not 0$"):
        make_sample_bucket(tmp_path / "d", num_images=0)


def test_sample_bucket_has_every_kind_of_image_the_demo_needs(sample_bucket):
    document = json.loads((sample_bucket / "_annotations.json").read_text())
    annotations = document["annotations"]
    assert (document["version"], document["type"], document["labels"]) == ("1.0", "localization", LABELS)
    assert len(annotations) == 96
    assert sorted(p.name for p in sample_bucket.iterdir()) == sorted([*annotations, "_annotations.json"])
    images = {key: Image.open(sample_bucket / key) for key in annotations}
    assert sum(image.format == "PNG" for image in images.values()) == 13
    assert {key for key, image in images.items() if image.getexif().get(0x0112)} == {"sample-0003.jpg"}
    assert images["sample-0003.jpg"].getexif()[0x0112] == 6
    assert sum(not boxes for boxes in annotations.values()) == 6
    for key, image in images.items():
        assert 240 <= min(image.size) and max(image.size) <= 640, key
    boxes = [entry for entries in annotations.values() for entry in entries]
    assert all(0 <= b["x"] < b["x2"] <= 1 and 0 <= b["y"] < b["y2"] <= 1 for b in boxes)
    per_class = {label: sum(b["label"] == label for b in boxes) for label in LABELS}
    assert min(per_class.values()) >= 50, per_class


def test_sample_bucket_prepares_cleanly_with_the_sideways_photo_upright(sample_bucket, tmp_path):
    report = prepare(sample_bucket, tmp_path / "result")

    assert report["skipped"] == []
    assert [r for r in report["repaired"] if not r["reason"].startswith("converted: PNG RGB")] == [
        {"image": "sample-0003.jpg", "reason": "rotated: EXIF orientation 6"}]
    assert report["warnings"] == []
    assert report["labels"] == LABELS
    assert report["splits"]["train"]["images"] + report["splits"]["val"]["images"] == 96
    # Boxes are annotated as a viewer shows the photo: upright, the middle of each box is a saturated object.
    upright = Image.open(sample_bucket / "sample-0003.jpg")
    upright = np.asarray(upright.transpose(Image.Transpose.ROTATE_270))
    entries = json.loads((sample_bucket / "_annotations.json").read_text())["annotations"]["sample-0003.jpg"]
    assert entries
    height, width = upright.shape[:2]
    for entry in entries:
        pixel = upright[int((entry["y"] + entry["y2"]) / 2 * height), int((entry["x"] + entry["x2"]) / 2 * width)]
        assert int(pixel.max()) - int(pixel.min()) > 80, (entry, pixel)


def test_cli_writes_a_bucket(tmp_path):
    run = subprocess.run([sys.executable, "-m", "trainer", "sample", str(tmp_path / "bucket"), "--images", "3"],
                         capture_output=True, text=True, check=True)
    document = json.loads((tmp_path / "bucket" / "_annotations.json").read_text())
    boxes = sum(len(entries) for entries in document["annotations"].values())
    assert run.stdout == f"sample: wrote 3 images with {boxes} boxes to {tmp_path / 'bucket'}\n"
    assert Image.open(io.BytesIO((tmp_path / "bucket" / "sample-0000.jpg").read_bytes())).format == "JPEG"


def test_classification_sample_labels_each_image_with_the_one_class_of_shape_it_shows(tmp_path):
    run = subprocess.run([sys.executable, "-m", "trainer", "sample", str(tmp_path / "bucket"), "--images", "6",
                          "--type", "classification"], capture_output=True, text=True, check=True)
    assert run.stdout == f"sample: wrote 6 labelled images to {tmp_path / 'bucket'}\n"
    document = json.loads((tmp_path / "bucket" / "_annotations.json").read_text())
    assert document["type"] == "classification" and document["labels"] == LABELS
    assert document["annotations"] == {f"sample-{i:04d}.{'png' if i == 6 else 'jpg'}": [{"label": LABELS[i % 3]}]
                                       for i in range(6)}
    report = prepare(tmp_path / "bucket", tmp_path / "result", model="demo")
    assert report["task"] == "classification" and report["skipped"] == []
    assert sum(split["images"] for split in report["splits"].values()) == 6
