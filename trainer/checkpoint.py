"""Checkpoint stage: fetch a pretrained zoo checkpoint into a local cache, ready to restore.

Model Garden fine-tunes from a checkpoint prefix (`.../ckpt-33264`: the path of
`ckpt-33264.index` without its suffix). Zoo checkpoints are archives on HTTP(S)
or GCS, and cloud jobs meet flaky networks, so downloads retry with backoff,
resume from their `.part` file, are checked against the catalogue's sha256 and
size, extracted without letting any member escape the cache, and land by one
rename, so that a cache entry is either complete or absent. Entries are keyed
by URL (and expected sha256): a second fetch of the same URL makes no network request.

Cache layout under CACHE_DIR ($CHECKPOINT_CACHE, else DEFAULT_CACHE_DIR):
    KEY/             a complete entry: the checkpoint files and COMPLETE_MARKER
    KEY.download/    downloads in progress (NAME.part resumes on the next run)
    KEY.tmp-XXXX/    an entry being assembled; renamed to KEY when complete
where KEY is _cache_key(URL, SHA256); a local archive's URL is its absolute file:// URL.

HTTP uses urllib rather than requests: the trainer needs no third-party HTTP
stack for it, and Range/resume is a header and a status code. TensorFlow is not
imported here: fetching files needs none, and `--help` stays fast.
"""
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm
from tqdm.utils import CallbackIOWrapper

from trainer import catalogue, console
from trainer.errors import UserError

DEFAULT_CACHE_DIR = Path("~/.cache/ca-detector-trainer/checkpoints")
COMPLETE_MARKER = ".complete.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
HTTP_PREFIX_SUFFIXES = (".index", ".data-00000-of-00001")  # a bare prefix over HTTP cannot be listed
RETRY_ATTEMPTS = 5
RETRY_BASE_SECONDS = 1.0  # waits 1, 2, 4, 8 s between attempts; tests lower it
HTTP_TIMEOUT_SECONDS = 60
CHUNK_BYTES = 1 << 20
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
STEP_NUMBER = re.compile(r"-(\d+)$")
STATE_FILE_PATH = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.MULTILINE)


class _TransientError(Exception):
    """A failure worth retrying (connection cut, 5xx, timeout); the message says which."""


