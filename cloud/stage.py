"""Upload a local Cloud Annotations folder (images + `_annotations.json`) to gs://BUCKET/PREFIX.

One listing of the destination gives every object's MD5 (or CRC32C, for
composite objects), so a rerun uploads only files that are new or changed.
Uploads run in parallel threads behind one progress bar; transfer_manager's
upload_many_from_filenames has no per-file hook for a progress bar, so plain
threads do the same job here.
"""
import base64
import hashlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import google_crc32c
from tqdm import tqdm

from trainer.annotations import read_annotations
from trainer.errors import UserError

from cloud.clients import storage_client
from cloud.preflight import ANNOTATIONS
from cloud.uris import gs_uri, split_gs_uri

WORKERS = 8
CHUNK = 1 << 20


def stage_folder(client, local_dir, bucket_name, prefix, workers=WORKERS):
    """Upload what differs between LOCAL_DIR and gs://BUCKET/PREFIX; return (uploaded, unchanged) counts."""
    local_dir = Path(local_dir)
    annotations = local_dir / ANNOTATIONS
    if not annotations.is_file():
        raise UserError(f"{local_dir} has no {ANNOTATIONS}: expected a folder exported from Cloud Annotations")
    read_annotations(annotations)  # a malformed file stops here, before any upload

    files = sorted(path for path in local_dir.rglob("*")
                   if path.is_file() and not any(part.startswith(".") for part in path.relative_to(local_dir).parts))
    listed_prefix = f"{prefix}/" if prefix else ""
    remote = {blob.name: blob for blob in client.list_blobs(bucket_name, prefix=listed_prefix)}
    changed = [path for path in files
               if not _same_content(path, remote.get(listed_prefix + path.relative_to(local_dir).as_posix()))]

    bucket = client.bucket(bucket_name)
    with tqdm(total=sum(path.stat().st_size for path in changed), unit="B", unit_scale=True,
              desc=f"uploading {len(changed)} files to {gs_uri(bucket_name, prefix)}") as progress, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        uploads = {pool.submit(_upload, bucket, path, listed_prefix + path.relative_to(local_dir).as_posix()): path
                   for path in changed}
        for done in as_completed(uploads):
            done.result()
            progress.update(uploads[done].stat().st_size)
    return len(changed), len(files) - len(changed)


def _upload(bucket, path, name):
    bucket.blob(name).upload_from_filename(str(path))


def _same_content(path, blob):
    """True when BLOB exists with PATH's size and checksum (MD5, or CRC32C where the object has no MD5)."""
    if blob is None or blob.size != path.stat().st_size:
        return False
    if blob.md5_hash:
        return blob.md5_hash == _checksum(path, hashlib.md5())
    return blob.crc32c is not None and blob.crc32c == _checksum(path, google_crc32c.Checksum())


def _checksum(path, hasher):
    """Base64 of HASHER's digest over PATH, as Cloud Storage reports md5Hash and crc32c."""
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            hasher.update(chunk)
    return base64.b64encode(hasher.digest()).decode()


def main(args):
    """`stage LOCAL_DIR gs://BUCKET/PREFIX`."""
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    bucket_name, prefix = split_gs_uri(args.destination)
    client = storage_client(args.project)
    uploaded, unchanged = stage_folder(client, args.local_dir, bucket_name, prefix, args.workers)
    print(f"{gs_uri(bucket_name, prefix)}: {uploaded} uploaded, {unchanged} already there")
    return 0
