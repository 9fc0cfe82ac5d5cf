"""predict on an exported demo run: boxed copies, per-image errors, EXIF, and detections an annotation tool reads back."""
import io
import json

import pytest
from PIL import Image, ImageOps

from trainer.annotations import parse_annotations
from trainer.errors import UserError
from trainer.predict import predict


@pytest.fixture(scope="module")
def photos(exported_run, tmp_path_factory):
    """Validation images as files: one upright, the same pixels stored sideways with an EXIF orientation tag
    (PNG, lossless, so both must give identical detections), another one, and a broken file."""
    import tensorflow as tf

    result_dir, _ = exported_run
    folder = tmp_path_factory.mktemp("photos")
    records = sorted(str(p) for p in (result_dir / "data").glob("val-*.tfrecord"))
    raw = [tf.io.parse_single_example(r, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})["image/encoded"]
           .numpy() for r in tf.data.TFRecordDataset(records).take(2)]
    upright = Image.open(io.BytesIO(raw[0])).convert("RGB")
    upright.save(folder / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the pixels are stored turned 90 degrees counter-clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(folder / "sideways.png", exif=exif)
    (folder / "second.jpg").write_bytes(raw[1])
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def test_detections_json_draws_and_reports_broken_images(exported_run, photos, tmp_path, capsys):
    result_dir, _ = exported_run
    results = predict(result_dir, [photos], tmp_path, min_score=0.0)
    assert json.loads((tmp_path / "detections.json").read_text()) == results
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in results}
    assert set(by_name) == {"broken.jpg", "second.jpg", "sideways.png", "upright.png"}
    assert "cannot read image" in by_name["broken.jpg"]["error"]
    assert "broken.jpg" in capsys.readouterr().err
    labels = json.loads((result_dir / "data" / "labels.json").read_text())
    for name in ("second.jpg", "sideways.png", "upright.png"):
        detections = by_name[name]["detections"]
        assert detections, name
        for d in detections:
            assert d["label"] in labels and 0 <= d["x"] < d["x2"] <= 1 and 0 <= d["y"] < d["y2"] <= 1
        upright = ImageOps.exif_transpose(Image.open(photos / name))
        assert Image.open(tmp_path / (name.rsplit(".", 1)[0] + ".jpg")).size == upright.size


def test_exif_orientation_is_applied_before_inference(exported_run, photos, tmp_path):
    result_dir, _ = exported_run
    upright, sideways = predict(result_dir, [photos / "upright.png", photos / "sideways.png"], tmp_path, min_score=0.0)
    assert upright["detections"] and sideways["detections"] == upright["detections"]


def test_detections_round_trip_through_the_annotation_reader(exported_run, photos, tmp_path):
    result_dir, _ = exported_run
    results = predict(result_dir / "model_android" / "model.tflite", [photos / "upright.png"], tmp_path, min_score=0.0)
    labels = json.loads((result_dir / "model_android" / "labels.json").read_text())
    annotations = {"version": "1.0", "type": "localization", "labels": labels,
                   "annotations": {"upright.png": results[0]["detections"]}}
    parsed = parse_annotations(json.dumps(annotations).encode())
    assert parsed.issues == []
    boxes = [(b.label, b.x, b.y, b.x2, b.y2) for b in parsed.images[0].boxes]
    assert boxes == [(d["label"], d["x"], d["y"], d["x2"], d["y2"]) for d in results[0]["detections"]]


def test_min_score_filters_and_a_wrong_model_path_is_a_user_error(exported_run, photos, tmp_path):
    result_dir, _ = exported_run
    saved_model = result_dir / "model_export" / "saved_model"
    assert predict(saved_model, [photos / "upright.png"], tmp_path, min_score=1.01)[0]["detections"] == []
    with pytest.raises(UserError, match="not a SavedModel"):
        predict(photos, [photos / "upright.png"], tmp_path)
