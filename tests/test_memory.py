"""Memory flat with the bucket: the streamed annotations parser, the report's records, the export's split.
And phone photos (EXIF orientations 3, 6, 8) through prepare: upright records, boxes as annotated."""
import io
import json
import struct
import tracemalloc

import numpy as np
import pytest
from PIL import Image, ImageDraw

from trainer.annotations import parse_annotations, read_annotations
from trainer.images import EXIF_ORIENTATION
from trainer.prepare import prepare
from trainer.records import _EXAMPLE
from trainer.sample import make_sample_bucket

GREY, RED, BLUE = (128, 128, 128), (220, 20, 20), (20, 40, 220)


def annotations_file(path, megabytes):
    """A localization _annotations.json of about MEGABYTES MB whose parse holds little: each image has one box
    and ten image-level labels carrying a 1 kB note (a field the parser ignores)."""
    entries = [{"label": "cat", "note": "n" * 1000}] * 10 + [{"x": 0.1, "y": 0.1, "x2": 0.5, "y2": 0.5, "label": "cat"}]
    text = json.dumps(entries)
    images = megabytes * 10**6 // len(text)
    with open(path, "w") as file:
        file.write('{"version": "1.0", "type": "localization", "labels": ["cat"], "annotations": {')
        file.write(",".join(f'"img/{index:06d}.jpg": {text}' for index in range(images)))
        file.write("}}")
    return images


def traced_peak(function):
    """Peak Python allocation (MiB) while FUNCTION runs, and its result."""
    tracemalloc.start()
    try:
        result = function()
        return tracemalloc.get_traced_memory()[1] / 2**20, result
    finally:
        tracemalloc.stop()


def test_the_parser_peak_stays_flat_at_1x_and_2x_a_20_mb_file(tmp_path):
    """json.loads held the whole document (~200 MiB for 20 MB); the stream holds one image's entries."""
    peaks = {}
    for scale in (1, 2):
        path = tmp_path / f"{scale}.json"
        images = annotations_file(path, 20 * scale)
        peaks[scale], (parsed, _) = traced_peak(lambda: read_annotations(path))
        assert len(parsed.images) == images and parsed.images[0].boxes[0].label == "cat"
    assert peaks[1] < 6 and peaks[2] < 6, peaks
    assert peaks[2] < peaks[1] * 1.5 + 1, peaks
    whole, _ = traced_peak(lambda: parse_annotations((tmp_path / "1.json").read_bytes()))
    assert whole > 10 * peaks[1]  # what it replaced


