"""Parse and validate a Cloud Annotations `_annotations.json`, without TensorFlow.

The user's-machine `cloud` package checks a bucket with this before paying for
GPU hours, and `predict` writes its detections in the same format, so this
module must stay importable with only the standard library. `read_annotations`
streams a file with ijson (and numpy) where they are installed, as in the job.

Both bucket types are read: `localization` (boxes: the detection task) and
`classification` (one label per image). A classification image is held as one
whole-image Box carrying its label, so the split, the counts and the warnings
treat both tasks alike. Whole-file problems (not JSON, wrong version, no
`annotations`, unknown type) raise `UserError`. Per-image problems never stop
the run: the image is skipped or its boxes repaired, and `AnnotationSet.issues`
says which and why, so the prepare stage can list them in its report.
"""
import codecs
import collections
import functools
import hashlib
import itertools
import json
import math
import operator
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import UserError

SUPPORTED_VERSION = "1.0"
SKIPPED = "skipped"
REPAIRED = "repaired"
# Cloud Annotations' `type` -> the task the trainer trains.
TASKS = {"localization": "detection", "classification": "classification"}
HEADER_KEYS = ("version", "type", "labels")
C_BACKENDS = ("yajl2_c", "yajl2_cffi", "yajl2")
MAX_DEPTH = 512               # Cloud Annotations files nest 4 deep; json.loads recurses out near 1,000
# A \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one (12 bytes of look-ahead kept between chunks).
_LONE_HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")
SURROGATE_LOOKAHEAD = 12
CHUNK = 1 << 16


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
    return sys.intern(name) if name else None  # one string per class, not one per box


def is_safe_key(key):
    """True when KEY names a file inside DATA_DIR: relative, no `..`, no drive, no NUL."""
    if not key or "\0" in key or key.startswith(("/", "\\")) or (len(key) > 1 and key[1] == ":"):
        return False
    parts = key.replace("\\", "/").split("/")
    return ".." not in parts


