"""`python -m cloud` against real local components: the GCS emulator and a fake Vertex AI / Logging REST server.

The Vertex client is the real google-cloud-aiplatform JobServiceClient over REST,
pointed at tests/fake_vertex.py; storage is the real google-cloud-storage client
pointed at fake-gcs-server. Requests are checked as the server received them.
"""
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from google.cloud import aiplatform_v1
from google.protobuf import json_format

from cloud.__main__ import main as cloud_main
from fake_vertex import FakeVertex
from trainer.sample import make_sample_bucket

REPO = Path(__file__).resolve().parent.parent
PROJECT, REGION = "proj", "europe-west4"
IMAGE = "europe-west4-docker.pkg.dev/proj/repo/trainer"
JOBS_PATH = f"/v1/projects/{PROJECT}/locations/{REGION}/customJobs"


@pytest.fixture
def vertex(monkeypatch, tmp_path):
    """The fake Vertex AI + Logging server, with project and region set the way a user would."""
    with FakeVertex() as fake:
        monkeypatch.setenv("VERTEX_API_ENDPOINT", fake.url())
        monkeypatch.setenv("LOGGING_API_ENDPOINT", fake.url())
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
        monkeypatch.setenv("GOOGLE_CLOUD_REGION", REGION)
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
        monkeypatch.chdir(tmp_path)  # submit writes runs/jobs/RUN.yaml and looks for dist/ here
        yield fake


@pytest.fixture(scope="module")
def local_bucket(tmp_path_factory):
    """A small exported Cloud Annotations folder: 8 images and _annotations.json."""
    path = tmp_path_factory.mktemp("local-bucket")
    make_sample_bucket(path, num_images=8)
    return path


def new_bucket(gcs_client):
    return gcs_client.create_bucket(f"b-{uuid.uuid4().hex[:12]}").name


