"""What every importer shares: the record an importer reads, class selection, and the bucket writer.

An importer turns its format into `Record`s (boxes normalised 0..1, not yet
clipped) plus the issues it met; `write_bucket` then gives them exactly the
treatment prepare gives a bucket: unsafe keys and missing images are skipped,
boxes are clipped, reordered or dropped by `trainer.annotations` itself, and
every problem is one line in OUT_DIR/import_report.json, never in
_annotations.json, so prepare takes the result as any Cloud Annotations bucket.
"""
import difflib
import json
import math
import os
import re
import shutil
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from trainer.annotations import REPAIRED, SKIPPED, is_safe_key, normalise_label, parse_annotations
from trainer.dataset import SPLIT_FILE, counted
from trainer.errors import UserError

ANNOTATIONS_FILE = "_annotations.json"
REPORT_FILE = "import_report.json"
EXIF_ORIENTATION = 0x0112
TURNED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
PRINTED_ISSUES = 20  # on stderr; the report lists them all
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Record:
    """One image to import: its KEY in the bucket, the file it comes from, and its boxes.

    boxes: (x, y, x2, y2, label) normalised by the image's size, as the source says them.
    item: what the report names for it (the source file or entry), default the key.
    split: "val" when the dataset holds it out (its val or test split), "train" or "" (unsaid) otherwise.
    """
    key: str
    source: Path
    boxes: list = field(default_factory=list)
    item: str = ""
    split: str = ""


class Issues(list):
    """The import report's lines: {"item", "reason", "action"}; action SKIPPED or REPAIRED."""

    def skip(self, item, reason):
        self.append({"item": str(item), "reason": reason, "action": SKIPPED})

    def repair(self, item, reason):
        self.append({"item": str(item), "reason": reason, "action": REPAIRED})


def number(value):
    """VALUE as a finite float, also when written as a string ("996.0000", as some Roboflow exports do); else None."""
    if isinstance(value, bool):
        return None
    try:
        value = float(value.strip()) if isinstance(value, str) else value
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    except (ValueError, OverflowError):
        return None


def image_size(path):
    """(width, height) of the image at PATH as people see it (EXIF rotation applied), from its header.

    Raises UserError naming why when the file is missing or not an image.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            try:
                orientation = image.getexif().get(EXIF_ORIENTATION)
            except (OSError, SyntaxError, ValueError, struct.error):
                orientation = None
    except FileNotFoundError:
        raise UserError("missing image: file not found") from None
    except Image.DecompressionBombError as err:  # the header alone declares more pixels than PIL will decode
        raise UserError(f"image too large: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"unreadable image: {type(err).__name__}") from None
    return (height, width) if orientation in TURNED_ORIENTATIONS else (width, height)


def resolve_classes(requested, known):
    """The names in REQUESTED (a comma-separated string, or None for all) as KNOWN spells them.

    An unknown name is a UserError that lists the close matches.
    """
    if requested is None:
        return None
    by_folded = {name.casefold(): name for name in known}
    resolved = []
    for name in filter(None, (normalise_label(part) for part in requested.split(","))):
        if name.casefold() not in by_folded:
            close = close_matches(name, known)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise UserError(f"unknown class {name!r}{hint}")
        resolved.append(by_folded[name.casefold()])
    if not resolved:
        raise UserError("--classes names no class")
    return list(dict.fromkeys(resolved))


def close_matches(name, known, limit=8):
    """The names in KNOWN that NAME may mean, best first, case-insensitively.

    A known name that is one of NAME's words (`sports_Ball` -> Ball), then close spellings
    (difflib), then names sharing a word with NAME, then names holding one of its words
    (`Football`); words are split at non-letters and camelCase, and count from 3 letters.
    """
    by_folded = {known_name.casefold(): known_name for known_name in known}
    words = {word for word in _words(name) if len(word) >= 3}
    spelled = difflib.get_close_matches(name.casefold(), list(by_folded), n=limit, cutoff=0.6)

    def rank(folded):
        if folded in words:
            return 0, 0
        if folded in spelled:
            return 1, spelled.index(folded)
        if words & set(_words(folded)):
            return 2, 0
        if any(word in folded for word in words):
            return 3, 0
        return None

    ranked = sorted((found, folded) for folded in by_folded if (found := rank(folded)) is not None)
    return [by_folded[folded] for _, folded in ranked[:limit]]


def _words(name):
    """NAME's words, casefolded: split at anything but letters and digits, and where camelCase turns."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return [word.casefold() for word in re.split(r"[\W_]+", spaced) if word]


class PerClassLimit:
    """--limit N: an image is taken while one of its classes has fewer than N images (None: no limit).

    Images without boxes count as their own class, so negatives are limited too.
    """

    def __init__(self, limit):
        if limit is not None and limit < 1:
            raise UserError(f"--limit must be at least 1, not {limit}")
        self.limit = limit
        self.counts = Counter()

    def take(self, labels):
        labels = set(labels) or {None}
        if self.limit is not None and all(self.counts[label] >= self.limit for label in labels):
            return False
        self.counts.update(labels)
        return True


def select(records, classes, limit):
    """RECORDS with only the boxes of CLASSES (None: all), those left without any dropped, then --limit applied.

    Returns (records kept, number left out).
    """
    limiter, kept = PerClassLimit(limit), []
    for record in records:
        if classes is not None:
            if not any(box[4] in classes for box in record.boxes):
                continue
            record.boxes = [box for box in record.boxes if box[4] in classes]
        if limiter.take(box[4] for box in record.boxes):
            kept.append(record)
    return kept, len(records) - len(kept)


