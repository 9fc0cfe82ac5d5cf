"""`submit SPEC`: fill a job spec for one run, check the data bucket, and create the Vertex AI CustomJob.

A run is one output folder gs://OUTBUCKET/PREFIX/RUN: the job writes there
through Cloud Storage FUSE (RESULT_DIR) and Vertex AI's baseOutputDirectory
points there too (AIP_MODEL_DIR = .../RUN/model/, AIP_CHECKPOINT_DIR,
AIP_TENSORBOARD_LOG_DIR). `--dry-run` needs no credentials: it prints the
CustomJob as JSON, the equivalent gcloud command and the job's time and cost
estimate (cloud/estimate.py).
"""
import datetime
import json
import re
import shlex
import sys
from pathlib import Path

import yaml
from google.cloud import aiplatform_v1
from google.protobuf import json_format

from trainer.catalogue import load_model
from trainer.errors import UserError
from trainer.folders import refuse_overlap

from cloud.clients import job_client, project_id, region_name, storage_client
from cloud.estimate import estimate_job, estimate_lines
from cloud.jobs import describe_job
from cloud.preflight import check_bucket
from cloud.specs import fill_job_spec
from cloud.uris import fuse_path, gs_uri, split_gs_uri

CONFIG_DIR = Path("runs") / "jobs"
SDIST_DIR = Path("dist")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def submit_job(args):
    """Fill ARGS.spec; print it (--dry-run) or check the bucket, stage the package if used, and submit."""
    if args.steps is not None and args.steps <= 0:
        raise UserError("--steps must be a positive number of training steps")
    if args.model:
        load_model(args.model)  # an unknown name stops here, listing the known ones
    data_bucket, data_prefix = split_gs_uri(args.data)
    out_bucket, out_prefix = split_gs_uri(args.output)
    run_name = args.run_name or _default_run_name(args.spec, args.model)
    if not _RUN_NAME.match(run_name):
        raise UserError(f"--run-name {run_name!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    run_prefix = "/".join(filter(None, [out_prefix, run_name]))
    output_uri = gs_uri(out_bucket, run_prefix)
    refuse_overlap(fuse_path(data_bucket, data_prefix), fuse_path(out_bucket, run_prefix),
                   f"--data {gs_uri(data_bucket, data_prefix)}", f"the run folder {output_uri}")
    sdist = _newest_sdist()
    package_uri = f"{output_uri}/package/{sdist.name}" if sdist else None
    package_path = fuse_path(out_bucket, f"{run_prefix}/package/{sdist.name}") if sdist else None
    spec = fill_job_spec(args.spec, {
        "IMAGE": _image_repository(args.image),
        "DATA_DIR": fuse_path(data_bucket, data_prefix),
        "RESULT_DIR": fuse_path(out_bucket, run_prefix),
        "OUTPUT_URI": output_uri,
        "STEPS": str(args.steps or ""),
        "MODEL": args.model or "",
        "RUN_NAME": run_name,
        "STRATEGY": "SPOT" if args.spot else "",
        "PACKAGE_PATH": package_path,
    })
    custom_job = {"displayName": run_name, "jobSpec": spec}
    region = region_name(args.region)
    project = project_id(args.project, ask_adc=not args.dry_run)
    config_path = Path(args.config_out or CONFIG_DIR / f"{run_name}.yaml")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    gcloud = ["gcloud", "ai", "custom-jobs", "create", f"--region={region}", f"--display-name={run_name}",
              f"--config={config_path}"] + ([f"--project={project}"] if project else [])

    if args.dry_run:
        estimate = estimate_job(spec)  # before any output: a MODEL the catalogue lacks is one error line
        print(json.dumps(custom_job, indent=2))
        print(f"filled spec written to {config_path}; the same job with gcloud:\n  {shlex.join(gcloud)}",
              file=sys.stderr)
        if package_path and package_path in json.dumps(spec):
            print(f"a real submit first uploads {sdist} to {package_uri}", file=sys.stderr)
        print("\n".join(estimate_lines(estimate)), file=sys.stderr)
        return 0

    storage = storage_client(project)
    print(f"checked {check_bucket(storage, data_bucket, data_prefix, args.model, args.strict)}", file=sys.stderr)
    if package_path and package_path in json.dumps(spec):
        package_bucket, package_name = split_gs_uri(package_uri)
        storage.bucket(package_bucket).blob(package_name).upload_from_filename(str(sdist))
        print(f"staged {sdist} at {package_uri}", file=sys.stderr)
    request_job = aiplatform_v1.CustomJob.wrap(json_format.ParseDict(custom_job, aiplatform_v1.CustomJob.pb()()))
    created = job_client(region).create_custom_job(parent=f"projects/{project}/locations/{region}",
                                                   custom_job=request_job)
    print("\n".join(describe_job(created, project, region)))
    return 0


def _default_run_name(spec, model):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{Path(spec).stem}-{model or 'default'}-{stamp}"


def _image_repository(image):
    """--image as a repository without tag or digest (specs add :gpu / :tpu), or None when not given."""
    if not image:
        return None
    if "@" in image or ":" in image.rsplit("/", 1)[-1]:
        raise UserError(f"--image {image!r}: give the repository without a tag, e.g. "
                        "REGION-docker.pkg.dev/PROJECT/REPO/trainer; the spec adds :gpu or :tpu")
    return image


def _newest_sdist():
    """The newest trainer sdist `make package` wrote to dist/, or None."""
    candidates = sorted(SDIST_DIR.glob("*.tar.gz"), key=lambda path: path.stat().st_mtime)
    return candidates[-1] if candidates else None