def stage(local_dir, destination, capsys):
    assert cloud_main(["stage", str(local_dir), destination]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def submit_argv(bucket, *extra):
    return ["submit", str(REPO / "configs/jobs/gpu.yaml"), "--data", f"gs://{bucket}/kangaroo",
            "--output", f"gs://{bucket}/runs", "--image", IMAGE, "--run-name", "r1", *extra]


# stage --------------------------------------------------------------------------------------------------------------

def test_stage_uploads_then_skips_unchanged_then_uploads_only_a_changed_file(gcs_client, local_bucket, tmp_path,
                                                                             capsys):
    bucket = new_bucket(gcs_client)
    folder = tmp_path / "export"
    shutil.copytree(local_bucket, folder)
    (folder / ".DS_Store").write_bytes(b"finder litter")

    assert stage(folder, f"gs://{bucket}/data", capsys).endswith("9 uploaded, 0 already there")
    names = {blob.name for blob in gcs_client.list_blobs(bucket)}
    assert names == {f"data/{path.name}" for path in local_bucket.iterdir()}
    generations = {blob.name: blob.generation for blob in gcs_client.list_blobs(bucket)}

    assert stage(folder, f"gs://{bucket}/data", capsys).endswith("0 uploaded, 9 already there")

    changed = folder / "sample-0002.jpg"
    changed.write_bytes(changed.read_bytes() + b"\0")
    assert stage(folder, f"gs://{bucket}/data", capsys).endswith("1 uploaded, 8 already there")
    regenerated = {blob.name for blob in gcs_client.list_blobs(bucket)
                   if blob.generation != generations[blob.name]}
    assert regenerated == {"data/sample-0002.jpg"}
    assert gcs_client.bucket(bucket).blob("data/sample-0002.jpg").download_as_bytes() == changed.read_bytes()


def test_stage_refuses_a_folder_without_annotations(gcs_client, tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(b"jpeg")
    assert cloud_main(["stage", str(tmp_path), f"gs://{new_bucket(gcs_client)}/data"]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path} has no _annotations.json: expected a folder exported " \
                                      "from Cloud Annotations\n"


# submit -------------------------------------------------------------------------------------------------------------

def test_submit_checks_the_bucket_then_creates_the_job(gcs_client, local_bucket, vertex, capsys):
    bucket = new_bucket(gcs_client)
    stage(local_bucket, f"gs://{bucket}/kangaroo", capsys)

    assert cloud_main(submit_argv(bucket, "--model", "demo", "--steps", "300")) == 0
    out, err = capsys.readouterr()
    assert f"checked gs://{bucket}/kangaroo: detection, 8 images" in err

    [(method, path, body)] = vertex.requests
    assert (method, path) == ("POST", JOBS_PATH)
    sent = json_format.MessageToDict(json_format.ParseDict(body, aiplatform_v1.CustomJob.pb()()))
    assert sent["displayName"] == "r1"
    container = sent["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    assert container == {
        "imageUri": f"{IMAGE}:gpu",
        "args": ["300"],
        "env": [{"name": "DATA_DIR", "value": f"/gcs/{bucket}/kangaroo"},
                {"name": "RESULT_DIR", "value": f"/gcs/{bucket}/runs/r1"},
                {"name": "MODEL", "value": "demo"}],
    }
    assert sent["jobSpec"]["baseOutputDirectory"] == {"outputUriPrefix": f"gs://{bucket}/runs/r1"}
    written = yaml.safe_load(Path("runs/jobs/r1.yaml").read_text())  # what the printed gcloud command would send
    assert json_format.ParseDict(written, aiplatform_v1.CustomJobSpec.pb()()) == \
        json_format.ParseDict(body["jobSpec"], aiplatform_v1.CustomJobSpec.pb()())

    job_id = next(iter(vertex.jobs))
    assert f"job:         {job_id} (r1)" in out
    assert "state:       JOB_STATE_PENDING" in out
    assert (f"console:     https://console.cloud.google.com/vertex-ai/locations/{REGION}/training/{job_id}"
            f"?project={PROJECT}") in out
    assert f"tensorboard: python -m cloud tensorboard gs://{bucket}/runs/r1/model" in out


@pytest.mark.parametrize("annotations, message", [
    (b"{not json", "_annotations.json is not valid JSON"),
    (json.dumps({"version": "1.0", "type": "segmentation", "labels": [], "annotations": {}}).encode(),
     "_annotations.json has type 'segmentation'; expected 'localization' or 'classification'"),
    (json.dumps({"version": "1.0", "type": "localization", "labels": ["cat"],
                 "annotations": {"gone.jpg": [{"x": 0.1, "y": 0.1, "x2": 0.5, "y2": 0.5, "label": "cat"}]}}).encode(),
     "none of the 1 usable annotated images is in the bucket (gone.jpg)"),
    (None, "has no _annotations.json"),
])
def test_submit_stops_on_a_bucket_that_cannot_train(gcs_client, vertex, capsys, annotations, message):
    bucket = new_bucket(gcs_client)
    gcs_client.bucket(bucket).blob("kangaroo/a.jpg").upload_from_string(b"jpeg")
    if annotations is not None:
        gcs_client.bucket(bucket).blob("kangaroo/_annotations.json").upload_from_string(annotations)

    assert cloud_main(submit_argv(bucket)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: gs://{bucket}/kangaroo") and message in err and err.count("\n") == 1
    assert vertex.requests == []


def test_submit_warns_about_missing_images_but_submits(gcs_client, local_bucket, vertex, capsys):
    bucket = new_bucket(gcs_client)
    stage(local_bucket, f"gs://{bucket}/kangaroo", capsys)
    gcs_client.bucket(bucket).blob("kangaroo/sample-0001.jpg").delete()

    assert cloud_main(submit_argv(bucket)) == 0
    assert "warning: 1 of 8 annotated images are not in" in capsys.readouterr().err
    assert [request[:2] for request in vertex.requests] == [("POST", JOBS_PATH)]


def test_submit_uploads_the_sdist_for_the_python_package_route(gcs_client, local_bucket, vertex, capsys):
    bucket = new_bucket(gcs_client)
    stage(local_bucket, f"gs://{bucket}/kangaroo", capsys)
    Path("dist").mkdir()
    Path("dist/ca_detector_trainer-0.1.0.tar.gz").write_bytes(b"sdist bytes")
    argv = submit_argv(bucket)
    argv[1] = str(REPO / "configs/jobs/python-package.yaml")

    assert cloud_main(argv) == 0
    package = "runs/r1/package/ca_detector_trainer-0.1.0.tar.gz"
    assert gcs_client.bucket(bucket).blob(package).download_as_bytes() == b"sdist bytes"
    [(_, _, body)] = vertex.requests
    container = body["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]
    assert {"name": "PACKAGE", "value": f"/gcs/{bucket}/{package}"} in container["env"]


# status, cancel, list, logs -----------------------------------------------------------------------------------------

def test_status_cancel_and_list_call_the_job_routes(vertex, capsys):
    job_id = vertex.add_job(PROJECT, REGION, "r7")

    assert cloud_main(["status", job_id]) == 0
    out = capsys.readouterr().out
    assert f"job:         {job_id} (r7)" in out and "state:       JOB_STATE_RUNNING" in out
    assert "tensorboard: python -m cloud tensorboard gs://out/runs/r7/model" in out

    assert cloud_main(["cancel", f"projects/other/locations/us-east1/customJobs/{job_id}"]) == 1
    assert capsys.readouterr().err.startswith(f"error: not found: CustomJob {job_id} not found")
    assert cloud_main(["cancel", job_id]) == 0
    assert cloud_main(["list"]) == 0
    listed = capsys.readouterr().out.splitlines()[-1].split()
    assert listed[:2] == [job_id, "JOB_STATE_CANCELLING"] and listed[-1] == "r7"

    assert [(method, path, body) for method, path, body in vertex.requests] == [
        ("GET", f"{JOBS_PATH}/{job_id}", None),
        ("POST", f"/v1/projects/other/locations/us-east1/customJobs/{job_id}:cancel", {}),
        ("POST", f"{JOBS_PATH}/{job_id}:cancel", {}),
        ("GET", JOBS_PATH, None),
    ]


def test_logs_prints_entries_until_the_job_ends(vertex, capsys):
    job_id = vertex.add_job(PROJECT, REGION, "r8")
    vertex.states[job_id] = ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    vertex.log_entries = [
        {"insertId": "1", "timestamp": "2026-11-23T12:01:00Z", "severity": "INFO", "textPayload": "prepare: 8 images\n",
         "labels": {"ml.googleapis.com/task_name": "workerpool0-0"}},
        {"insertId": "2", "timestamp": "2026-11-23T12:02:00Z", "severity": "INFO",
         "jsonPayload": {"message": "CACLI-TRAINING-SUCCESS"}, "labels": {"ml.googleapis.com/task_name": "workerpool0-0"}},
    ]

    assert cloud_main(["logs", job_id, "--interval", "0.01"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2026-11-23T12:01:00Z [workerpool0-0] INFO prepare: 8 images",
        "2026-11-23T12:02:00Z [workerpool0-0] INFO CACLI-TRAINING-SUCCESS",
        f"job {job_id} ended: JOB_STATE_SUCCEEDED",
    ]
    log_queries = [body for method, path, body in vertex.requests if path == "/v2/entries:list"]
    assert len(log_queries) == 2
    assert log_queries[0] == {
        "resourceNames": [f"projects/{PROJECT}"],
        "filter": f'resource.type="ml_job" AND resource.labels.job_id="{job_id}" '
                  'AND timestamp>="2026-11-23T12:00:00+00:00"',
        "orderBy": "timestamp asc", "pageSize": 1000}
    assert 'timestamp>="2026-11-23T12:02:00Z"' in log_queries[1]["filter"]


def log_line(insert_id, second, message, task="workerpool0-0"):
    return {"insertId": insert_id, "timestamp": f"2026-11-23T12:05:{second:02d}Z", "severity": "INFO",
            "textPayload": message + "\n", "labels": {"ml.googleapis.com/task_name": task}}


def test_logs_wait_for_lines_ingested_after_the_job_ended(vertex, capsys):
    """Cloud Logging's lag: the state is final at the 2nd poll; every replica's marker comes at the 3rd and 4th."""
    job_id = vertex.add_job(PROJECT, REGION, "r9")
    vertex.states[job_id] = ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    vertex.log_entries = [log_line("1", 1, "train: step 10/20"), log_line("2", 2, "train: step 10/20", "workerpool1-0")]
    vertex.late_log_entries = {3: [log_line("3", 3, "CACLI-TRAINING-SUCCESS", "workerpool1-0")],
                               4: [log_line("4", 4, "CACLI-TRAINING-SUCCESS"), log_line("5", 5, "CACLI-CONVERSION-FAILED")]}

    assert cloud_main(["logs", job_id, "--interval", "0.01", "--grace", "600"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "2026-11-23T12:05:01Z [workerpool0-0] INFO train: step 10/20",
        "2026-11-23T12:05:02Z [workerpool1-0] INFO train: step 10/20",
        "2026-11-23T12:05:03Z [workerpool1-0] INFO CACLI-TRAINING-SUCCESS",
        "2026-11-23T12:05:04Z [workerpool0-0] INFO CACLI-TRAINING-SUCCESS",
        "2026-11-23T12:05:05Z [workerpool0-0] INFO CACLI-CONVERSION-FAILED",
        f"job {job_id} ended: JOB_STATE_SUCCEEDED",
    ]
    # 2 polls while it ran, 2 that brought the late lines, 1 that found nothing new after every marker
    assert vertex.log_queries == 5
    assert [path for method, path, body in vertex.requests].count(f"{JOBS_PATH}/{job_id}") == 2


def test_logs_of_a_job_without_a_marker_stop_after_the_grace_period(vertex, capsys):
    job_id = vertex.add_job(PROJECT, REGION, "r10", state="JOB_STATE_CANCELLED")
    vertex.late_log_entries = {2: [log_line("1", 1, "train: SIGTERM: saved ckpt-10")]}

    started = time.monotonic()
    assert cloud_main(["logs", job_id, "--interval", "0.05", "--grace", "0.5"]) == 1
    waited = time.monotonic() - started
    assert capsys.readouterr().out.splitlines() == [
        "2026-11-23T12:05:01Z [workerpool0-0] INFO train: SIGTERM: saved ckpt-10",
        f"job {job_id} ended: JOB_STATE_CANCELLED",
    ]
    assert 0.5 <= waited < 5  # the grace period counts from the last new line
    assert vertex.log_queries >= 3  # it kept polling after the final state


# errors -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, message", [
    (403, "error: permission denied: fake permission_denied for"),
    (404, "error: not found: fake not_found for"),
    (429, "error: quota exceeded: fake resource_exhausted for"),
])
def test_google_api_errors_are_one_line(vertex, capsys, status, message):
    vertex.errors = [status]
    assert cloud_main(["status", "123"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(message) and err.count("\n") == 1


def test_a_quota_error_at_submit_is_one_line(gcs_client, local_bucket, vertex, capsys):
    bucket = new_bucket(gcs_client)
    stage(local_bucket, f"gs://{bucket}/kangaroo", capsys)
    vertex.errors = [429]
    assert cloud_main(submit_argv(bucket)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: quota exceeded: fake resource_exhausted for {JOBS_PATH} (request more quota for this " \
                      "machine or accelerator in this region, or use another region or spec)"


def test_missing_credentials_are_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("VERTEX_API_ENDPOINT", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    assert cloud_main(["list", "--project", PROJECT, "--region", REGION]) == 1
    assert capsys.readouterr().err == ("error: no Google credentials found: run `gcloud auth application-default "
                                       "login` or set GOOGLE_APPLICATION_CREDENTIALS\n")


def test_cloud_never_imports_tensorflow():
    """The user's machine may have only the `cloud` extra installed."""
    probe = ("import sys, cloud.__main__, cloud.submit, cloud.stage, cloud.jobs, cloud.logs, cloud.tensorboard; "
             "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'official')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# tensorboard --------------------------------------------------------------------------------------------------------

def test_tensorboard_serves_a_local_logdir_and_prints_the_url(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logdir, log = tmp_path / "model", tmp_path / "tensorboard.log"
    logdir.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "cloud", "tensorboard", str(logdir), "--port", str(port)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    try:
        assert process.stdout.readline() == f"TensorBoard on {logdir}: http://localhost:{port}/ (Ctrl-C stops it)\n"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, log.read_text()[-2000:]
                time.sleep(0.5)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_submit_pre_check_warns_like_prepare_and_strict_refuses(gcs_client, vertex, capsys, tmp_path):
    """The bucket from test_prepare's warnings test: the same warnings from a listing (MD5s, no image sizes)."""
    from test_prepare import WARNINGS_BUCKET_WARNINGS, warnings_bucket

    local = tmp_path / "local"
    local.mkdir()
    warnings_bucket(local)
    bucket = new_bucket(gcs_client)
    stage(local, f"gs://{bucket}/kangaroo", capsys)

    assert cloud_main(submit_argv(bucket, "--model", "demo", "--strict")) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"warning: {w['message']}" for w in WARNINGS_BUCKET_WARNINGS] + [
        f"error: gs://{bucket}/kangaroo: --strict: 5 dataset warning(s), listed above; not submitting"]
    assert vertex.requests == []

    assert cloud_main(submit_argv(bucket, "--model", "demo")) == 0
    assert f"gs://{bucket}/kangaroo: detection, 15 images, 132 boxes, 2 labels, 0 items skipped or repaired by validation, " \
           "5 warnings" in capsys.readouterr().err
    assert [request[:2] for request in vertex.requests] == [("POST", JOBS_PATH)]


@pytest.mark.parametrize("content, message", [
    (b"same bytes", "all 2 usable images in gs://{bucket}/kangaroo are byte-identical copies of one image: a model "
                    "cannot learn or be evaluated on one picture; add different images"),
    (b"", "gs://{bucket}/kangaroo: none of the 2 usable annotated images is in the bucket; 2 are empty files "
          "(a.jpg, b.jpg)"),
])
def test_submit_refuses_a_bucket_of_copies_of_one_image_or_of_empty_files(gcs_client, vertex, capsys, content,
                                                                            message):
    bucket = new_bucket(gcs_client)
    entry = [{"x": 0.1, "y": 0.1, "x2": 0.5, "y2": 0.5, "label": "cat"}]
    for key in ("a.jpg", "b.jpg"):
        gcs_client.bucket(bucket).blob(f"kangaroo/{key}").upload_from_string(content)
    gcs_client.bucket(bucket).blob("kangaroo/_annotations.json").upload_from_string(json.dumps(
        {"version": "1.0", "labels": ["cat"], "annotations": {"a.jpg": entry, "b.jpg": entry}}))

    assert cloud_main(submit_argv(bucket)) == 1
    assert capsys.readouterr().err == f"error: {message.format(bucket=bucket)}\n"
    assert vertex.requests == []


def test_submit_checks_a_classification_bucket_and_refuses_a_detection_model_for_it(gcs_client, vertex, capsys,
                                                                                    tmp_path):
    from trainer.sample import make_sample_bucket

    make_sample_bucket(tmp_path / "local", 12, kind="classification")
    bucket = new_bucket(gcs_client)
    stage(tmp_path / "local", f"gs://{bucket}/kangaroo", capsys)

    assert cloud_main(submit_argv(bucket, "--model", "demo")) == 0
    assert f"gs://{bucket}/kangaroo: classification, 12 images, 3 labels, 0 items skipped or repaired by " \
           "validation, 4 warnings" in capsys.readouterr().err  # few_images x3 and val_missing_class, as prepare
    assert cloud_main(submit_argv(bucket, "--model", "retinanet_resnet50_fpn")) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: model 'retinanet_resnet50_fpn' is a detection model, but this bucket is for classification: use one of "
        "demo_classification, mobilenet_v2, resnet50")
    assert [request[:2] for request in vertex.requests] == [("POST", JOBS_PATH)]


@pytest.mark.parametrize("data, output, run_name, relation", [
    ("gs://b-1/proj/data", "gs://b-1", "proj", "overlap: the bucket is inside the result folder"),
    ("gs://b-1", "gs://b-1/runs", "r1", "overlap: the result folder is inside the bucket"),
    ("gs://b-1/proj", "gs://b-1", "proj", "are the same folder"),
])
def test_submit_refuses_a_run_folder_overlapping_the_data(vertex, capsys, data, output, run_name, relation):
    """Before any request: the job would prepare into (and so delete) the bucket, or write into it."""
    argv = ["submit", str(REPO / "configs/jobs/gpu.yaml"), "--data", data, "--output", output, "--run-name", run_name,
            "--image", IMAGE, "--project", PROJECT, "--region", REGION]
    assert cloud_main(argv) == 1
    run_uri = f"{output}/{run_name}"
    assert capsys.readouterr().err.startswith(f"error: the run folder {run_uri} and --data {data} {relation}; ")
    assert vertex.requests == []


def test_submit_warns_about_empty_images_and_does_not_call_them_copies(gcs_client, local_bucket, vertex, capsys):
    """10 zero-byte images of 12 share one MD5: they are empty files that prepare skips, not byte-identical images."""
    bucket = new_bucket(gcs_client)
    stage(local_bucket, f"gs://{bucket}/kangaroo", capsys)
    annotations = json.loads((local_bucket / "_annotations.json").read_text())
    keys = sorted(annotations["annotations"])
    empty = [f"empty-{index:02d}.jpg" for index in range(10)]
    for key in empty:
        gcs_client.bucket(bucket).blob(f"kangaroo/{key}").upload_from_string(b"")
        annotations["annotations"][key] = annotations["annotations"][keys[0]]
    gcs_client.bucket(bucket).blob("kangaroo/_annotations.json").upload_from_string(json.dumps(annotations))

    assert cloud_main(submit_argv(bucket)) == 0
    err = capsys.readouterr().err
    assert f"warning: 10 of {len(keys) + 10} annotated images in gs://{bucket}/kangaroo are empty files (0 bytes) " \
           "and will be skipped (e.g. empty-00.jpg, empty-01.jpg, empty-02.jpg)\n" in err
    assert "byte-identical" not in err
    assert f"checked gs://{bucket}/kangaroo: detection, {len(keys)} images" in err


def test_submit_pre_check_splits_as_the_buckets_split_json_says(gcs_client, vertex, capsys, tmp_path):
    """An imported dataset's own split (_split.json): submit warns about it exactly as prepare does."""
    from trainer.prepare import prepare
    from trainer.sample import make_sample_bucket

    local = tmp_path / "local"
    annotations = make_sample_bucket(local, 8)
    one_class = next(key for key, boxes in annotations["annotations"].items()
                     if boxes and len({box["label"] for box in boxes}) == 1)
    (local / "_split.json").write_text(json.dumps({"version": 1, "val": [one_class]}))
    report = prepare(local, tmp_path / "result", model="demo")
    [missing] = [found["message"] for found in report["warnings"] if found["code"] == "val_missing_class"]
    bucket = new_bucket(gcs_client)
    stage(local, f"gs://{bucket}/kangaroo", capsys)

    assert cloud_main(submit_argv(bucket, "--model", "demo")) == 0
    assert f"warning: {missing}\n" in capsys.readouterr().err