def write_bucket(out_dir, fmt, source, labels, records, issues, copy=False, left_out=0, kind="localization"):
    """Write OUT_DIR/_annotations.json (type KIND: localization, or classification, whose records carry their
    label as one box) with RECORDS' images linked (or copied) beside it.

    Also OUT_DIR/import_report.json, and a summary on stderr. Returns the report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    annotations, seen = {}, set()
    for record in records:
        item = record.item or record.key
        if not is_safe_key(record.key):
            issues.skip(item, f"unsafe path {record.key!r}: absolute or outside the images folder, not opened")
            continue
        if record.key in seen:
            issues.skip(item, f"duplicate image {record.key!r}: an earlier entry already has it")
            continue
        entries = [{"x": x, "y": y, "x2": x2, "y2": y2, "label": label} for x, y, x2, y2, label in record.boxes]
        checked = parse_annotations(json.dumps({"version": "1.0", "type": kind, "annotations": {record.key: entries}}))
        if not checked.images:
            issues.extend({**issue, "item": item} for issue in checked.issues)
            continue
        try:
            _place(Path(record.source), out_dir / record.key, copy)
        except FileNotFoundError:
            issues.skip(item, f"missing image: {record.source} not found")
            continue
        issues.extend({**issue, "item": item} for issue in checked.issues)
        seen.add(record.key)
        annotations[record.key] = [
            {"x": box.x, "y": box.y, "x2": box.x2, "y2": box.y2, "label": box.label} if kind == "localization"
            else {"label": box.label} for box in checked.images[0].boxes
        ]
    used = {entry["label"] for entries in annotations.values() for entry in entries}
    document = {"version": "1.0", "type": kind, "labels": [label for label in labels if label in used],
                "annotations": annotations}
    val = sorted({record.key for record in records if record.split == "val"} & set(annotations))
    report = {
        "format": fmt, "source": str(source), "images": len(annotations),
        "boxes": sum(len(entries) for entries in annotations.values()),
        "negatives": sum(not entries for entries in annotations.values()),
        "per_class": dict(sorted(Counter(e["label"] for es in annotations.values() for e in es).items())),
        "left_out": left_out,
        "skipped": [{"item": i["item"], "reason": i["reason"]} for i in issues if i["action"] == SKIPPED],
        "repaired": [{"item": i["item"], "reason": i["reason"]} for i in issues if i["action"] == REPAIRED],
        "split": {"train": len(annotations) - len(val), "val": len(val)} if 0 < len(val) < len(annotations) else None,
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if not annotations:
        raise UserError(_nothing_imported(source, out_dir, report))
    (out_dir / ANNOTATIONS_FILE).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    _write_split(out_dir, val if report["split"] else None)
    _print_summary(out_dir, report)
    return report


def _write_split(out_dir, val):
    """OUT_DIR/_split.json: the dataset's own val keys, which prepare then keeps (trainer.dataset.ListedSplit).

    _annotations.json has no split field (Cloud Annotations would not keep one), hence a file beside it.
    Without a usable split (none said, or one side empty) a stale one from an earlier import is removed.
    """
    path = out_dir / SPLIT_FILE
    if val is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(json.dumps({"version": 1, "val": val}, indent=1, ensure_ascii=False) + "\n")


def _nothing_imported(source, out_dir, report):
    """The one line that says why an import wrote no image: nothing found, all skipped, or all left out."""
    if report["skipped"]:
        first = report["skipped"][0]
        return (f"no image imported from {source}: all {counted(len(report['skipped']), 'entry', 'entries')} "
                f"skipped (first: {first['item']}: {first['reason']}); all listed in {out_dir / REPORT_FILE}")
    if report["left_out"]:
        return f"no image imported from {source}: --classes/--limit left out all {report['left_out']}"
    return f"no image imported from {source}: it lists no image"


def _place(source, target, copy):
    """Put SOURCE at TARGET: a hard link (no extra space), else a copy; TARGET already being SOURCE is fine."""
    if not source.is_file():
        raise FileNotFoundError(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.samefile(source):
        return
    target.unlink(missing_ok=True)
    if not copy:
        try:
            os.link(source, target)
            return
        except OSError:  # another filesystem, or links not allowed: copy instead
            pass
    shutil.copyfile(source, target)


def _print_summary(out_dir, report):
    lines = [f"{action} {issue['item']}: {issue['reason']}" for action in ("skipped", "repaired")
             for issue in report[action]]
    for line in lines[:PRINTED_ISSUES]:
        print(f"import: {line}", file=sys.stderr)
    if len(lines) > PRINTED_ISSUES:
        print(f"import: ... and {len(lines) - PRINTED_ISSUES} more", file=sys.stderr)
    left_out = f", {report['left_out']} left out by --classes/--limit" if report["left_out"] else ""
    split = (f"; the dataset's split kept in {SPLIT_FILE}: {report['split']['train']} train, "
             f"{report['split']['val']} val" if report["split"] else "")
    print(f"import: wrote {report['images']} images ({report['boxes']} boxes, {len(report['per_class'])} classes, "
          f"{report['negatives']} without boxes) to {out_dir}; skipped {len(report['skipped'])}, repaired "
          f"{len(report['repaired'])}{left_out}{split}; see {out_dir / REPORT_FILE}", file=sys.stderr)
