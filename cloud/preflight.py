"""Check a data bucket before paying for a job: its `_annotations.json` and the images it names.

It runs the prepare stage's own validation (trainer.annotations) and dataset
rules (trainer.dataset: split, duplicates, warnings) on the file as stored and
one listing of the bucket, so a bucket that cannot train stops at submit, not
an hour into a GPU job. Image contents are known by the MD5 that Cloud Storage
lists, the same digest prepare splits on; image sizes are not known here, so
boxes are measured as if images were square (small boxes can only be under-counted).
"""
import base64
import sys

from google.api_core.exceptions import NotFound

from trainer import catalogue, tasks
from trainer.annotations import parse_annotations
from trainer.dataset import (DEFAULT_SEED, DEFAULT_VAL_FRACTION, SPLIT_FILE, Item, assign_splits, check_distinct,
                             choose_split, dataset_warnings, label_ids, parse_split_file, warning)
from trainer.errors import UserError

from cloud.uris import gs_uri

ANNOTATIONS = "_annotations.json"
SHOWN_NAMES = 3


def check_bucket(client, bucket_name, prefix, model=None, strict=False):
    """A one-line summary of gs://BUCKET/PREFIX; prints its dataset warnings; UserError when it cannot train.

    Images named in the annotations but absent from the bucket are a warning
    (the prepare stage skips them) unless none of the annotated images is there.
    STRICT: any warning is a UserError.
    """
    where = gs_uri(bucket_name, prefix)
    bucket = client.bucket(bucket_name)
    annotations_blob = bucket.blob("/".join(filter(None, [prefix, ANNOTATIONS])))
    try:
        raw = annotations_blob.download_as_bytes()
    except NotFound:
        raise UserError(f"{where} has no {ANNOTATIONS}: is this the folder Cloud Annotations exported "
                        f"(see `python -m cloud stage`)?") from None
    try:
        annotation_set = parse_annotations(raw)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None

    listed_prefix = f"{prefix}/" if prefix else ""
    listing = list(client.list_blobs(bucket_name, prefix=listed_prefix))
    # An empty object is no image (prepare skips it); all of them share one MD5, so they must not count as copies.
    empty = {blob.name[len(listed_prefix):] for blob in listing if not blob.size}
    digests = {blob.name[len(listed_prefix):]: _md5_hex(blob) for blob in listing if blob.size}
    keys = [image.key for image in annotation_set.images]
    missing = [key for key in keys if key not in digests and key not in empty]
    empties = [key for key in keys if key in empty]
    images = [image for image in annotation_set.images if image.key in digests]
    boxes = sum(len(image.boxes) for image in images)
    if not images:
        raise UserError(f"{where}: none of the {len(keys)} usable annotated images is in the bucket"
                        + _examples(missing) + (f"; {len(empties)} are empty files{_examples(empties)}"
                                                if empties else ""))
    if boxes == 0:  # a classification image's label is one whole-image box
        raise UserError(f"{where}: no image in the bucket has a box to learn from")
    check_distinct(len(images), len({digests[image.key] for image in images}), where)

    labels, warnings = label_ids(annotation_set.labels, images)
    splitter = choose_split(_split_file(bucket, prefix, where), keys, DEFAULT_SEED, DEFAULT_VAL_FRACTION)
    splits = assign_splits(splitter, [(digests[image.key], image.key) for image in images])
    items = [Item(image.key, image.boxes, digests[image.key], splits[digests[image.key]]) for image in images]
    if missing:
        warnings.append(warning("missing_images", f"{len(missing)} of {len(keys)} annotated images are not in "
                                f"{where} and will be skipped{_examples(missing)}",
                                missing=len(missing), annotated=len(keys), examples=missing[:SHOWN_NAMES]))
    if empties:
        warnings.append(warning("empty_images", f"{len(empties)} of {len(keys)} annotated images in {where} are "
                                f"empty files (0 bytes) and will be skipped{_examples(empties)}",
                                empty=len(empties), annotated=len(keys), examples=empties[:SHOWN_NAMES]))
    task = annotation_set.task
    input_size = catalogue.load_model(catalogue.resolve_model(model, task)).input_side
    warnings += splitter.warnings() + dataset_warnings(items, labels, input_size, splitter.val_fraction, task)
    for found in warnings:
        print(f"warning: {found['message']}", file=sys.stderr)
    if strict and warnings:
        raise UserError(f"{where}: --strict: {len(warnings)} dataset warning(s), listed above; not submitting")
    objects = f"{boxes} boxes, " if tasks.get(task).BOXES else ""
    return (f"{where}: {task}, {len(images)} images, {objects}{len(labels)} labels, "
            f"{len(annotation_set.issues)} items skipped or repaired by validation, {len(warnings)} warnings")


def _split_file(bucket, prefix, where):
    """The val keys of the bucket's _split.json (an imported dataset's own split, as prepare keeps it), or None."""
    try:
        raw = bucket.blob("/".join(filter(None, [prefix, SPLIT_FILE]))).download_as_bytes()
    except NotFound:
        return None
    return parse_split_file(raw, f"{where}/{SPLIT_FILE}")


def _md5_hex(blob):
    """The object's MD5 as prepare computes it (hex); its name when the object has none (a composite upload)."""
    return base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else f"name:{blob.name}"


def _examples(names):
    if not names:
        return ""
    shown = ", ".join(names[:SHOWN_NAMES])
    return f" (e.g. {shown})" if len(names) > SHOWN_NAMES else f" ({shown})"