def fetch_checkpoint(url, cache_dir=None, sha256=None, size=None):
    """The local prefix of the checkpoint at URL, fetched and verified into the cache on first use.

    URL is http(s)://, gs://, file:// or a path, naming an archive (.tar.gz, .tgz,
    .tar, .zip) or a bare checkpoint prefix. SHA256 and SIZE check the archive.
    A local bare prefix (or a folder holding a checkpoint) is returned in place.
    """
    if sha256 is not None and not SHA256_HEX.fullmatch(str(sha256)):
        raise UserError(f"the sha256 for {url} must be 64 hex digits (quote it in YAML), not {sha256!r}")
    local_path = _local_path(url)
    is_archive = _url_path(url).lower().endswith(ARCHIVE_SUFFIXES)
    if not is_archive and (sha256 or size is not None):
        raise UserError(f"{url} is a checkpoint prefix, not an archive: sha256 and size check archives only")
    if local_path is not None and not is_archive:
        return _local_prefix(local_path, url)
    if local_path is not None and not local_path.is_file():
        raise UserError(f"no such checkpoint archive: {local_path}")

    cache_dir = Path(cache_dir or os.environ.get("CHECKPOINT_CACHE") or DEFAULT_CACHE_DIR).expanduser().absolute()
    key = _cache_key(local_path.resolve().as_uri() if local_path is not None else url, sha256)
    entry = cache_dir / key
    cached = _cached_prefix(entry)
    if cached:
        return cached

    cache_dir.mkdir(parents=True, exist_ok=True)
    downloads = cache_dir / f"{key}.download"
    staging = Path(tempfile.mkdtemp(prefix=f"{key}.tmp-", dir=cache_dir))
    try:
        if is_archive:
            archive = local_path or _download(url, downloads)
            try:
                _verify(archive, url, sha256, size)
                _extract(archive, staging, url)
            except UserError:
                shutil.rmtree(downloads, ignore_errors=True)  # a bad archive stays bad: fetch afresh next time
                raise
            prefix = _find_prefix(staging, url)
        else:
            for file in [_download(file_url, downloads) for file_url in _prefix_file_urls(url)]:
                file.rename(staging / file.name)
            prefix = staging / _basename(url)
        (staging / COMPLETE_MARKER).write_text(
            json.dumps({"url": url, "sha256": sha256, "prefix": str(prefix.relative_to(staging))}, indent=1)
        )
        _move_into_place(staging, entry)
        shutil.rmtree(downloads, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            downloads.rmdir()  # kept only while it holds a partial download to resume
    return _cached_prefix(entry)


def _cache_key(url, sha256):
    """16 hex digits naming URL's cache entry; a different expected sha256 is a different entry."""
    return hashlib.sha256(f"{url}\n{sha256 or ''}".encode()).hexdigest()[:16]


def _url_path(url):
    """The path part of URL (the whole of it for a plain path), where archive suffixes are seen."""
    parsed = urllib.parse.urlparse(url)
    return parsed.path if parsed.scheme else url


def _basename(url):
    return PurePosixPath(_url_path(url)).name or "download"


def _local_path(url):
    """The file a file:// URL or a plain path names; None for a remote URL."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if scheme in ("http", "https", "gs"):
        return None
    if scheme == "":
        return Path(url).expanduser()
    raise UserError(f"unsupported checkpoint URL {url}: use http(s)://, gs://, file:// or a path")


def _local_prefix(path, url):
    """A local checkpoint used where it lies: a prefix beside its .index, or a folder holding one."""
    if path.is_dir():
        return str(_find_prefix(path.absolute(), url))
    if path.with_name(path.name + ".index").is_file():
        return str(path.absolute())
    raise UserError(f"no checkpoint at {url}: expected {path}.index (or an archive or a folder)")


def _cached_prefix(entry):
    """The prefix recorded in a complete cache entry, or None when ENTRY is absent."""
    marker = entry / COMPLETE_MARKER
    if not marker.is_file():
        return None
    return str(entry / json.loads(marker.read_text())["prefix"])


def _move_into_place(staging, entry):
    """Rename the complete STAGING folder to ENTRY; a concurrent run that finished first wins."""
    try:
        staging.rename(entry)
    except OSError:
        if _cached_prefix(entry) is None:
            raise


def _prefix_file_urls(url):
    """The URLs of the files of the bare checkpoint prefix URL (listed on GCS, conventional on HTTP)."""
    if not url.startswith("gs://"):
        return [url + suffix for suffix in HTTP_PREFIX_SUFFIXES]
    bucket_name, prefix_name = _split_gs_url(url)

    def list_files():
        with _gcs_errors(url):
            blobs = _gcs_client().list_blobs(bucket_name, prefix=prefix_name + ".", retry=None)
            return [blob.name for blob in blobs]

    names = [
        name
        for name in _with_retries(url, list_files)
        if name == prefix_name + ".index" or name.startswith(prefix_name + ".data-")
    ]
    if prefix_name + ".index" not in names:
        raise UserError(f"no checkpoint at {url}: {url}.index does not exist")
    return [f"gs://{bucket_name}/{name}" for name in names]


def _download(url, folder):
    """Download URL into FOLDER, resuming FOLDER/NAME.part, and return the finished file."""
    target = folder / _basename(url)
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (target.name + ".part")
    fetch_once = _gcs_fetch if url.startswith("gs://") else _http_fetch
    _with_retries(url, lambda: fetch_once(url, partial))
    return partial.rename(target)


def _with_retries(url, attempt):
    """The result of ATTEMPT(), called again after each transient failure with doubling waits."""
    for number in range(1, RETRY_ATTEMPTS + 1):
        try:
            return attempt()
        except _TransientError as err:
            if number == RETRY_ATTEMPTS:
                raise UserError(
                    f"cannot download {url}: {err} (gave up after {RETRY_ATTEMPTS} attempts; a rerun resumes)"
                ) from None
            delay = RETRY_BASE_SECONDS * 2 ** (number - 1)
            console.say(f"{url}: {err}; retrying in {delay:g} s", error=True)
            time.sleep(delay)


def _progress(url, total, initial):
    return tqdm(
        total=total, initial=initial, desc=_basename(url), unit="B", unit_scale=True,
        unit_divisor=1024, file=console.stream(), mininterval=1.0,
    )


def _http_fetch(url, partial):
    """One attempt to complete PARTIAL from URL, asking for the missing bytes only."""
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS)
    except urllib.error.HTTPError as err:
        if err.code == 416:  # the partial file is no prefix of what is served now
            partial.unlink()
            raise _TransientError("server refused to resume; starting over") from None
        if err.code >= 500 or err.code in (408, 429):
            raise _TransientError(f"HTTP {err.code} {err.reason}") from None
        raise UserError(f"cannot download {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, (TimeoutError, ConnectionResetError, ConnectionAbortedError)):
            raise _TransientError(str(err.reason)) from None
        raise UserError(f"cannot download {url}: {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:  # the connection broke before the headers came
        raise _TransientError(f"{type(err).__name__}: {err}") from None
    with response:
        if response.status != 206:  # a full response: the server ignored or was not asked for a range
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with open(partial, "ab" if offset else "wb") as out, _progress(url, total, offset) as bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException):
                pass  # a cut connection: counted below, like an early end of the body
            if total is not None and out.tell() < total:
                raise _TransientError(f"connection lost after {out.tell()} of {total} bytes")


def _split_gs_url(url):
    parsed = urllib.parse.urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


def _gcs_client():
    """A GCS client with Application Default Credentials, or an anonymous one for public buckets.

    The client honours STORAGE_EMULATOR_HOST (and is then anonymous by itself).
    """
    import google.auth.exceptions
    from google.cloud import storage

    try:
        return storage.Client(project=None)
    except google.auth.exceptions.DefaultCredentialsError:
        return storage.Client.create_anonymous_client()


@contextlib.contextmanager
def _gcs_errors(url):
    """Turn GCS client errors into a retry (5xx, 429, connection trouble) or a one-line UserError.

    The client's own retries are switched off (retry=None) so that _with_retries alone decides.
    """
    import requests
    from google.api_core import exceptions

    try:
        yield
    except (exceptions.ServerError, exceptions.TooManyRequests, requests.ConnectionError, requests.Timeout,
            requests.exceptions.ChunkedEncodingError) as err:
        raise _TransientError(f"{type(err).__name__}: {err}") from None
    except exceptions.GoogleAPICallError as err:
        raise UserError(f"cannot download {url}: {err.code} {err.message}") from None


def _gcs_fetch(url, partial):
    """One attempt to complete PARTIAL from the GCS object URL, from where it stopped."""
    bucket_name, blob_name = _split_gs_url(url)
    with _gcs_errors(url):
        blob = _gcs_client().bucket(bucket_name).get_blob(blob_name, retry=None)
        if blob is None:
            raise UserError(f"cannot download {url}: no such object")
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > blob.size:  # the object changed since the partial download began
            offset = 0
        with open(partial, "ab" if offset else "wb") as out, _progress(url, blob.size, offset) as bar:
            if offset < blob.size:
                # GCS's md5 covers the whole object, so it can check only a download from byte 0.
                blob.download_to_file(
                    CallbackIOWrapper(bar.update, out, "write"), start=offset, raw_download=True,
                    checksum="auto" if offset == 0 else None, retry=None,
                )


def _verify(path, url, sha256, size):
    """Refuse PATH unless it has the catalogue's SIZE and SHA256 (None: not known)."""
    actual_size = path.stat().st_size
    problem = None
    if size is not None and actual_size != size:
        problem = f"size is {actual_size} bytes, the catalogue says {size}"
    elif sha256:
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        if digest != sha256.lower():
            problem = f"sha256 is {digest}, the catalogue says {sha256}"
    if problem:
        raise UserError(f"{url} failed verification: {problem}")


def _extract(archive, dest, url):
    """Unpack ARCHIVE into DEST, refusing any member that would land or link outside DEST."""
    if _url_path(url).lower().endswith(".zip"):
        _extract_zip(archive, dest, url)
        return

    def refuse_unsafe(member, dest_path):
        # The "data" filter would quietly strip a leading "/"; an absolute member is refused instead.
        if member.name.startswith("/"):
            raise tarfile.AbsolutePathError(member)
        return tarfile.data_filter(member, dest_path)

    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter=refuse_unsafe)
    except tarfile.FilterError as err:
        raise UserError(f"refusing to extract {url}: {err}") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UserError(f"cannot extract {url}: {err}") from None


