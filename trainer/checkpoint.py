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

Downloads go through trainer.download (retries, resume, length and CRC checks);
an archive is also checked for its end (gzip's end-of-stream and CRC, tar's
end-of-archive marker, zip's central directory and CRCs), which is what proves a
body complete when a server sends no length. TensorFlow is not imported here:
fetching files needs none, and `--help` stays fast.
"""
import contextlib
import hashlib
import json
import gzip
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from trainer import catalogue, download
from trainer.errors import UserError

DEFAULT_CACHE_DIR = Path("~/.cache/ca-detector-trainer/checkpoints")
COMPLETE_MARKER = ".complete.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
HTTP_PREFIX_SUFFIXES = (".index", ".data-00000-of-00001")  # a bare prefix over HTTP cannot be listed
CHUNK_BYTES = 1 << 20
TAR_END = b"\0" * 1024  # a tar ends with two zero blocks; an archive cut between members lacks them
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
STEP_NUMBER = re.compile(r"-(\d+)$")
STATE_FILE_PATH = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.MULTILINE)


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
            def check(path):
                _verify(path, url, sha256, size)
                _check_archive_end(path, url)

            if local_path is None:
                archive = download.download(url, downloads / _basename(url), check)  # deletes what fails CHECK
            else:
                archive = local_path
                check(archive)
            try:
                _extract(archive, staging, url)
            except UserError:
                shutil.rmtree(downloads, ignore_errors=True)  # a bad archive stays bad: fetch afresh next time
                raise
            prefix = _find_prefix(staging, url)
        else:
            for file_url in _prefix_file_urls(url):
                file = download.download(file_url, downloads / _basename(file_url))
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
    urls = [name for name in download.list_objects(url + ".")
            if name == url + ".index" or name.startswith(url + ".data-")]
    if url + ".index" not in urls:
        raise UserError(f"no checkpoint at {url}: {url}.index does not exist")
    return urls


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


def _check_archive_end(path, url):
    """Refuse an archive that stops early: gzip must reach its end-of-stream (CRC and length),
    a tar its end-of-archive marker, a zip its central directory with every member's CRC."""
    name = _url_path(url).lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zip_file:
                bad = zip_file.testzip()
            problem = f"member {bad!r} fails its CRC" if bad else None
        else:
            opener = gzip.open if name.endswith((".tar.gz", ".tgz")) else open
            with opener(path, "rb") as stream, tarfile.open(fileobj=stream, mode="r:") as tar:
                for _ in tar:
                    pass
                end = tar.offset
                stream.seek(end)
                complete = stream.read(len(TAR_END)) == TAR_END
                problem = None if complete else "the tar ends without its end-of-archive marker"
                while stream.read(CHUNK_BYTES):  # gzip checks its CRC and length at the end of the stream
                    pass
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        problem = f"{type(err).__name__}: {err}"
    if problem:
        raise UserError(f"{url} is incomplete or corrupt: {problem}")


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
    checkpoint = catalogue.load_model(args.model).checkpoint
    if checkpoint is None:
        print(f"model {args.model!r} has no pretrained checkpoint: it trains from scratch", file=sys.stderr)
        print()
        return 0
    print(fetch_checkpoint(checkpoint.url, args.cache_dir, checkpoint.sha256, checkpoint.size))
    return 0
