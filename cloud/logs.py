"""`logs JOB`: print a Vertex AI job's log entries as they arrive, until the job ends and its last lines are in.

Reads Cloud Logging's REST method entries:list through google-auth's
AuthorizedSession (already installed with google-cloud-aiplatform) rather
than adding google-cloud-logging for one call. Vertex AI writes a CustomJob's
output under resource type `ml_job` with the job ID as a label.

Cloud Logging ingests with a lag: when the job's state turns final, its last
lines (start.sh's CACLI marker among them) may not be readable yet, so polling
goes on until every replica that logged has printed its marker and a poll brings
nothing new, or until args.grace seconds pass without a new entry.
"""
import time

from trainer.errors import UserError

from cloud.clients import job_client, logging_session
from cloud.jobs import FINAL_STATES, job_resource, locate_job

PAGE_SIZE = 1000
TASK_LABEL = "ml.googleapis.com/task_name"
FINAL_MARKERS = ("CACLI-TRAINING-SUCCESS", "CACLI-TRAINING-FAILED")  # start.sh's last word


def follow_logs(args):
    """Print JOB's log entries oldest first, polling every args.interval seconds until it ends.

    Exits 0 when the job succeeded, 1 when it failed or was cancelled.
    """
    if args.interval <= 0 or args.grace < 0:
        raise UserError("--interval must be a positive number of seconds and --grace not negative")
    project, region, job_id = locate_job(args.job, args.project, args.region)
    jobs = job_client(region)
    base, session = logging_session()
    since, printed, ended = None, set(), None
    marked = {}  # replica (task label) -> whether its CACLI marker has come
    last_news = time.monotonic()
    while True:
        if ended is None:
            custom_job = jobs.get_custom_job(name=job_resource(project, region, job_id))
            since = since or custom_job.create_time.isoformat()
            if custom_job.state.name in FINAL_STATES:
                ended, last_news = custom_job, time.monotonic()
        news = False
        for entry in _entries(session, base, project, job_id, since):
            if entry.get("insertId") in printed:
                continue
            printed.add(entry.get("insertId"))
            since = entry.get("timestamp", since)
            line = _format(entry)
            print(line, flush=True)
            task = (entry.get("labels") or {}).get(TASK_LABEL)
            marked[task] = marked.get(task, False) or any(marker in line for marker in FINAL_MARKERS)
            news = True
        if news:
            last_news = time.monotonic()
        elif ended is not None and (_all_marked(marked) or time.monotonic() - last_news >= args.grace):
            state = ended.state.name
            detail = f": {ended.error.message}" if ended.error.message else ""
            print(f"job {job_id} ended: {state}{detail}", flush=True)
            return 0 if state == "JOB_STATE_SUCCEEDED" else 1
        time.sleep(args.interval)


def _all_marked(marked):
    """Whether every replica that logged has printed its marker (lines without a replica label aside)."""
    replicas = {task: seen for task, seen in marked.items() if task is not None}
    return all(replicas.values()) if replicas else marked.get(None, False)


def _entries(session, base, project, job_id, since):
    """Every entry of JOB_ID at or after SINCE (RFC 3339), oldest first, across pages."""
    from google.api_core.exceptions import from_http_response

    body = {
        "resourceNames": [f"projects/{project}"],
        "filter": f'resource.type="ml_job" AND resource.labels.job_id="{job_id}" AND timestamp>="{since}"',
        "orderBy": "timestamp asc",
        "pageSize": PAGE_SIZE,
    }
    while True:
        response = session.post(f"{base}/v2/entries:list", json=body, timeout=60)
        if response.status_code >= 400:
            raise from_http_response(response)
        page = response.json()
        yield from page.get("entries", [])
        if not page.get("nextPageToken"):
            return
        body["pageToken"] = page["nextPageToken"]


def _format(entry):
    """TIMESTAMP [TASK] SEVERITY MESSAGE, with the message from textPayload or jsonPayload.message."""
    payload = entry.get("jsonPayload") or {}
    message = entry.get("textPayload") or payload.get("message") or str(payload or "")
    task = (entry.get("labels") or {}).get(TASK_LABEL)
    parts = [entry.get("timestamp", ""), f"[{task}]" if task else "", entry.get("severity", "DEFAULT"),
             message.rstrip("\n")]
    return " ".join(part for part in parts if part)
