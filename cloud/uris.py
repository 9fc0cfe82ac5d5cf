"""gs:// URIs: split into bucket and prefix, and the same place as a Vertex AI job sees it.

Inside a job, Cloud Storage FUSE mounts every bucket the job may read under
/gcs, so gs://BUCKET/PREFIX is the folder /gcs/BUCKET/PREFIX.
"""
import re

from trainer.errors import UserError

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


def split_gs_uri(uri):
    """(bucket, prefix) of gs://BUCKET[/PREFIX]; the prefix has no leading or trailing slash."""
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        raise UserError(f"{uri!r} is not a Cloud Storage URI: expected gs://BUCKET[/PREFIX]")
    bucket, _, prefix = uri[len("gs://"):].partition("/")
    if not _BUCKET.match(bucket):
        raise UserError(f"{uri!r} does not start with a valid bucket name: expected gs://BUCKET[/PREFIX]")
    return bucket, prefix.strip("/")


def fuse_path(bucket, prefix=""):
    """Where gs://BUCKET/PREFIX appears inside a Vertex AI job: /gcs/BUCKET/PREFIX."""
    return "/".join(filter(None, ["/gcs", bucket, prefix]))


def gs_uri(bucket, prefix=""):
    """gs://BUCKET/PREFIX, without a trailing slash."""
    return "/".join(filter(None, [f"gs://{bucket}", prefix]))
