"""A local stand-in for the Vertex AI JobService and Cloud Logging REST APIs, for tests.

It speaks the routes google-cloud-aiplatform's REST transport calls
(/v1/projects/P/locations/R/customJobs...) and Logging's /v2/entries:list,
records every request with its JSON body, and answers with an HTTP error on
cue. Point the code at it with VERTEX_API_ENDPOINT / LOGGING_API_ENDPOINT.
"""
import http.server
import json
import re
from urllib.parse import urlsplit

from http_server import LocalServer

JOBS_ROUTE = re.compile(r"^/v1/projects/([^/]+)/locations/([^/]+)/customJobs(?:/(\d+))?(:cancel)?$")
CREATE_TIME = "2026-11-23T12:00:00Z"
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL"}


class FakeVertex(LocalServer):
    """The fake's state: `jobs` (ID -> CustomJob JSON), `states` (ID -> states still to report, one per GET),
    `log_entries`, `late_log_entries` (entries that become readable only from the Nth entries:list
    request on, N -> entries, as Cloud Logging's ingestion lag makes them), `requests` ((method, path,
    JSON body or None) per request) and `errors` (HTTP statuses to answer the next requests with, one each)."""

    def __init__(self):
        super().__init__(_Handler)
        self.jobs = {}
        self.states = {}
        self.log_entries = []
        self.late_log_entries = {}
        self.log_queries = 0
        self.requests = []
        self.errors = []
        self._next_id = 1000

    def add_job(self, project, region, display_name="run", state="JOB_STATE_RUNNING", job_spec=None):
        """Store a job as if it had been created; return its ID."""
        self._next_id += 1
        job_id = str(self._next_id)
        self.jobs[job_id] = {
            "name": f"projects/{project}/locations/{region}/customJobs/{job_id}",
            "displayName": display_name, "state": state, "createTime": CREATE_TIME,
            "jobSpec": job_spec or {"baseOutputDirectory": {"outputUriPrefix": f"gs://out/runs/{display_name}"}},
        }
        return job_id

    def answer(self, method, path, body):
        """(HTTP status, JSON reply) for one request."""
        self.requests.append((method, path, body))
        if self.errors:
            status = self.errors.pop(0)
            return status, {"error": {"code": status, "message": f"fake {STATUS_NAMES[status].lower()} for {path}",
                                      "status": STATUS_NAMES[status]}}
        if method == "POST" and path == "/v2/entries:list":
            self.log_queries += 1
            self.log_entries += self.late_log_entries.pop(self.log_queries, [])
            return 200, {"entries": self.log_entries}
        match = JOBS_ROUTE.match(path)
        if not match:
            return 404, {"error": {"code": 404, "message": f"no route {path}", "status": "NOT_FOUND"}}
        project, region, job_id, cancel = match.groups()
        if method == "POST" and job_id is None:
            new_id = self.add_job(project, region, body.get("displayName", ""), "JOB_STATE_PENDING",
                                  body.get("jobSpec"))
            return 200, self.jobs[new_id]
        if method == "GET" and job_id is None:
            return 200, {"customJobs": [job for job in reversed(self.jobs.values())]}
        if self.jobs.get(job_id, {}).get("name") != f"projects/{project}/locations/{region}/customJobs/{job_id}":
            return 404, {"error": {"code": 404, "message": f"CustomJob {job_id} not found", "status": "NOT_FOUND"}}
        if cancel:
            self.jobs[job_id]["state"] = "JOB_STATE_CANCELLING"
            return 200, {}
        if self.states.get(job_id):
            self.jobs[job_id]["state"] = self.states[job_id].pop(0)
        return 200, self.jobs[job_id]


class _Handler(http.server.BaseHTTPRequestHandler):
    def _handle(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, reply = self.server.owner.answer(method, urlsplit(self.path).path, json.loads(raw) if raw else None)
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def log_message(self, *args):
        pass
