"""Vertex AI CustomJobs after submission: where a job is, what state it is in, cancelling, listing.

A job is named by its numeric ID (what `submit` prints) or its full resource
name projects/P/locations/R/customJobs/ID, whose project and region then win
over the flags.
"""
import itertools
import re

from trainer.errors import UserError

from cloud.clients import console_url, job_client, project_id, region_name

_RESOURCE = re.compile(r"^projects/([^/]+)/locations/([^/]+)/customJobs/(\d+)$")
FINAL_STATES = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
                "JOB_STATE_PARTIALLY_SUCCEEDED"}
LISTED = 20


def locate_job(job, project=None, region=None):
    """(project, region, job_id) for JOB, an ID or a full resource name."""
    match = _RESOURCE.match(job or "")
    if match:
        return match.groups()
    if not re.fullmatch(r"\d+", job or ""):
        raise UserError(f"{job!r} is not a job: pass the numeric job ID `submit` printed, "
                        "or projects/P/locations/R/customJobs/ID")
    return project_id(project), region_name(region), job


def job_resource(project, region, job_id):
    """The job's full resource name, as the API takes it."""
    return f"projects/{project}/locations/{region}/customJobs/{job_id}"


def describe_job(custom_job, project, region):
    """Lines that tell a user where CUSTOM_JOB stands and how to follow it."""
    job_id = custom_job.name.rsplit("/", 1)[-1]
    lines = [f"job:         {job_id} ({custom_job.display_name})",
             f"state:       {custom_job.state.name}"]
    for label, stamp in (("created", custom_job.create_time), ("started", custom_job.start_time),
                         ("ended", custom_job.end_time)):
        if stamp:
            lines.append(f"{label + ':':<12} {stamp.isoformat()}")
    if custom_job.error.message:
        lines.append(f"error:       {custom_job.error.message}")
    lines.append(f"console:     {console_url(project, region, job_id)}")
    lines.append(f"logs:        python -m cloud logs {job_id} --project {project} --region {region}")
    output = custom_job.job_spec.base_output_directory.output_uri_prefix
    if output:
        lines.append(f"tensorboard: python -m cloud tensorboard {output.rstrip('/')}/model")
    return lines


def show_status(args):
    """`status JOB`: the job's state, times, error, console URL and follow-up commands."""
    project, region, job_id = locate_job(args.job, args.project, args.region)
    custom_job = job_client(region).get_custom_job(name=job_resource(project, region, job_id))
    print("\n".join(describe_job(custom_job, project, region)))
    return 0


def cancel_job(args):
    """`cancel JOB`: ask Vertex AI to cancel; the state turns JOB_STATE_CANCELLED shortly after."""
    project, region, job_id = locate_job(args.job, args.project, args.region)
    job_client(region).cancel_custom_job(name=job_resource(project, region, job_id))
    print(f"cancel requested for job {job_id}; `python -m cloud status {job_id}` shows when it is cancelled")
    return 0


def list_jobs(args):
    """`list`: the most recent CustomJobs in the project and region, in the API's order (newest first)."""
    project, region = project_id(args.project), region_name(args.region)
    pager = job_client(region).list_custom_jobs(request={"parent": f"projects/{project}/locations/{region}",
                                                         "page_size": LISTED})
    rows = list(itertools.islice(pager, LISTED))
    if not rows:
        print(f"no custom jobs in project {project}, region {region}")
    for job in rows:
        created = job.create_time.strftime("%Y-%m-%d %H:%M") if job.create_time else "-"
        print(f"{job.name.rsplit('/', 1)[-1]:<20} {job.state.name:<24} {created:<17} {job.display_name}")
    return 0
