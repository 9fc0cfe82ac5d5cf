"""Check a data bucket before paying for a job: its `_annotations.json` and the images it names.

It runs the prepare stage's own validation (trainer.annotations, pure Python)
on the file as stored, and compares the annotated images with one listing of
the bucket, so a bucket that cannot train stops at submit, not an hour into a
GPU job.
"""
import sys

from google.api_core.exceptions import NotFound

from trainer.annotations import parse_annotations
from trainer.errors import UserError

from cloud.uris import gs_uri

ANNOTATIONS = "_annotations.json"
SHOWN_NAMES = 3


def check_bucket(client, bucket_name, prefix):
    """A one-line summary of gs://BUCKET/PREFIX; UserError when it cannot train.

    Images named in the annotations but absent from the bucket are a warning
    (the prepare stage skips them) unless none of the annotated images is there.
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
    present = {blob.name[len(listed_prefix):] for blob in client.list_blobs(bucket_name, prefix=listed_prefix)}
    keys = [image.key for image in annotation_set.images]
    missing = [key for key in keys if key not in present]
    boxes = sum(len(image.boxes) for image in annotation_set.images if image.key in present)
    if not keys or len(missing) == len(keys):
        raise UserError(f"{where}: none of the {len(keys)} usable annotated images is in the bucket"
                        + _examples(missing))
    if boxes == 0:
        raise UserError(f"{where}: no image in the bucket has a box to learn from")
    if missing:
        print(f"warning: {len(missing)} of {len(keys)} annotated images are not in {where} and will be "
              f"skipped{_examples(missing)}", file=sys.stderr)
    return (f"{where}: {len(keys) - len(missing)} images, {boxes} boxes, {len(annotation_set.labels)} labels, "
            f"{len(annotation_set.issues)} items skipped or repaired by validation")


def _examples(names):
    if not names:
        return ""
    shown = ", ".join(names[:SHOWN_NAMES])
    return f" (e.g. {shown})" if len(names) > SHOWN_NAMES else f" ({shown})"
