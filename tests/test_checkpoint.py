"""The checkpoint stage against real servers: a local HTTP server, the GCS emulator and local files."""
import hashlib
import io
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from http_server import FileServer
from trainer import catalogue, checkpoint, download
from trainer.__main__ import main as cli_main
from trainer.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SAVED_VALUES = ([3.0, 4.0], 7)  # what the latest save holds; an earlier save holds other values


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(download, "RETRY_BASE_SECONDS", 0.001)


@pytest.fixture(scope="session")
def saved_dir(tmp_path_factory):
    """A real TF checkpoint folder: ckpt-1 (stale values), ckpt-2 (SAVED_VALUES) and the `checkpoint` state file."""
    import tensorflow as tf

    folder = tmp_path_factory.mktemp("saved")
    weights, step = tf.Variable([1.0, 2.0]), tf.Variable(1, dtype=tf.int64)
    saver = tf.train.Checkpoint(weights=weights, step=step)
    saver.save(str(folder / "ckpt"))
    weights.assign(SAVED_VALUES[0])
    step.assign(SAVED_VALUES[1])
    saver.save(str(folder / "ckpt"))
    return folder


@pytest.fixture(scope="session")
def archive_bytes(saved_dir):
    """saved_dir as a .tar.gz whose files sit under model/, as zoo archives nest them."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(saved_dir, arcname="model")
    return buffer.getvalue()


@pytest.fixture
def server(archive_bytes):
    with FileServer() as file_server:
        file_server.files["/zoo/ckpt.tar.gz"] = archive_bytes
        yield file_server


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def read_values(prefix):
    """The values a checkpoint prefix restores, read back with TensorFlow."""
    import tensorflow as tf

    weights, step = tf.Variable([0.0, 0.0]), tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(weights=weights, step=step).read(prefix).assert_existing_objects_matched()
    return weights.numpy().tolist(), int(step.numpy())


def write_tar(path, members):
    """A tar at PATH from (TarInfo, bytes or None) pairs, for archives no honest tool writes."""
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def fake_checkpoint_members(*prefixes):
    return [(member(f"{prefix}.{suffix}"), b"x") for prefix in prefixes for suffix in ("index", "data-00000-of-00001")]


def test_http_archive_restores_the_latest_save(server, cache):
    url = server.url("/zoo/ckpt.tar.gz")
    prefix = checkpoint.fetch_checkpoint(url, cache)
    key = checkpoint._cache_key(url, None)
    assert prefix == str(cache / key / "model" / "ckpt-2")
    assert read_values(prefix) == SAVED_VALUES
    assert sorted(path.name for path in cache.iterdir()) == [key]  # no download or staging folders left
    assert server.requests == [("/zoo/ckpt.tar.gz", None)]


def test_second_call_reuses_the_cache_without_a_request(server, cache, archive_bytes):
    url = server.url("/zoo/ckpt.tar.gz")
    digest = hashlib.sha256(archive_bytes).hexdigest()
    first = checkpoint.fetch_checkpoint(url, cache, sha256=digest, size=len(archive_bytes))
    second = checkpoint.fetch_checkpoint(url, cache, sha256=digest, size=len(archive_bytes))
    assert second == first
    assert len(server.requests) == 1


def test_cut_connection_resumes_with_a_range_request(server, cache, archive_bytes):
    server.faults["/zoo/ckpt.tar.gz"] = ["cut"]
    half = len(archive_bytes) // 2
    prefix = checkpoint.fetch_checkpoint(
        server.url("/zoo/ckpt.tar.gz"), cache, sha256=hashlib.sha256(archive_bytes).hexdigest(),
        size=len(archive_bytes),
    )
    assert server.requests == [("/zoo/ckpt.tar.gz", None), ("/zoo/ckpt.tar.gz", f"bytes={half}-")]
    assert read_values(prefix) == SAVED_VALUES


def test_rerun_after_giving_up_resumes_the_partial_file(server, cache, archive_bytes):
    server.faults["/zoo/ckpt.tar.gz"] = ["cut"] * download.RETRY_ATTEMPTS
    url, digest = server.url("/zoo/ckpt.tar.gz"), hashlib.sha256(archive_bytes).hexdigest()
    with pytest.raises(UserError, match=f"cannot download {url}: connection lost .*a rerun resumes"):
        checkpoint.fetch_checkpoint(url, cache, sha256=digest)
    received = sum(len(archive_bytes[int(r[6:-1]) if r else 0:]) // 2 for _, r in server.requests)
    prefix = checkpoint.fetch_checkpoint(url, cache, sha256=digest)
    assert server.requests[-1] == ("/zoo/ckpt.tar.gz", f"bytes={received}-")
    assert read_values(prefix) == SAVED_VALUES


def test_server_that_ignores_range_is_downloaded_again_from_the_start(server, cache, archive_bytes):
    server.faults["/zoo/ckpt.tar.gz"] = ["cut", "no-range"]
    prefix = checkpoint.fetch_checkpoint(
        server.url("/zoo/ckpt.tar.gz"), cache, sha256=hashlib.sha256(archive_bytes).hexdigest(),
    )
    assert [request[1] for request in server.requests] == [None, f"bytes={len(archive_bytes) // 2}-"]
    assert read_values(prefix) == SAVED_VALUES


def test_partial_file_longer_than_the_file_starts_over(server, cache, archive_bytes):
    url, digest = server.url("/zoo/ckpt.tar.gz"), hashlib.sha256(archive_bytes).hexdigest()
    downloads = cache / f"{checkpoint._cache_key(url, digest)}.download"
    downloads.mkdir(parents=True)
    (downloads / "ckpt.tar.gz.part").write_bytes(b"stale" * len(archive_bytes))  # as an older file would leave it
    prefix = checkpoint.fetch_checkpoint(url, cache, sha256=digest)
    assert [request[1] for request in server.requests] == [f"bytes={5 * len(archive_bytes)}-", None]  # 416, then all
    assert read_values(prefix) == SAVED_VALUES


def test_server_errors_are_retried(server, cache):
    server.faults["/zoo/ckpt.tar.gz"] = [500, 503]
    prefix = checkpoint.fetch_checkpoint(server.url("/zoo/ckpt.tar.gz"), cache)
    assert len(server.requests) == 3
    assert read_values(prefix) == SAVED_VALUES


def test_persistent_server_error_gives_up_naming_the_url(server, cache):
    server.faults["/zoo/ckpt.tar.gz"] = [500] * download.RETRY_ATTEMPTS
    url = server.url("/zoo/ckpt.tar.gz")
    with pytest.raises(UserError, match=f"cannot download {url}: HTTP 500 .*gave up after 5 attempts"):
        checkpoint.fetch_checkpoint(url, cache)
    assert len(server.requests) == download.RETRY_ATTEMPTS


@pytest.mark.parametrize("status, path", [(404, "/zoo/missing.tar.gz"), (403, "/zoo/ckpt.tar.gz")])
def test_http_client_errors_are_one_line_naming_the_url(server, cache, status, path):
    server.faults[path] = [status]
    url = server.url(path)
    with pytest.raises(UserError) as raised:
        checkpoint.fetch_checkpoint(url, cache)
    assert str(raised.value).startswith(f"cannot download {url}: HTTP {status} ")
    assert "\n" not in str(raised.value)
    assert len(server.requests) == 1  # not retried
    assert list(cache.iterdir()) == []


def test_connection_refused_is_one_line_naming_the_url(cache):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ckpt.tar.gz"
    with pytest.raises(UserError, match=f"^cannot download {url}: .*Connection refused") as raised:
        checkpoint.fetch_checkpoint(url, cache)
    assert "\n" not in str(raised.value)
    assert list(cache.iterdir()) == []


def test_sha256_mismatch_caches_nothing(server, cache):
    url = server.url("/zoo/ckpt.tar.gz")
    with pytest.raises(UserError, match=f"{url} failed verification: sha256 is [0-9a-f]{{64}}, the catalogue says 0+$"):
        checkpoint.fetch_checkpoint(url, cache, sha256="0" * 64)
    assert list(cache.iterdir()) == []
    checkpoint.fetch_checkpoint(url, cache)
    assert [request[1] for request in server.requests] == [None, None]  # downloaded afresh, not resumed


def test_malformed_sha256_is_refused(server, cache):
    with pytest.raises(UserError, match="the sha256 for .* must be 64 hex digits \\(quote it in YAML\\), not 0$"):
        checkpoint.fetch_checkpoint(server.url("/zoo/ckpt.tar.gz"), cache, sha256=0)
    assert server.requests == []


def test_size_mismatch_caches_nothing(server, cache, archive_bytes):
    with pytest.raises(UserError, match=f"size is {len(archive_bytes)} bytes, the catalogue says 5$"):
        checkpoint.fetch_checkpoint(server.url("/zoo/ckpt.tar.gz"), cache, size=5)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(
    "evil_member, message",
    [
        ((member("../evil"), b"boom"), "outside the destination"),
        ((member("/tmp/evil"), b"boom"), "has an absolute path"),
        ((member("model/evil", tarfile.SYMTYPE, "../../../evil"), None), "would link to .*outside the destination"),
        ((member("model/evil", tarfile.SYMTYPE, "/etc/passwd"), None), "is a link to an absolute path"),
        ((member("model/evil", tarfile.LNKTYPE, "../evil"), None), "would link to .*outside the destination"),
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out"],
)
def test_escaping_tar_members_are_refused(tmp_path, cache, evil_member, message):
    archive = write_tar(tmp_path / "evil.tar.gz", [*fake_checkpoint_members("model/ckpt-1"), evil_member])
    with pytest.raises(UserError, match=f"refusing to extract {archive}: .*{message}"):
        checkpoint.fetch_checkpoint(str(archive), cache)
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_escaping_zip_member_is_refused(tmp_path, cache):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        zip_file.writestr("ckpt-1.index", b"x")
        zip_file.writestr("../evil", b"boom")
    with pytest.raises(UserError, match=r"refusing to extract .*evil.zip: member '\.\./evil' would land outside"):
        checkpoint.fetch_checkpoint(str(archive), cache)
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("suffix, mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w")])
def test_file_url_tar_archives(saved_dir, tmp_path, cache, suffix, mode):
    archive = tmp_path / f"ckpt{suffix}"
    with tarfile.open(archive, mode) as tar:
        tar.add(saved_dir, arcname=".")
    prefix = checkpoint.fetch_checkpoint(archive.as_uri(), cache)
    assert Path(prefix).name == "ckpt-2"
    assert read_values(prefix) == SAVED_VALUES


def test_plain_path_zip_archive_relative_to_the_working_folder(saved_dir, tmp_path, cache, monkeypatch):
    with zipfile.ZipFile(tmp_path / "ckpt.zip", "w") as zip_file:
        for path in saved_dir.iterdir():
            zip_file.write(path, path.name)
    monkeypatch.chdir(tmp_path)
    prefix = checkpoint.fetch_checkpoint("ckpt.zip", cache)
    key = checkpoint._cache_key((tmp_path / "ckpt.zip").as_uri(), None)
    assert prefix == str(cache / key / "ckpt-2")
    assert read_values(prefix) == SAVED_VALUES


def test_missing_local_archive(tmp_path, cache):
    with pytest.raises(UserError, match="no such checkpoint archive: .*nothing.tar.gz"):
        checkpoint.fetch_checkpoint(str(tmp_path / "nothing.tar.gz"), cache)


def test_highest_step_wins_without_a_state_file(tmp_path, cache):
    members = fake_checkpoint_members("a/ckpt-9", "a/ckpt-10", "b/variables/variables", "checkpoint/ckpt-3")
    prefix = checkpoint.fetch_checkpoint(str(write_tar(tmp_path / "steps.tar.gz", members)), cache)
    assert prefix.endswith("/a/ckpt-10")


def test_state_file_names_the_prefix_even_with_a_foreign_absolute_path(tmp_path, cache):
    state = b'model_checkpoint_path: "/home/trainer/run/ckpt-9"\nall_model_checkpoint_paths: "ckpt-10"\n'
    members = [*fake_checkpoint_members("ckpt-9", "ckpt-10"), (member("checkpoint"), state)]
    prefix = checkpoint.fetch_checkpoint(str(write_tar(tmp_path / "state.tar.gz", members)), cache)
    assert Path(prefix).name == "ckpt-9"


def test_archive_without_a_checkpoint(tmp_path, cache):
    archive = write_tar(tmp_path / "empty.tar.gz", [(member("README"), b"hi")])
    with pytest.raises(UserError, match=r"empty.tar.gz holds no checkpoint \(no \*.index file\)"):
        checkpoint.fetch_checkpoint(str(archive), cache)
    assert list(cache.iterdir()) == []


def test_local_bare_prefix_and_folder_are_used_in_place(saved_dir, cache):
    assert checkpoint.fetch_checkpoint(str(saved_dir / "ckpt-1"), cache) == str(saved_dir / "ckpt-1")
    assert checkpoint.fetch_checkpoint(saved_dir.as_uri(), cache) == str(saved_dir / "ckpt-2")
    assert not cache.exists()
    with pytest.raises(UserError, match="no checkpoint at .*ckpt-5: expected .*ckpt-5.index"):
        checkpoint.fetch_checkpoint(str(saved_dir / "ckpt-5"), cache)


def test_http_bare_prefix(saved_dir, cache):
    with FileServer() as file_server:
        for path in saved_dir.glob("ckpt-2.*"):
            file_server.files[f"/run/{path.name}"] = path.read_bytes()
        prefix = checkpoint.fetch_checkpoint(file_server.url("/run/ckpt-2"), cache)
        assert sorted(file_server.requests) == [("/run/ckpt-2.data-00000-of-00001", None), ("/run/ckpt-2.index", None)]
    assert read_values(prefix) == SAVED_VALUES


def test_gcs_archive_and_bare_prefix(gcs_client, saved_dir, archive_bytes, cache):
    bucket = gcs_client.create_bucket("zoo-checkpoints")
    bucket.blob("vision/ckpt.tar.gz").upload_from_string(archive_bytes)
    for path in saved_dir.glob("ckpt-*"):
        bucket.blob(f"run/{path.name}").upload_from_filename(path)

    prefix = checkpoint.fetch_checkpoint(
        "gs://zoo-checkpoints/vision/ckpt.tar.gz", cache, sha256=hashlib.sha256(archive_bytes).hexdigest(),
    )
    assert Path(prefix).relative_to(cache).parts[1:] == ("model", "ckpt-2")
    assert read_values(prefix) == SAVED_VALUES

    prefix = checkpoint.fetch_checkpoint("gs://zoo-checkpoints/run/ckpt-1", cache)
    assert sorted(path.name for path in Path(prefix).parent.iterdir()) == [
        ".complete.json", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
    ]

    with pytest.raises(UserError, match="cannot download gs://zoo-checkpoints/vision/nothing.tar.gz: no such object"):
        checkpoint.fetch_checkpoint("gs://zoo-checkpoints/vision/nothing.tar.gz", cache)


def test_gcs_download_resumes_a_partial_file(gcs_client, archive_bytes, cache):
    gcs_client.create_bucket("zoo-resume").blob("ckpt.tar.gz").upload_from_string(archive_bytes)
    url = "gs://zoo-resume/ckpt.tar.gz"
    digest = hashlib.sha256(archive_bytes).hexdigest()
    downloads = cache / f"{checkpoint._cache_key(url, digest)}.download"
    downloads.mkdir(parents=True)
    (downloads / "ckpt.tar.gz.part").write_bytes(archive_bytes[:100])  # as a run cut off would leave it
    prefix = checkpoint.fetch_checkpoint(url, cache, sha256=digest)
    assert read_values(prefix) == SAVED_VALUES


def test_default_cache_dir_is_checkpoint_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("CHECKPOINT_CACHE", str(tmp_path / "env-cache"))
    prefix = checkpoint.fetch_checkpoint(server.url("/zoo/ckpt.tar.gz"))
    assert Path(prefix).is_relative_to(tmp_path / "env-cache")


def test_unsupported_scheme(cache):
    with pytest.raises(UserError, match="unsupported checkpoint URL ftp://host/ckpt.tar.gz"):
        checkpoint.fetch_checkpoint("ftp://host/ckpt.tar.gz", cache)


def test_cli_prints_the_prefix_last(server, cache):
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "checkpoint", "--url", server.url("/zoo/ckpt.tar.gz"), "--cache-dir", cache],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    prefix = result.stdout.splitlines()[-1]
    assert Path(prefix).name == "ckpt-2" and Path(prefix + ".index").is_file()


def test_checkpoint_stage_does_not_import_tensorflow():
    code = "import sys, trainer.checkpoint; print(sorted(m for m in sys.modules if m.startswith('tensorflow')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"


def test_cli_error_is_one_line(server, cache, capsys):
    url = server.url("/zoo/missing.tar.gz")
    assert cli_main(["checkpoint", "--url", url, "--cache-dir", str(cache)]) == 1
    assert capsys.readouterr().err == f"error: cannot download {url}: HTTP 404 Not Found\n"


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(catalogue, "MODELS_DIR", tmp_path / "models")
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def entry_with(checkpoint):
    """The demo model's catalogue entry with CHECKPOINT (YAML text) as its `checkpoint:`."""
    return (REPO / "configs" / "models" / "demo.yaml").read_text().replace("checkpoint: null\n", checkpoint)


