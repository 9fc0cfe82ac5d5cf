"""`merge-buckets A B ... --out C`: fold corrected images back into a training bucket, the labelling loop's last step.

Each bucket's `_annotations.json` is read with prepare's own checks, and C is written by
the importers' bucket writer (images hard-linked or copied, every problem one line in
C/import_report.json). A later bucket wins: an image whose bytes are already in an earlier
bucket (the same picture, corrected) replaces it, whatever its name; an image whose name is
taken by other bytes gets a free name. The buckets themselves are never written.
"""
import hashlib
from pathlib import Path

from trainer.annotations import parse_annotations
from trainer.errors import UserError
from trainer.folders import refuse_overlap
from trainer.datasets.bucket import ANNOTATIONS_FILE, Issues, Record, write_bucket

KINDS = {"detection": "localization", "classification": "classification"}


def merge(buckets, out_dir, copy=False):
    """Write OUT_DIR as the union of BUCKETS (later ones win); return the import report."""
    for bucket in buckets:
        refuse_overlap(bucket, out_dir, f"bucket {bucket}", f"--out {out_dir}")
    records, by_digest, labels, issues, kinds = {}, {}, [], Issues(), set()
    for bucket in map(Path, buckets):
        annotations = _read(bucket)
        kinds.add(annotations.task)
        labels += [label for label in annotations.labels if label not in labels]
        issues.extend({"item": f"{bucket}/{issue['image']}", "reason": issue["reason"], "action": issue["action"]}
                      for issue in annotations.issues)
        for image in annotations.images:
            source = bucket / image.key
            digest = _md5(source) if source.is_file() else None
            key = by_digest.pop(digest, None) or _free_key(records, image.key)
            records[key] = Record(key, source, [(b.x, b.y, b.x2, b.y2, b.label) for b in image.boxes],
                                  item=str(source))
            if digest:
                by_digest[digest] = key
    if len(kinds) > 1:
        raise UserError(f"{', '.join(map(str, buckets))} mix localization and classification buckets: merge buckets "
                        "of one type")
    return write_bucket(out_dir, "merge", " + ".join(map(str, buckets)), labels, list(records.values()), issues,
                        copy=copy, kind=KINDS[kinds.pop()])


def _read(bucket):
    path = bucket / ANNOTATIONS_FILE
    if not path.is_file():
        raise UserError(f"{bucket} is not a bucket: it has no {ANNOTATIONS_FILE}")
    try:
        return parse_annotations(path.read_bytes())
    except UserError as err:
        raise UserError(f"{path}: {err}") from None


def _free_key(records, key):
    """KEY, or KEY with -1, -2... before its extension while another image holds it."""
    stem, dot, suffix = key.rpartition(".")
    candidate, number = key, 1
    while candidate in records:
        candidate, number = f"{stem}-{number}{dot}{suffix}" if dot else f"{key}-{number}", number + 1
    return candidate


def _md5(path):
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "md5").hexdigest()


def add_arguments(parser):
    parser.add_argument("buckets", nargs="+", metavar="BUCKET",
                        help="Cloud Annotations buckets (folders with _annotations.json), a later one winning "
                             "for the same image: e.g. the training bucket, then the corrected predictions")
    parser.add_argument("--out", required=True, help="the merged bucket to write (hard links to the images)")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of hard-linking them")


def main(args):
    if len(args.buckets) < 2:
        raise UserError("merge-buckets needs at least two buckets")
    merge(args.buckets, args.out, copy=args.copy)
    return 0
