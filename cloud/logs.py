"""`logs JOB`: print a Vertex AI job's log entries as they arrive, until the job ends.

Reads Cloud Logging's REST method entries:list through google-auth's
AuthorizedSession (already installed with google-cloud-aiplatform) rather
than adding google-cloud-logging for one call. Vertex AI writes a CustomJob's
output under resource type `ml_job` with the job ID as a label.
"""
import time

from trainer.errors import UserError

from cloud.clients import job_client, logging_session
from cloud.jobs import FINAL_STATES, job_resource, locate_job

PAGE_SIZE = 1000
TASK_LABEL = "ml.googleapis.com/task_name"


def follow_logs(args):
    """Print JOB's log entries oldest first, polling every args.interval seconds until it ends.

    Exits 0 when the job succeeded, 1 when it failed or was cancelled.
    """
    if args.interval <= 0:
        raise UserError("--interval must be a positive number of seconds")
    project, region, job_id = locate_job(args.job, args.project, args.region)
    jobs = job_client(region)
    base, session = logging_session()
    since, printed = None, set()
    while True:
        custom_job = jobs.get_custom_job(name=job_resource(project, region, job_id))
        since = since or custom_job.create_time.isoformat()
        for entry in _entries(session, base, project, job_id, since):
            if entry.get("insertId") in printed:
                continue
            printed.add(entry.get("insertId"))
            since = entry.get("timestamp", since)
            print(_format(entry), flush=True)
        state = custom_job.state.name
        if state in FINAL_STATES:
            detail = f": {custom_job.error.message}" if custom_job.error.message else ""
            print(f"job {job_id} ended: {state}{detail}", flush=True)
            return 0 if state == "JOB_STATE_SUCCEEDED" else 1
        time.sleep(args.interval)


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
