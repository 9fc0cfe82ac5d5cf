"""`python -m cloud COMMAND ...`: submit and follow training jobs on Vertex AI from the user's machine.

Command modules are imported only when their command runs, so `--help`
answers at once. Problems the user can fix (bad flags, a bucket that cannot
train, missing credentials, permissions, quota) end as one `error: ...` line
and exit status 1.
"""
import argparse
import importlib
import sys

from trainer.errors import UserError


def _add_submit_arguments(parser):
    parser.add_argument("spec", metavar="SPEC",
                        help="job spec, e.g. configs/jobs/gpu.yaml (see configs/jobs/README.md)")
    parser.add_argument("--data", required=True, metavar="gs://BUCKET[/PREFIX]",
                        help="the Cloud Annotations bucket folder: _annotations.json beside the images")
    parser.add_argument("--output", required=True, metavar="gs://BUCKET/PREFIX",
                        help="where runs go; this run writes to gs://BUCKET/PREFIX/RUN")
    parser.add_argument("--steps", type=int, help="training steps (default: the model's)")
    parser.add_argument("--model", help="catalogue model name, configs/models/NAME.yaml (default: the trainer's)")
    parser.add_argument("--image", metavar="REPOSITORY",
                        help="training image repository without tag, as pushed by `make image`: "
                             "REGION-docker.pkg.dev/PROJECT/REPO/trainer")
    parser.add_argument("--run-name", help="the run's folder and job display name (default: SPEC-MODEL-UTCTIME)")
    parser.add_argument("--spot", action="store_true",
                        help="run on Spot VMs (scheduling.strategy SPOT): much cheaper, but Vertex AI may preempt "
                             "the job; submit again with the same --output and --run-name to resume it")
    parser.add_argument("--config-out", metavar="PATH",
                        help="where to write the filled spec for gcloud (default: runs/jobs/RUN.yaml)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse to submit when the bucket check finds dataset warnings (few images per class, "
                             "imbalance, tiny boxes, duplicates, a class missing from validation)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the CustomJob as JSON, the gcloud command and an estimate of the training time "
                             "and cost (configs/jobs/README.md); submit nothing, need no credentials")
    _add_location_arguments(parser)


def _add_logs_arguments(parser):
    _add_job_argument(parser)
    parser.add_argument("--interval", type=float, default=10.0, metavar="SECONDS",
                        help="seconds between polls while the job runs (default: 10)")
    parser.add_argument("--grace", type=float, default=120.0, metavar="SECONDS",
                        help="after the job ends, how long to wait for late log lines when start.sh's CACLI marker "
                             "has not come (Cloud Logging ingests with a lag; default: 120)")


def _add_stage_arguments(parser):
    parser.add_argument("local_dir", metavar="LOCAL_DIR", help="folder with _annotations.json and the images")
    parser.add_argument("destination", metavar="gs://BUCKET[/PREFIX]", help="where to upload it")
    parser.add_argument("--project", help="project billed for the uploads (default: as for submit)")
    parser.add_argument("--workers", type=int, default=8, help="parallel uploads (default: 8)")


def _add_tensorboard_arguments(parser):
    parser.add_argument("logdir", metavar="LOGDIR",
                        help="a run's model folder: gs://BUCKET/PREFIX/RUN/model, or a local folder")
    parser.add_argument("--port", type=int, default=6006, help="local port (default: 6006)")


def _add_job_argument(parser):
    parser.add_argument("job", metavar="JOB",
                        help="job ID as `submit` printed, or projects/P/locations/R/customJobs/ID")
    _add_location_arguments(parser)


def _add_location_arguments(parser):
    parser.add_argument("--project",
                        help="Google Cloud project (default: $GOOGLE_CLOUD_PROJECT, gcloud config, ADC)")
    parser.add_argument("--region", help="Vertex AI region (default: $GOOGLE_CLOUD_REGION, gcloud ai/region, "
                                         "us-central1)")


COMMANDS = {
    "submit": ("cloud.submit:submit_job", _add_submit_arguments,
               "fill a job spec (configs/jobs/*.yaml), check the data bucket and submit a Vertex AI CustomJob"),
    "status": ("cloud.jobs:show_status", _add_job_argument,
               "show a job's state, times, error, console URL and follow-up commands"),
    "logs": ("cloud.logs:follow_logs", _add_logs_arguments,
             "print a job's log entries as they arrive, until it ends and its last lines are in"),
    "cancel": ("cloud.jobs:cancel_job", _add_job_argument, "cancel a job"),
    "list": ("cloud.jobs:list_jobs", _add_location_arguments, "list the most recent jobs in the project and region"),
    "stage": ("cloud.stage:main", _add_stage_arguments,
              "upload a local Cloud Annotations folder to gs://, skipping unchanged files"),
    "tensorboard": ("cloud.tensorboard:main", _add_tensorboard_arguments,
                    "run TensorBoard on a run's logs (gs:// or local)"),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m cloud",
        description="Train on Vertex AI: submit job specs, follow jobs, stage data, open TensorBoard. "
                    "Credentials: Application Default Credentials (`gcloud auth application-default login`).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, add_arguments, summary) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=summary, description=summary))
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    module_name, function_name = COMMANDS[args.command][0].split(":")
    command = getattr(importlib.import_module(module_name), function_name)
    try:
        return command(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # Google API failures the user can fix become one line; the rest stay bugs
        from cloud.errors import explain

        message = explain(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