def test_cli_model_takes_url_and_checks_from_the_catalogue(server, archive_bytes, models_dir, cache, capsys):
    (models_dir / "tiny.yaml").write_text(entry_with(
        f"checkpoint:\n  url: {server.url('/zoo/ckpt.tar.gz')}\n"
        f"  sha256: {hashlib.sha256(archive_bytes).hexdigest()}\n  size: {len(archive_bytes)}\n  modules: [all]\n"
    ))
    assert cli_main(["checkpoint", "--model", "tiny", "--cache-dir", str(cache)]) == 0
    assert Path(capsys.readouterr().out.splitlines()[-1]).name == "ckpt-2"

    # the same URL, but a hash the cached entry was not checked against
    (models_dir / "corrupt.yaml").write_text(entry_with(
        f"checkpoint:\n  url: {server.url('/zoo/ckpt.tar.gz')}\n  sha256: {'f' * 64}\n  size: null\n"
    ))
    assert cli_main(["checkpoint", "--model", "corrupt", "--cache-dir", str(cache)]) == 1
    assert "failed verification: sha256 is" in capsys.readouterr().err


def test_cli_model_without_checkpoint_prints_an_empty_line(models_dir, cache, capsys):
    (models_dir / "scratch.yaml").write_text(entry_with("checkpoint: null\n"))
    assert cli_main(["checkpoint", "--model", "scratch", "--cache-dir", str(cache)]) == 0
    output = capsys.readouterr()
    assert output.out == "\n"
    assert "model 'scratch' has no pretrained checkpoint: it trains from scratch" in output.err
    assert not cache.exists()


