"""parse_annotations: whole-file errors, per-image skips and box repairs, without TensorFlow."""
import json
import subprocess
import sys

import pytest

from trainer.annotations import REPAIRED, SKIPPED, Box, ImageAnnotation, is_safe_key, parse_annotations
from trainer.errors import UserError


def document(annotations, labels=("cat", "dog"), **extra):
    return json.dumps({"version": "1.0", "type": "localization", "labels": list(labels),
                       "annotations": annotations, **extra}).encode()


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "_annotations.json is not valid JSON: Expecting property name enclosed in double quotes: "
                   "line 1 column 2 (char 1)"),
    (b"[]", "_annotations.json is not a JSON object"),
    (json.dumps({"version": "2.0", "annotations": {}}).encode(),
     "_annotations.json has version '2.0'; only Cloud Annotations version '1.0' is supported"),
    (json.dumps({"annotations": {}}).encode(),
     "_annotations.json has version None; only Cloud Annotations version '1.0' is supported"),
    (json.dumps({"version": "1.0", "labels": []}).encode(), "_annotations.json has no 'annotations' object"),
    (json.dumps({"version": "1.0", "type": "segmentation", "annotations": {}}).encode(),
     "_annotations.json has type 'segmentation'; expected 'localization' or 'classification'"),
    (b'{"a": "\x80"}', "_annotations.json is not valid JSON: 'utf-8' codec can't decode byte 0x80 in position 7: "
                       "invalid start byte"),
])
def test_whole_file_errors_are_one_line_user_errors(raw, message):
    with pytest.raises(UserError) as error:
        parse_annotations(raw)
    assert str(error.value) == message
    assert "\n" not in str(error.value)


def test_a_classification_bucket_gives_one_whole_image_label_per_image_and_skips_the_rest():
    parsed = parse_annotations(json.dumps({"version": "1.0", "type": "classification", "labels": ["cat", "dog"],
                                           "annotations": {
        "cat.jpg": [{"label": "cat"}],
        "twice.jpg": [{"label": "dog"}, {"label": " dog "}],                  # one label, said twice
        "boxed.jpg": [{"label": "cat", "x": 0.1, "y": 0.1, "x2": 0.2, "y2": 0.2}],  # coordinates ignored
        "both.jpg": [{"label": "cat"}, {"label": "dog"}],
        "none.jpg": [],
        "blank.jpg": [{"label": "  "}],
        "../out.jpg": [{"label": "cat"}],
        "odd.jpg": ["cat"],
    }}).encode())
    assert parsed.task == "classification"
    assert parsed.images == [ImageAnnotation("cat.jpg", [Box(0.0, 0.0, 1.0, 1.0, "cat")]),
                             ImageAnnotation("twice.jpg", [Box(0.0, 0.0, 1.0, 1.0, "dog")]),
                             ImageAnnotation("boxed.jpg", [Box(0.0, 0.0, 1.0, 1.0, "cat")])]
    assert parsed.issues == [
        {"image": "both.jpg", "reason": "several labels (cat, dog): classification takes one label per image; "
                                        "multi-label images are skipped", "action": SKIPPED},
        {"image": "none.jpg", "reason": "no label: a classifier learns from one label per image", "action": SKIPPED},
        {"image": "blank.jpg", "reason": "no label: a classifier learns from one label per image", "action": SKIPPED},
        {"image": "../out.jpg", "reason": "unsafe key: absolute or outside DATA_DIR, not opened", "action": SKIPPED},
        {"image": "odd.jpg", "reason": "malformed annotation: an entry is not an object", "action": SKIPPED},
    ]
    assert parse_annotations(document({"a.jpg": []})).task == "detection"


def test_boxes_are_clipped_reordered_or_dropped_and_reported():
    parsed = parse_annotations(document({
        "a.jpg": [{"x": -0.2, "y": 0.1, "x2": 1.3, "y2": 0.5, "label": "cat"},     # clipped
                  {"x": 0.8, "y": 0.9, "x2": 0.2, "y2": 0.3, "label": "dog"},      # corners swapped
                  {"x": 0.5, "y": 0.2, "x2": 0.5, "y2": 0.6, "label": "cat"},      # zero width: dropped
                  {"x": 1.2, "y": 0.2, "x2": 1.5, "y2": 0.6, "label": "cat"}],     # outside: clipped to nothing
    }))
    assert parsed.images == [ImageAnnotation("a.jpg", [Box(0.0, 0.1, 1.0, 0.5, "cat"), Box(0.2, 0.3, 0.8, 0.9, "dog")])]
    assert parsed.issues == [
        {"image": "a.jpg", "reason": "box clipped: box 1 reached outside the image", "action": REPAIRED},
        {"image": "a.jpg", "reason": "box reordered: box 2 had its corners swapped", "action": REPAIRED},
        {"image": "a.jpg", "reason": "box dropped: box 3 has zero area", "action": REPAIRED},
        {"image": "a.jpg", "reason": "box clipped: box 4 reached outside the image", "action": REPAIRED},
        {"image": "a.jpg", "reason": "box dropped: box 4 has zero area", "action": REPAIRED},
    ]


