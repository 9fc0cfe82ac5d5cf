"""Parse and validate a Cloud Annotations `_annotations.json`, without TensorFlow.

The user's-machine `cloud` package checks a bucket with this before paying for
GPU hours, and `predict` writes its detections in the same format, so this
module must stay importable with only the standard library.

Both bucket types are read: `localization` (boxes: the detection task) and
`classification` (one label per image). A classification image is held as one
whole-image Box carrying its label, so the split, the counts and the warnings
treat both tasks alike. Whole-file problems (not JSON, wrong version, no
`annotations`, unknown type) raise `UserError`. Per-image problems never stop
the run: the image is skipped or its boxes repaired, and `AnnotationSet.issues`
says which and why, so the prepare stage can list them in its report.
"""
import json
import math
import unicodedata
from dataclasses import dataclass, field

from trainer.errors import UserError

SUPPORTED_VERSION = "1.0"
SKIPPED = "skipped"
REPAIRED = "repaired"
# Cloud Annotations' `type` -> the task the trainer trains.
TASKS = {"localization": "detection", "classification": "classification"}


@dataclass(frozen=True, slots=True)
class Box:
    """One object: normalised top-left (x, y) and bottom-right (x2, y2), 0 <= x < x2 <= 1."""
    x: float
    y: float
    x2: float
    y2: float
    label: str


@dataclass(slots=True)
class ImageAnnotation:
    """An image's key (its path relative to DATA_DIR) and its valid boxes (none: a negative example)."""
    key: str
    boxes: list


@dataclass
class AnnotationSet:
    """What `_annotations.json` says, after validation.

    `labels`: the file's `labels` list, normalised, duplicates removed, in file order.
    `task`: "detection" (type localization) or "classification".
    `images`: the images worth opening, in file order.
    `issues`: {"image", "reason", "action"} per problem, action SKIPPED or REPAIRED;
    a skipped image is absent from `images`.
    """
    labels: list
    task: str = "detection"
    images: list = field(default_factory=list)
    issues: list = field(default_factory=list)


def normalise_label(label):
    """A label as the trainer names it (NFC, no surrounding blanks), or None when there is none.

    NFC makes "é" typed on macOS and on Windows the same class.
    """
    if label is None:
        return None
    name = unicodedata.normalize("NFC", str(label)).strip()
    return name or None


def is_safe_key(key):
    """True when KEY names a file inside DATA_DIR: relative, no `..`, no drive, no NUL."""
    if not key or "\0" in key or key.startswith(("/", "\\")) or (len(key) > 1 and key[1] == ":"):
        return False
    parts = key.replace("\\", "/").split("/")
    return ".." not in parts


def parse_annotations(raw):
    """Validate the bytes of an `_annotations.json`; return an `AnnotationSet`.

    Raises `UserError` (one line) when the file as a whole is unusable.
    """
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"_annotations.json is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise UserError("_annotations.json is not a JSON object")
    version = document.get("version")
    if str(version) != SUPPORTED_VERSION:
        raise UserError(f"_annotations.json has version {version!r}; only Cloud Annotations version "
                        f"{SUPPORTED_VERSION!r} is supported")
    kind = document.get("type", "localization")
    if kind not in TASKS:
        raise UserError(f"_annotations.json has type {kind!r}; expected 'localization' or 'classification'")
    annotations = document.get("annotations")
    if not isinstance(annotations, dict):
        raise UserError("_annotations.json has no 'annotations' object")
    listed = document.get("labels") or []
    if not isinstance(listed, list):
        raise UserError("_annotations.json has a 'labels' entry that is not a list")

    result = AnnotationSet(labels=list(dict.fromkeys(filter(None, map(normalise_label, listed)))),
                           task=TASKS[kind])
    parse_entries = _parse_labels if kind == "classification" else _parse_entries
    for key, entries in annotations.items():
        boxes, problems, skip_reason = parse_entries(key, entries)
        if skip_reason:
            result.issues.append({"image": key, "reason": skip_reason, "action": SKIPPED})
            continue
        result.issues.extend({"image": key, "reason": reason, "action": REPAIRED} for reason in problems)
        result.images.append(ImageAnnotation(key, boxes))
    return result


def _parse_entries(key, entries):
    """(boxes, repairs, skip_reason) for one image's list of entries."""
    if not is_safe_key(key):
        return [], [], "unsafe key: absolute or outside DATA_DIR, not opened"
    if not isinstance(entries, list):
        return [], [], "malformed annotation: not a list of boxes"
    boxes, repairs = [], []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            return [], [], f"malformed annotation: entry {number} is not an object"
        label = normalise_label(entry.get("label"))
        corners = [entry.get(name) for name in ("x", "y", "x2", "y2")]
        if all(value is None for value in corners):
            if label is None:
                return [], [], f"malformed annotation: entry {number} has neither a box nor a label"
            continue  # an image-level label: says nothing about where objects are
        if not all(_is_number(value) for value in corners):
            return [], [], f"malformed box: box {number} has missing or non-numeric coordinates"
        if label is None:
            return [], [], f"unlabelled box: box {number} has no label"
        box, box_repairs = _repair_box(number, *map(float, corners), label)
        repairs.extend(box_repairs)
        if box:
            boxes.append(box)
    return boxes, repairs, None


def _parse_labels(key, entries):
    """([whole-image Box with the label], [], skip_reason) for one image of a classification bucket.

    One label per image (Model Garden's softmax classifier): an image with several
    distinct labels, or none, is skipped with the reason. Coordinates, if any, are ignored.
    """
    if not is_safe_key(key):
        return [], [], "unsafe key: absolute or outside DATA_DIR, not opened"
    if not isinstance(entries, list):
        return [], [], "malformed annotation: not a list of labels"
    if not all(isinstance(entry, dict) for entry in entries):
        return [], [], "malformed annotation: an entry is not an object"
    labels = list(dict.fromkeys(filter(None, (normalise_label(entry.get("label")) for entry in entries))))
    if not labels:
        return [], [], "no label: a classifier learns from one label per image"
    if len(labels) > 1:
        return [], [], (f"several labels ({', '.join(labels)}): classification takes one label per image; "
                        "multi-label images are skipped")
    return [Box(0.0, 0.0, 1.0, 1.0, labels[0])], [], None


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _repair_box(number, x, y, x2, y2, label):
    """(Box or None, repairs): clip to 0..1, put corners in order, drop a box with no area."""
    repairs = []
    if x2 < x or y2 < y:
        repairs.append(f"box reordered: box {number} had its corners swapped")
        x, x2 = sorted((x, x2))
        y, y2 = sorted((y, y2))
    clipped = [min(max(value, 0.0), 1.0) for value in (x, y, x2, y2)]
    if clipped != [x, y, x2, y2]:
        repairs.append(f"box clipped: box {number} reached outside the image")
    x, y, x2, y2 = clipped
    if x2 <= x or y2 <= y:
        repairs.append(f"box dropped: box {number} has zero area")
        return None, repairs
    return Box(x, y, x2, y2, label), repairs
