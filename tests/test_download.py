"""trainer/download.py's limits against local servers: the overall deadline, DNS failures, malformed headers."""
import re
import time

import pytest

from http_server import FileServer
from trainer import download
from trainer.errors import UserError


@pytest.fixture
def server():
    with FileServer() as file_server:
        yield file_server


@pytest.fixture
def short_deadline(monkeypatch):
    """A deadline of 0.5 s plus 1 s per 1000 bytes received (the defaults are 300 s and 100 KiB/s)."""
    monkeypatch.setattr(download, "RETRY_BASE_SECONDS", 0.001)
    monkeypatch.setenv(download.DEADLINE_ENV, "0.5")
    monkeypatch.setenv(download.MIN_RATE_ENV, "1000")


def timed_failure(url, target):
    started = time.monotonic()
    with pytest.raises(UserError) as raised:
        download.download(url, target, progress=False)
    return str(raised.value), time.monotonic() - started


def test_a_trickling_server_is_given_up_at_the_deadline_naming_the_url(server, short_deadline, tmp_path):
    server.files["/slow.bin"] = bytes(400)
    server.faults["/slow.bin"] = [("slow", 2, 0.05)]  # 40 bytes a second: 10 s for the file
    url = server.url("/slow.bin")
    message, elapsed = timed_failure(url, tmp_path / "slow.bin")
    assert 0.5 <= elapsed < 2.5, elapsed
    assert message.startswith(f"cannot download {url}: too slow, ") and "\n" not in message
    assert message.endswith("(the deadline is 0.5 s plus 1 s per 1000 bytes received; "
                            "TRAINER_DOWNLOAD_DEADLINE_SECONDS and TRAINER_DOWNLOAD_MIN_BYTES_PER_SECOND change it; "
                            "a rerun resumes)")
    assert not (tmp_path / "slow.bin").exists()
    assert 0 < (tmp_path / "slow.bin.part").stat().st_size < 400  # kept for a rerun
    assert len(server.requests) == 1


def test_a_stalled_server_is_given_up_at_the_deadline(server, short_deadline, tmp_path):
    """Bytes stop coming but the connection stays open: the socket timeout shrinks to what the deadline leaves."""
    server.files["/stall.bin"] = bytes(10_000)
    server.faults["/stall.bin"] = [("stall", 100)] * 5
    url = server.url("/stall.bin")
    message, elapsed = timed_failure(url, tmp_path / "stall.bin")
    assert elapsed < 2.5, elapsed  # each attempt's wait is cut to what is left, not HTTP_TIMEOUT_SECONDS (60)
    assert re.match(rf"cannot download {url}: "
                    r"(too slow, \d+ bytes in|connection lost after \d+ bytes \(TimeoutError\))", message), message


def test_the_deadline_grows_with_the_bytes_received(server, short_deadline, tmp_path):
    """A file far over what 0.5 s allows comes whole, at a rate above the minimum."""
    server.files["/big.bin"] = bytes(range(256)) * 8192  # 2 MiB
    server.faults["/big.bin"] = [("slow", 64 * 1024, 0.02)]  # about 3 MB/s, over 0.6 s
    target = download.download(server.url("/big.bin"), tmp_path / "big.bin", progress=False)
    assert target.read_bytes() == server.files["/big.bin"]


@pytest.mark.parametrize("value", ["abc", "0", "-3", "inf", "nan"])
def test_a_bad_deadline_setting_is_one_line(server, tmp_path, monkeypatch, value):
    monkeypatch.setenv(download.DEADLINE_ENV, value)
    server.files["/a.bin"] = b"abc"
    with pytest.raises(UserError, match=f"^{download.DEADLINE_ENV} must be a positive number, not '{value}'$"):
        download.download(server.url("/a.bin"), tmp_path / "a.bin")
    assert server.requests == []


def count_calls(monkeypatch, name):
    calls = []
    original = getattr(download, name)

    def counted(*args):
        calls.append(args[0])
        return original(*args)

    monkeypatch.setattr(download, name, counted)
    return calls


def test_an_unresolvable_http_host_stops_at_once(tmp_path, monkeypatch):
    """`.invalid` never resolves (RFC 6761): the resolver answers without asking the network."""
    calls = count_calls(monkeypatch, "_http_fetch")
    message, _ = timed_failure("http://nonexistent.invalid/x.jpg", tmp_path / "x.jpg")
    assert calls == ["http://nonexistent.invalid/x.jpg"]
    assert message.startswith("cannot download http://nonexistent.invalid/x.jpg: DNS lookup failed (")
    assert list(tmp_path.iterdir()) == []


def test_an_unresolvable_gcs_host_stops_at_once(tmp_path, monkeypatch):
    """The GCS client wraps the lookup failure in requests' ConnectionError (otherwise retried)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://nonexistent.invalid:4443")
    monkeypatch.setattr(download, "RETRY_BASE_SECONDS", 0.001)
    calls = count_calls(monkeypatch, "_gcs_fetch")
    message, _ = timed_failure("gs://bucket/x.jpg", tmp_path / "x.jpg")
    assert calls == ["gs://bucket/x.jpg"]
    assert message.startswith("cannot download gs://bucket/x.jpg: DNS lookup failed (") and "\n" not in message


@pytest.mark.parametrize("length", ["12abc", "-5", "", "1e3", "12 34"])
def test_a_malformed_content_length_is_one_line(server, tmp_path, length):
    server.files["/a.bin"] = b"abcdefghijkl"
    server.faults["/a.bin"] = [("length", length)]
    url = server.url("/a.bin")
    message, _ = timed_failure(url, tmp_path / "a.bin")
    assert message == f"cannot download {url}: the server sent an invalid Content-Length {length!r}"
    assert len(server.requests) == 1


@pytest.mark.parametrize("url", ["http://127.0.0.1:80a/x", "http://[::1/x",
                                 "http://127.0.0.1/\u00e9", "http://127.0.0.1/a b\x7f"])
def test_a_malformed_url_is_one_line(tmp_path, url):
    message, _ = timed_failure(url, tmp_path / "x")
    assert message.startswith(f"cannot download {url!r}: invalid URL (") and "\n" not in message


@pytest.mark.parametrize("url", ["gs://bucket", "gs://bucket/", "gs:///object"])
def test_a_gcs_url_without_an_object_is_one_line(tmp_path, url):
    message, _ = timed_failure(url, tmp_path / "x")
    assert message == f"cannot download {url}: a gs:// URL needs a bucket and an object name"