def test_unlabelled_box_skips_the_image_but_image_level_label_keeps_it_as_negative():
    parsed = parse_annotations(document({
        "unlabelled.jpg": [{"x": 0.1, "y": 0.1, "x2": 0.5, "y2": 0.5, "label": "cat"},
                           {"x": 0.2, "y": 0.2, "x2": 0.4, "y2": 0.4}],
        "blank-label.jpg": [{"x": 0.2, "y": 0.2, "x2": 0.4, "y2": 0.4, "label": "  "}],
        "image-level.jpg": [{"label": "dog"}],
        "empty.jpg": [],
        "half-box.jpg": [{"x": 0.2, "y": 0.2, "label": "cat"}],
        "text-box.jpg": [{"x": "0.2", "y": 0.2, "x2": 0.4, "y2": 0.4, "label": "cat"}],
        "nan-box.jpg": [{"x": float("nan"), "y": 0.2, "x2": 0.4, "y2": 0.4, "label": "cat"}],
        "not-a-list.jpg": {"x": 0.2},
        "not-an-object.jpg": ["cat"],
        "nothing.jpg": [{"id": "x"}],
    }))
    assert parsed.images == [ImageAnnotation("image-level.jpg", []), ImageAnnotation("empty.jpg", [])]
    assert [(i["image"], i["reason"], i["action"]) for i in parsed.issues] == [
        ("unlabelled.jpg", "unlabelled box: box 2 has no label", SKIPPED),
        ("blank-label.jpg", "unlabelled box: box 1 has no label", SKIPPED),
        ("half-box.jpg", "malformed box: box 1 has missing or non-numeric coordinates", SKIPPED),
        ("text-box.jpg", "malformed box: box 1 has missing or non-numeric coordinates", SKIPPED),
        ("nan-box.jpg", "malformed box: box 1 has missing or non-numeric coordinates", SKIPPED),
        ("not-a-list.jpg", "malformed annotation: not a list of boxes", SKIPPED),
        ("not-an-object.jpg", "malformed annotation: entry 1 is not an object", SKIPPED),
        ("nothing.jpg", "malformed annotation: entry 1 has neither a box nor a label", SKIPPED),
    ]


@pytest.mark.parametrize("key, safe", [
    ("a.jpg", True), ("sub/dir/a.jpg", True), ("..a.jpg", True), ("a..jpg", True),
    ("../a.jpg", False), ("sub/../../a.jpg", False), ("/etc/passwd", False), ("\\\\server\\a.jpg", False),
    ("..\\a.jpg", False), ("C:\\a.jpg", False), ("c:a.jpg", False), ("", False), ("a\0.jpg", False),
])
def test_keys_outside_data_dir_are_unsafe(key, safe):
    assert is_safe_key(key) is safe


def test_unsafe_keys_are_skipped_before_any_file_is_touched():
    parsed = parse_annotations(document({"../x.jpg": [], "/etc/passwd": [], "ok/x.jpg": []}))
    assert [image.key for image in parsed.images] == ["ok/x.jpg"]
    assert parsed.issues == [
        {"image": key, "reason": "unsafe key: absolute or outside DATA_DIR, not opened", "action": SKIPPED}
        for key in ("../x.jpg", "/etc/passwd")]


def test_labels_are_normalised_deduplicated_and_kept_in_file_order():
    decomposed_e = "e\u0301"  # "é" as macOS writes it
    parsed = parse_annotations(document(
        {"a.jpg": [{"x": 0, "y": 0, "x2": 1, "y2": 1, "label": f" caf{decomposed_e} "}]},
        labels=["zebra", "caf\u00e9", f"caf{decomposed_e}", "", None, "ant"]))
    assert parsed.labels == ["zebra", "caf\u00e9", "ant"]
    assert parsed.images[0].boxes[0].label == "caf\u00e9"


def test_predict_style_output_with_extra_keys_round_trips():
    """Detections written by `predict` carry a score and may omit type; they must parse back unchanged."""
    raw = json.dumps({"version": "1.0", "labels": ["cat"], "annotations": {
        "p.jpg": [{"x": 0.25, "y": 0.5, "x2": 0.75, "y2": 1.0, "label": "cat", "score": 0.9, "id": "7"}]}}).encode()
    parsed = parse_annotations(raw)
    assert parsed.images == [ImageAnnotation("p.jpg", [Box(0.25, 0.5, 0.75, 1.0, "cat")])]
    assert parsed.issues == []


def test_annotations_and_prepare_do_not_import_tensorflow():
    code = "import sys, trainer.annotations, trainer.prepare, trainer.sample; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