def _extract_zip(archive, dest, url):
    """Unpack a zip after checking every member; zipfile would quietly rewrite an escaping name."""
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zip_file:
            for name in zip_file.namelist():
                if not (root / name).resolve().is_relative_to(root):
                    raise UserError(f"refusing to extract {url}: member {name!r} would land outside the cache")
            zip_file.extractall(dest)
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(f"cannot extract {url}: {err}") from None


def _find_prefix(root, url):
    """The checkpoint prefix under ROOT: the one a `checkpoint` state file names, else the highest step."""
    prefixes = [index.with_suffix("") for index in root.rglob("*.index")]
    if not prefixes:
        raise UserError(f"{url} holds no checkpoint (no *.index file)")
    named = set()
    for state_file in filter(Path.is_file, root.rglob("checkpoint")):
        match = STATE_FILE_PATH.search(state_file.read_text(errors="replace"))
        if match:  # the path may be absolute on the machine that trained: keep its name
            named.add(state_file.parent / PurePosixPath(match.group(1)).name)
    candidates = [prefix for prefix in prefixes if prefix in named] or prefixes
    return max(candidates, key=lambda prefix: (_step(prefix), str(prefix)))


def _step(prefix):
    match = STEP_NUMBER.search(prefix.name)
    return int(match.group(1)) if match else -1


def add_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model", metavar="NAME",
        help="the catalogue model (configs/models/NAME.yaml) whose checkpoint url, sha256 and size to use",
    )
    source.add_argument(
        "--url", help="a checkpoint archive or prefix: http(s)://, gs://, file:// or a path (not verified)",
    )
    parser.add_argument(
        "--cache-dir",
        help=f"where checkpoints are cached (default: $CHECKPOINT_CACHE, else {DEFAULT_CACHE_DIR})",
    )
    parser.epilog = (
        "The last line of stdout is the checkpoint prefix to restore; it is empty for a model "
        "that trains from scratch (checkpoint: null)."
    )


def main(args):
    if args.url:
        print(fetch_checkpoint(args.url, args.cache_dir))
        return 0
    checkpoint = catalogue.load_model(args.model).get("checkpoint")
    if checkpoint is None:
        print(f"model {args.model!r} has no pretrained checkpoint: it trains from scratch", file=sys.stderr)
        print()
        return 0
    print(fetch_checkpoint(checkpoint["url"], args.cache_dir, checkpoint.get("sha256"), checkpoint.get("size")))
    return 0
