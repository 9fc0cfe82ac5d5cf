"""Fetch one file from http(s)://, gs://, file:// or a path: complete and verified, or not at all.

Cloud jobs and dataset imports meet flaky networks, so a download retries with
backoff, resumes from TARGET.part (also on a later run), and is renamed to
TARGET only once it is verified. Completeness comes from what the source
promises: HTTP's Content-Length or Content-Range total, a GCS object's size and
CRC32C. A server that sends no length (a close-delimited body) cannot prove
completeness that way, so the caller's CHECK (an archive's end-of-stream, an
image's decode) decides, and an incomplete body is fetched again.

Each download also has an overall deadline (_Deadline): DEADLINE_SECONDS plus one
second per MIN_BYTES_PER_SECOND bytes received, over all its attempts, so a server
that trickles bytes or stalls is given up while a big file at a sane rate never is.
A host name that does not resolve stops at once: retrying a DNS failure changes nothing.

HTTP uses urllib rather than requests: Range/resume is a header and a status
code, and the trainer needs no third-party HTTP stack for it.
"""
import base64
import contextlib
import http.client
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

import google_crc32c
from tqdm import tqdm
from tqdm.utils import CallbackIOWrapper

from trainer import console
from trainer.errors import UserError

RETRY_ATTEMPTS = 5
RETRY_BASE_SECONDS = 1.0  # waits 1, 2, 4, 8 s between attempts; tests lower it
HTTP_TIMEOUT_SECONDS = 60
CHUNK_BYTES = 1 << 20
# The overall deadline of one download: DEADLINE_SECONDS + bytes received / MIN_BYTES_PER_SECOND
# (so 5 min plus 1 min per 6 MB); the environment variables below change both.
DEADLINE_SECONDS = 300.0
MIN_BYTES_PER_SECOND = 100 * 1024
DEADLINE_ENV = "TRAINER_DOWNLOAD_DEADLINE_SECONDS"
MIN_RATE_ENV = "TRAINER_DOWNLOAD_MIN_BYTES_PER_SECOND"
DIGITS = re.compile(r"[0-9]+")


class _TransientError(Exception):
    """A failure worth retrying (connection cut, 5xx, timeout, an unproven body that failed CHECK)."""


def download(url, target, check=None, progress=True):
    """Download URL to the file TARGET and return TARGET as a Path; an existing TARGET is returned as it is.

    URL is http(s)://, gs://, file:// or a local path. CHECK(path), when given,
    raises UserError when the content is wrong or incomplete; the file is then
    deleted, and fetched again when the source had not proved its length.
    Transient failures are retried RETRY_ATTEMPTS times; giving up raises a
    one-line UserError naming URL, and the partial file stays for a rerun.
    """
    target = Path(target)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        scheme = urllib.parse.urlparse(url).scheme
    except ValueError as err:  # such as "http://[::1/x"
        raise UserError(f"cannot download {url!r}: invalid URL ({err})") from None
    fetch_once = {"gs": _gcs_fetch, "http": _http_fetch, "https": _http_fetch}.get(scheme, _file_fetch)
    deadline = _Deadline(url)

    def attempt():
        deadline.check()
        proven = fetch_once(url, partial, progress, deadline)
        if check is not None:
            try:
                check(partial)
            except UserError as err:
                partial.unlink(missing_ok=True)
                if proven:
                    raise
                raise _TransientError(f"incomplete or corrupt body (the server sent no length): {err}") from None
        return partial.replace(target)

    return _with_retries(url, attempt, deadline)


def list_objects(url):
    """The gs:// URLs of the objects whose names start with the gs:// URL prefix URL."""
    bucket_name, prefix = _split_gs_url(url)

    def list_names():
        with _gcs_errors(url):
            return [blob.name for blob in _gcs_client().list_blobs(bucket_name, prefix=prefix, retry=None)]

    return [f"gs://{bucket_name}/{name}" for name in _with_retries(url, list_names)]