def parse_annotations(raw):
    """Validate the bytes (or text) of an `_annotations.json`; return an `AnnotationSet`.

    Raises `UserError` (one line) when the file as a whole is unusable.
    """
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"_annotations.json is not valid JSON: {err}") from None
    except RecursionError:  # json recurses once per level: a hostile file must not end in a traceback
        raise UserError(f"_annotations.json is not valid JSON: nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(document, dict):
        raise UserError("_annotations.json is not a JSON object")
    labels, kind = _checked_header(document)
    images, issues = _parsed_images(document["annotations"].items(), kind)
    return AnnotationSet(labels=labels, task=TASKS[kind], images=images, issues=issues)


def read_annotations(path):
    """(AnnotationSet, sha256 hex of the file) of the `_annotations.json` at PATH, streamed.

    `json.loads` of a 207 MB file peaked at 1.4 GiB. Here ijson's C parser reads the
    file twice in 64 KiB chunks: once for the header (and the hash), then the
    `annotations` object one image's entries at a time, so memory is what the result
    holds. Without ijson's C backend (the user's machine), or for a file the stream
    cannot reproduce exactly (NaN, overflowing numbers, a lone surrogate escape, a
    repeated image or `annotations` key, very deep nesting, anything but UTF-8 JSON),
    the whole file goes through `parse_annotations`: the same result, the same messages.
    """
    ijson = _streaming_ijson()
    if ijson is not None:
        try:
            with open(path, "rb") as file:
                first = _CheckedReader(file)
                labels, kind = _checked_header(_header(ijson, first))
            with open(path, "rb") as file:
                second = _CheckedReader(file)
                images, issues = _parsed_images(ijson.kvitems(second, "annotations", use_float=True), kind)
                collections.deque(iter(lambda: second.read(CHUNK), b""), maxlen=0)  # hash to the end
            if second.hexdigest() != first.hexdigest():
                raise _Fallback  # changed between the reads: one read of the whole file gives one version
            return AnnotationSet(labels=labels, task=TASKS[kind], images=images, issues=issues), first.hexdigest()
        except (_Fallback, ijson.JSONError, ValueError, ArithmeticError, RecursionError):
            pass
    raw = Path(path).read_bytes()
    return parse_annotations(raw), hashlib.sha256(raw).hexdigest()


def _checked_header(document):
    """(normalised labels, type) of a document whose `annotations` is checked to be an object; else UserError."""
    version = document.get("version")
    if str(version) != SUPPORTED_VERSION:
        raise UserError(f"_annotations.json has version {version!r}; only Cloud Annotations version "
                        f"{SUPPORTED_VERSION!r} is supported")
    kind = document.get("type", "localization")
    if not isinstance(kind, str) or kind not in TASKS:
        raise UserError(f"_annotations.json has type {kind!r}; expected 'localization' or 'classification'")
    if not isinstance(document.get("annotations"), dict):
        raise UserError("_annotations.json has no 'annotations' object")
    listed = document.get("labels") or []
    if not isinstance(listed, list):
        raise UserError("_annotations.json has a 'labels' entry that is not a list")
    return list(dict.fromkeys(filter(None, map(normalise_label, listed)))), kind


def _parsed_images(items, kind):
    """(images, issues) of the (key, entries) pairs of `annotations`, in file order.

    _Fallback on a repeated key: json.loads keeps the last entries at the first key's place.
    """
    parse_entries = _parse_labels if kind == "classification" else _parse_entries
    images, issues, seen = [], [], set()
    for key, entries in items:
        if key in seen:
            raise _Fallback
        seen.add(key)
        boxes, problems, skip_reason = parse_entries(key, entries)
        if skip_reason:
            issues.append({"image": key, "reason": skip_reason, "action": SKIPPED})
            continue
        issues.extend({"image": key, "reason": reason, "action": REPAIRED} for reason in problems)
        images.append(ImageAnnotation(key, boxes))
    return images, issues


# --- streaming -----------------------------------------------------------------------------------------------------


class _Fallback(Exception):
    """The stream cannot give json.loads' exact result for this file: read it whole."""


def _streaming_ijson():
    """ijson with a C parser, else None (its pure-Python backend is ~20x slower than json)."""
    try:
        import ijson
    except ImportError:
        return None
    return ijson if ijson.backend in C_BACKENDS else None


def _header(ijson, file):
    """The top-level values but `annotations` of the streamed document, and a placeholder for that: {} if it
    is an object, else None. Validates the whole file as JSON.

    The events inside `annotations` are dropped in C (no Python per event); the few left are walked here.
    """
    events = ijson.parse(file, use_float=True)
    if next(events)[1] != "start_map":
        raise _Fallback  # not an object, or not JSON: json says which
    events, prefixes = itertools.tee(events)
    inside = map(operator.methodcaller("startswith", "annotations."), map(operator.itemgetter(0), prefixes))
    header, key, builder, seen, depth = {}, None, None, 0, 1
    for prefix, event, value in itertools.compress(events, map(operator.not_, inside)):
        if prefix == "":  # the document's own events, or those of the value of a key "" (depth 2)
            depth += {"start_map": 1, "start_array": 1, "end_map": -1, "end_array": -1}.get(event, 0)
        if prefix == "" and (depth == 1 and event == "map_key" or depth == 0):
            if builder:
                header[key] = builder.value
            key, builder = value, ijson.ObjectBuilder() if value in HEADER_KEYS else None
            seen += key == "annotations"
            if seen > 1:
                raise _Fallback  # json keeps the last one
        elif key == "annotations" and prefix == "annotations" and event != "map_key":
            header.setdefault(key, {} if event == "start_map" else None)
        elif builder:
            builder.event(event, value)
    return header


class _CheckedReader:
    """A binary file that hashes what is read and refuses (_Fallback) what yajl reads otherwise than json.

    A UTF-8 BOM is skipped (json.loads of bytes skips it). yajl turns a lone high
    surrogate escape into "?" where json keeps it. ijson keeps the full path of every
    open level, so nesting N deep costs N^2 memory: deeper than MAX_DEPTH (brackets
    counted, strings included, so a rare false alarm only costs the whole-file read).
    """

    def __init__(self, file):
        self.file, self.sha256, self.depth, self.tail, self.started, self.ended = file, hashlib.sha256(), 0, b"", False, False

    def read(self, size=-1):
        if self.ended or size == 0:  # ijson reads 0 bytes first to tell bytes from text
            return b""
        data = self.file.read(size)
        self.sha256.update(data)
        if not self.started:
            self.started = True
            if data.startswith(codecs.BOM_UTF8):
                data = data[len(codecs.BOM_UTF8):]
        self._check(data)
        if not data:
            # yajl ignores an unterminated string after the document ('{}"'), which json refuses:
            # one more quote completes such a string (trailing garbage), and after a
            # valid document it is the unterminated string yajl ignores.
            self.ended = True
            return b'"'
        return data

    def _check(self, data):
        import numpy as np

        window = self.tail + data
        lone = b"\\u" in window and _LONE_HIGH_SURROGATE.search(window)
        if lone and (not data or lone.start() < len(window) - SURROGATE_LOOKAHEAD):  # else: decided next read
            raise _Fallback
        self.tail = window[-SURROGATE_LOOKAHEAD:]
        if not data:
            return
        if b"\x0b" in data or b"\x0c" in data:  # yajl reads a vertical tab or form feed as white space, json nowhere
            raise _Fallback
        if data.count(b"[") + data.count(b"{") > 2**14:  # int16 depths below cannot overflow; json has the rest
            raise _Fallback
        depths = np.cumsum(_bracket_steps()[np.frombuffer(data, np.uint8)], dtype=np.int16)
        if self.depth + int(depths.max()) > MAX_DEPTH:
            raise _Fallback
        self.depth += int(depths[-1])

    def hexdigest(self):
        return self.sha256.hexdigest()


@functools.cache
def _bracket_steps():
    """+1 for each opening bracket byte, -1 for each closing one, 0 for the rest."""
    import numpy as np

    steps = np.zeros(256, np.int8)
    steps[[ord("["), ord("{")]] = 1
    steps[[ord("]"), ord("}")]] = -1
    return steps


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