def tfrecords(result_dir):
    """Every record's Example (protobuf, no TensorFlow), by filename."""
    examples = {}
    for path in sorted((result_dir / "data").glob("*.tfrecord")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            example = _EXAMPLE.FromString(data[offset + 12:offset + 12 + length])
            examples[example.features.feature["image/filename"].bytes_list.value[0].decode()] = example
            offset += 12 + length + 4
    return examples


def test_phone_photos_with_exif_orientation_3_6_8_are_stored_upright_with_their_boxes(tmp_path):
    """A phone stores the sensor's pixels and says how to turn them; the annotator saw them turned."""
    upright = Image.new("RGB", (640, 480), GREY)
    draw = ImageDraw.Draw(upright)
    draw.rectangle((64, 48, 191, 191), fill=RED)     # box x 0.1-0.3, y 0.1-0.4
    draw.rectangle((384, 288, 575, 431), fill=BLUE)  # box x 0.6-0.9, y 0.6-0.9
    stored_as = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    for orientation, transpose in stored_as.items():
        exif = Image.Exif()
        exif.update({EXIF_ORIENTATION: orientation, 0x010F: "Phone maker", 0x0110: "Phone 12", 0x0132: "2026:12:01 12:00:00"})
        upright.transpose(transpose).save(bucket / f"IMG_{orientation}.jpg", "JPEG", quality=92, exif=exif)
    boxes = [{"x": 0.1, "y": 0.1, "x2": 0.3, "y2": 0.4, "label": "red"},
             {"x": 0.6, "y": 0.6, "x2": 0.9, "y2": 0.9, "label": "blue"}]
    (bucket / "_annotations.json").write_text(json.dumps({
        "version": "1.0", "type": "localization", "labels": ["red", "blue"],
        "annotations": {f"IMG_{orientation}.jpg": boxes for orientation in stored_as}}))

    report = prepare(bucket, tmp_path / "result", max_side=320)

    assert report["repaired"] == [{"image": f"IMG_{o}.jpg", "reason": reason} for o in stored_as
                                  for reason in (f"rotated: EXIF orientation {o}", "downscaled: 640x480 to 320x240")]
    records = tfrecords(tmp_path / "result")
    assert sorted(records) == [f"IMG_{o}.jpg" for o in stored_as]
    for name, example in records.items():
        feature = example.features.feature
        image = Image.open(io.BytesIO(feature["image/encoded"].bytes_list.value[0]))
        assert image.size == (320, 240) and image.getexif().get(EXIF_ORIENTATION) in (None, 1), name
        assert (feature["image/width"].int64_list.value[0], feature["image/height"].int64_list.value[0]) == (320, 240)
        pixels = np.asarray(image.convert("RGB")).astype(int)
        for colour, (x, y) in ((RED, (64, 60)), (BLUE, (240, 180)), (GREY, (240, 60)), (GREY, (64, 180))):
            assert np.abs(pixels[y, x] - colour).max() < 40, (name, colour)
        assert [round(v, 6) for v in feature["image/object/bbox/xmin"].float_list.value] == [0.1, 0.6]
        assert [round(v, 6) for v in feature["image/object/bbox/ymax"].float_list.value] == [0.4, 0.9]
        assert [t.decode() for t in feature["image/object/class/text"].bytes_list.value] == ["red", "blue"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A prepared sample bucket: data/ as train's evaluation, the report and the export read it."""
    root = tmp_path_factory.mktemp("prepared")
    make_sample_bucket(root / "bucket", 40)
    prepare(root / "bucket", root / "run", model="demo")
    return root / "run"


def test_the_report_holds_only_the_jpegs_it_draws(prepared):
    from trainer.report import write_report
    from trainer.report.records import TILE, add_jpegs, read_records

    kept = read_records(prepared, "train", lambda index, _: index < 3)
    assert len(kept) == json.loads((prepared / "data" / "report.json").read_text())["splits"]["train"]["images"]
    assert [record["jpeg"] is not None for record in kept] == [True] * 3 + [False] * (len(kept) - 3)
    assert Image.open(io.BytesIO(kept[0]["jpeg"])).size == (kept[0]["width"], kept[0]["height"])
    records = {record["id"]: record for record in read_records(prepared, "val")}
    add_jpegs(prepared, records, {min(records)})
    assert [i for i, record in records.items() if record["jpeg"] is not None] == [min(records)]
    page = write_report(prepared).read_text()  # the dataset section draws from these records
    assert Image.open(prepared / "report" / "dataset_samples.png").size == (4 * TILE, 3 * TILE)
    assert 'id="dataset-counts"' in page


def test_the_export_evaluation_decodes_one_image_at_a_time_with_the_same_ground_truth(prepared):
    from trainer.export.common import decoded
    from trainer.export.evaluate import load_split

    images, truth = load_split(prepared, "val")
    assert not isinstance(images, list) and len(images) == len(truth["images"]) > 2
    peak, arrays = traced_peak(lambda: [image.shape for image in images])  # one pass, nothing kept
    largest = max(image["width"] * image["height"] * 3 for image in truth["images"]) / 2**20
    assert peak < 3 * largest + 1, (peak, largest)
    again = list(images)  # a second pass (the next format) decodes the same pixels
    assert arrays == [image.shape for image in again]
    assert [(image["height"], image["width"], 3) for image in truth["images"]] == arrays
    examples = tfrecords(prepared)
    for array, image in zip(again, truth["images"]):
        encoded = examples[image["file_name"]].features.feature["image/encoded"].bytes_list.value[0]
        np.testing.assert_array_equal(array, decoded(encoded))