class _Deadline:
    """One download's overall limit: DEADLINE_SECONDS plus the time its bytes received take at MIN_BYTES_PER_SECOND.

    A minimum average throughput after a grace period: it needs no promised length, stops a
    server sending 2 bytes a second after about DEADLINE_SECONDS, and lets a big file through.
    """

    def __init__(self, url):
        self.url = url
        self.base = _positive_setting(DEADLINE_ENV, DEADLINE_SECONDS)
        self.rate = _positive_setting(MIN_RATE_ENV, MIN_BYTES_PER_SECOND)
        self.started = time.monotonic()
        self.received = 0

    def left(self):
        """Seconds left before the deadline, at the bytes received so far."""
        return self.base + self.received / self.rate - (time.monotonic() - self.started)

    def timeout(self):
        """The socket timeout for the next network call: HTTP_TIMEOUT_SECONDS, or less near the deadline."""
        self.check()
        return max(0.01, min(HTTP_TIMEOUT_SECONDS, self.left()))

    def add(self, count):
        self.received += count
        self.check()

    def check(self):
        if self.left() < 0:
            raise UserError(
                f"cannot download {self.url}: too slow, {self.received} bytes in "
                f"{time.monotonic() - self.started:.1f} s (the deadline is {self.base:g} s plus 1 s per "
                f"{self.rate:g} bytes received; {DEADLINE_ENV} and {MIN_RATE_ENV} change it; a rerun resumes)")


def _positive_setting(name, default):
    """The positive number in environment variable NAME, else DEFAULT; anything else is a UserError."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0 or number == float("inf"):
        raise UserError(f"{name} must be a positive number, not {value!r}")
    return number


def _with_retries(url, attempt, deadline=None):
    """The result of ATTEMPT(), called again after each transient failure with doubling waits (within DEADLINE)."""
    for number in range(1, RETRY_ATTEMPTS + 1):
        try:
            return attempt()
        except _TransientError as err:
            delay = RETRY_BASE_SECONDS * 2 ** (number - 1)
            if number == RETRY_ATTEMPTS or (deadline is not None and deadline.left() < delay):
                at_deadline = "" if number == RETRY_ATTEMPTS else ", at the download's deadline"
                raise UserError(
                    f"cannot download {url}: {err} (gave up after {number} attempts{at_deadline}; a rerun resumes)"
                ) from None
            console.say(f"{url}: {err}; retrying in {delay:g} s", error=True)
            time.sleep(delay)


def _progress(url, total, initial, enabled):
    return tqdm(
        total=total, initial=initial, desc=PurePosixPath(urllib.parse.urlparse(url).path).name, unit="B",
        unit_scale=True, unit_divisor=1024, file=console.stream(), mininterval=1.0, disable=not enabled,
    )


def _file_fetch(url, partial, progress, deadline):
    """Copy a file:// URL or a path; a local file's length is its own, so the copy is proven."""
    parsed = urllib.parse.urlparse(url)
    source = Path(urllib.request.url2pathname(parsed.path)) if parsed.scheme == "file" else Path(url).expanduser()
    if parsed.scheme not in ("", "file"):
        raise UserError(f"unsupported URL {url}: use http(s)://, gs://, file:// or a path")
    try:
        with open(source, "rb") as src, open(partial, "wb") as out, \
                _progress(url, source.stat().st_size, 0, progress) as bar:
            shutil.copyfileobj(CallbackIOWrapper(bar.update, src, "read"), out, CHUNK_BYTES)
    except FileNotFoundError:
        raise UserError(f"cannot download {url}: no such file") from None
    return True