@pytest.fixture(scope="session")
def two_step_tar(saved_dir):
    """(a plain .tar of saved_dir with ckpt-1 first and ckpt-2 last, the byte offset where ckpt-2's files begin)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(saved_dir.glob("ckpt-1.*")):
            tar.add(path, path.name)
        cut = buffer.tell()  # an archive cut here is a well-formed tar of ckpt-1 alone, bar its end marker
        for path in sorted(saved_dir.glob("ckpt-2.*")):
            tar.add(path, path.name)
    return buffer.getvalue(), cut


def test_body_cut_between_tar_members_without_a_length_is_fetched_again(cache, two_step_tar):
    data, cut = two_step_tar
    with FileServer() as file_server:
        file_server.files["/ckpt.tar"] = data
        file_server.faults["/ckpt.tar"] = [("no-length", cut)]
        prefix = checkpoint.fetch_checkpoint(file_server.url("/ckpt.tar"), cache)
        assert file_server.requests == [("/ckpt.tar", None)] * 2  # the cut body was deleted, then fetched whole
    assert Path(prefix).name == "ckpt-2"  # not ckpt-1, the newest step the cut archive held
    assert read_values(prefix) == SAVED_VALUES


def test_body_always_cut_without_a_length_caches_nothing(cache, two_step_tar):
    data, cut = two_step_tar
    with FileServer() as file_server:
        file_server.files["/ckpt.tar"] = data
        file_server.faults["/ckpt.tar"] = [("no-length", cut)] * download.RETRY_ATTEMPTS
        url = file_server.url("/ckpt.tar")
        with pytest.raises(UserError, match=f"^cannot download {url}: incomplete or corrupt body \\(the server sent "
                                            f"no length\\): {url} is incomplete or corrupt: the tar ends without its "
                                            "end-of-archive marker \\(gave up after 5 attempts"):
            checkpoint.fetch_checkpoint(url, cache)
    assert list(cache.iterdir()) == []


def test_gzip_body_cut_without_a_length_is_fetched_again(server, cache, archive_bytes):
    server.faults["/zoo/ckpt.tar.gz"] = [("no-length", len(archive_bytes) - 4)]  # only gzip's length trailer is lost
    prefix = checkpoint.fetch_checkpoint(server.url("/zoo/ckpt.tar.gz"), cache)
    assert server.requests == [("/zoo/ckpt.tar.gz", None)] * 2
    assert read_values(prefix) == SAVED_VALUES


def test_chunked_body_cut_before_its_last_chunk_resumes(server, cache, archive_bytes):
    server.faults["/zoo/ckpt.tar.gz"] = ["chunked-cut"]
    prefix = checkpoint.fetch_checkpoint(server.url("/zoo/ckpt.tar.gz"), cache)
    assert server.requests == [("/zoo/ckpt.tar.gz", None), ("/zoo/ckpt.tar.gz", f"bytes={len(archive_bytes) // 2}-")]
    assert read_values(prefix) == SAVED_VALUES


def test_complete_body_without_a_length_is_accepted(server, cache, archive_bytes):
    server.faults["/zoo/ckpt.tar.gz"] = [("no-length", len(archive_bytes))]
    prefix = checkpoint.fetch_checkpoint(server.url("/zoo/ckpt.tar.gz"), cache)
    assert len(server.requests) == 1
    assert read_values(prefix) == SAVED_VALUES


def test_gcs_resume_onto_a_corrupt_partial_file_is_caught_by_crc32c_and_starts_over(gcs_client, archive_bytes, cache,
                                                                                    capsys):
    gcs_client.create_bucket("zoo-crc").blob("ckpt.tar.gz").upload_from_string(archive_bytes)
    url = "gs://zoo-crc/ckpt.tar.gz"
    downloads = cache / f"{checkpoint._cache_key(url, None)}.download"
    downloads.mkdir(parents=True)
    (downloads / "ckpt.tar.gz.part").write_bytes(b"\0" * 100)  # the right length, the wrong bytes
    prefix = checkpoint.fetch_checkpoint(url, cache)
    assert f"{url}: CRC32C mismatch with the object's; starting over" in capsys.readouterr().err
    assert read_values(prefix) == SAVED_VALUES


def test_sharing_another_checkpoint_of_the_same_size_replaces_the_copy(tmp_path):
    """config copies the checkpoint into RESULT_DIR/pretrained for the workers; a different checkpoint under the
    same file names and sizes (another --checkpoint-url, a rebuilt archive) must not keep the old copy."""
    from trainer import config

    def checkpoint_files(folder, content):
        folder.mkdir()
        for suffix in ("index", "data-00000-of-00001"):
            (folder / f"ckpt-7.{suffix}").write_bytes(content + suffix.encode())
        return folder / "ckpt-7"

    shared = tmp_path / "result" / "pretrained"
    first, second = checkpoint_files(tmp_path / "a", b"AAAA"), checkpoint_files(tmp_path / "b", b"BBBB")
    assert config._share_checkpoint(str(first), shared) == str(shared / "ckpt-7")
    kept = (shared / "ckpt-7.index").stat().st_mtime_ns
    config._share_checkpoint(str(first), shared)  # the same checkpoint again: nothing copied
    assert (shared / "ckpt-7.index").stat().st_mtime_ns == kept
    assert config._share_checkpoint(str(second), shared) == str(shared / "ckpt-7")
    assert {path.name: path.read_bytes() for path in shared.iterdir()} == {
        "ckpt-7.index": b"BBBBindex", "ckpt-7.data-00000-of-00001": b"BBBBdata-00000-of-00001"}