def _http_fetch(url, partial, progress, deadline):
    """One attempt to complete PARTIAL from URL, asking for the missing bytes only.

    True when the server's length proved the body complete; False when it sent none.
    """
    offset = partial.stat().st_size if partial.exists() else 0
    try:
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        response = urllib.request.urlopen(request, timeout=deadline.timeout())
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
        raise UserError(f"cannot download {url}: {_reason(err.reason)}") from None
    except (ValueError, http.client.InvalidURL) as err:  # a malformed URL: a bad port, control characters
        raise UserError(f"cannot download {url!r}: invalid URL ({str(err).splitlines()[0][:80]!r})") from None
    except (OSError, http.client.HTTPException) as err:  # the connection broke before the headers came
        raise _TransientError(f"{type(err).__name__}: {err}") from None
    with response:
        offset, total = _response_span(url, response, offset)
        with open(partial, "r+b" if offset else "wb") as out, _progress(url, total, offset, progress) as bar:
            out.seek(offset)
            out.truncate()
            try:
                while chunk := response.read1(CHUNK_BYTES):  # read1: as soon as bytes come, so the deadline holds
                    out.write(chunk)
                    bar.update(len(chunk))
                    deadline.add(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                # A cut connection, or a chunked body that ended before its last chunk: keep what came.
                out.write(getattr(err, "partial", b""))
                raise _TransientError(f"connection lost after {out.tell()} bytes ({type(err).__name__})") from None
            if total is not None and out.tell() != total:
                raise _TransientError(f"connection lost after {out.tell()} of {total} bytes")
    return total is not None


def _reason(reason):
    """What a URLError's REASON says, naming a failed DNS lookup as such."""
    return f"DNS lookup failed ({reason})" if isinstance(reason, socket.gaierror) else str(reason)


def _response_span(url, response, offset):
    """(where the body starts in the file, the file's total length or None) for an HTTP response."""
    length = _length(url, response.headers.get("Content-Length"))
    if response.status != 206:  # a full response: the server ignored or was not asked for a range
        return 0, length
    unit, _, span = (response.headers.get("Content-Range") or "").partition(" ")
    start, total = span.partition("-")[0], span.rpartition("/")[2]
    if unit != "bytes" or not DIGITS.fullmatch(start) or int(start) != offset:
        raise _TransientError(f"server answered a range request with Content-Range {span!r}; starting over")
    if DIGITS.fullmatch(total):
        return offset, int(total)
    return offset, offset + length if length is not None else None


def _length(url, header):
    """A Content-Length header's value as an int (None when absent); a malformed one is refused."""
    if header is None:
        return None
    if not DIGITS.fullmatch(header.strip()):
        raise UserError(f"cannot download {url}: the server sent an invalid Content-Length {header[:40]!r}")
    return int(header)


def _split_gs_url(url):
    parsed = urllib.parse.urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


_clients = threading.local()


def _gcs_client():
    """This thread's GCS client: Application Default Credentials, else anonymous for public buckets.

    The client honours STORAGE_EMULATOR_HOST (and is then anonymous by itself). One per thread:
    the client's HTTP session is not documented as thread-safe.
    """
    import google.auth.exceptions
    from google.cloud import storage

    cache = _clients.__dict__.setdefault("by_host", {})
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if host not in cache:
        try:
            cache[host] = storage.Client(project=None)
        except google.auth.exceptions.DefaultCredentialsError:
            cache[host] = storage.Client.create_anonymous_client()
    return cache[host]


@contextlib.contextmanager
def _gcs_errors(url):
    """Turn GCS client errors into a retry (5xx, 429, connection trouble) or a one-line UserError.

    The client's own retries are switched off (retry=None) so that _with_retries alone decides.
    """
    import requests
    from google.api_core import exceptions

    try:
        yield
    except requests.ConnectionError as err:
        if lookup := _dns_failure(err):
            raise UserError(f"cannot download {url}: {_reason(lookup)}") from None
        raise _TransientError(f"{type(err).__name__}: {err}") from None
    except (exceptions.ServerError, exceptions.TooManyRequests, requests.Timeout,
            requests.exceptions.ChunkedEncodingError) as err:
        raise _TransientError(f"{type(err).__name__}: {err}") from None
    except exceptions.GoogleAPICallError as err:
        raise UserError(f"cannot download {url}: {err.code} {err.message}") from None


def _dns_failure(err):
    """The socket.gaierror somewhere in what caused ERR (requests wraps urllib3 wrapping it), else None."""
    pending, seen = [err], set()
    while pending:
        cause = pending.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return cause
        pending += [cause.__cause__, cause.__context__, getattr(cause, "reason", None)]
        pending += [arg for arg in getattr(cause, "args", ()) if isinstance(arg, BaseException)]
    return None


def _gcs_fetch(url, partial, progress, deadline):
    """One attempt to complete PARTIAL from the GCS object URL, from where it stopped; checked by size and CRC32C."""
    bucket_name, blob_name = _split_gs_url(url)
    if not bucket_name or not blob_name:
        raise UserError(f"cannot download {url}: a gs:// URL needs a bucket and an object name")
    with _gcs_errors(url):
        blob = _gcs_client().bucket(bucket_name).get_blob(blob_name, retry=None, timeout=deadline.timeout())
        if blob is None:
            raise UserError(f"cannot download {url}: no such object")
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > blob.size:  # the object changed since the partial download began
            offset = 0
        with open(partial, "r+b" if offset else "wb") as out, _progress(url, blob.size, offset, progress) as bar:
            out.seek(offset)
            out.truncate()
            if offset < blob.size:
                def written(count):
                    bar.update(count)
                    deadline.add(count)

                blob.download_to_file(CallbackIOWrapper(written, out, "write"), start=offset, raw_download=True,
                                      checksum=None, retry=None, timeout=deadline.timeout())
            if out.tell() != blob.size:
                raise _TransientError(f"connection lost after {out.tell()} of {blob.size} bytes")
    # GCS's CRC32C covers the whole object, so it checks a resumed download as well as a fresh one.
    if blob.crc32c and _crc32c(partial) != blob.crc32c:
        partial.unlink()
        raise _TransientError("CRC32C mismatch with the object's; starting over")
    return True


def _crc32c(path):
    """PATH's CRC32C as GCS writes it: base64 of the big-endian checksum."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()
