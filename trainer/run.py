"""Run stage: the whole job, DATA_DIR -> RESULT_DIR, as start.sh calls it.

Each stage skips the work its outputs already hold, so a job preempted or killed
anywhere is resumed by running it again with the same arguments: prepare keeps
complete records, the checkpoint stage its cache (config calls it), config rewrites
an identical params.yaml, train restores its last checkpoint and returns at once
when it is at the final step with metrics.json from that step.

In a multi-worker job every replica runs start.sh on the same RESULT_DIR: only
the chief prepares and configures; the other workers wait for its marker
(READY_FILE, written last, holding the digests of what it wrote) and then join the
training. A rerun's chief deletes the marker first, and a worker also checks the
files against the marker's digests and its own arguments, so it never starts from
a previous attempt's files or from files the chief is rewriting.

Each marker carries its attempt's identity: a fresh nonce, and the job (Vertex AI's
CLOUD_ML_JOB_ID and the cluster, which every replica of a job derives alike from
its environment). A worker records the nonce it started from (`ready-worker-N.json`),
so after a restart it waits for a marker of a new attempt rather than taking the
previous one while no chief runs; a marker of another job or cluster is never taken.
"""
import hashlib
import json
import os
import secrets
import time
from pathlib import Path

from trainer import best, catalogue, config, console, hardware
from trainer.dataset import DEFAULT_VAL_FRACTION
from trainer.errors import UserError
from trainer.export import conversion_exit, export, failures  # imports TensorFlow only when exporting
from trainer.export.formats import FORMAT_NAMES
from trainer.folders import refuse_overlap
from trainer.run_dir import Experiment, RunDir

CHIEF_WAIT_SECONDS = 3600  # how long a worker waits for the chief's data/ and params.yaml
CHIEF_POLL_SECONDS = 10
READY_FILE = "ready.json"


def run(data_dir, result_dir, model=None, steps=None, batch_size=None, checkpoint_url=None,
        formats=FORMAT_NAMES, val_fraction=DEFAULT_VAL_FRACTION, select_metric=None, patience=best.DEFAULT_PATIENCE,
        min_delta=best.DEFAULT_MIN_DELTA, init_from=None, data_service=None):
    """Prepare DATA_DIR, configure and train MODEL into RESULT_DIR, export FORMATS.

    MODEL None: the default of the bucket's type (detection or classification); `demo`:
    the demo model of that type. SELECT_METRIC, PATIENCE, MIN_DELTA: as `trainer.train.train`'s; INIT_FROM:
    an earlier run folder to warm-start from, DATA_SERVICE: the tf.data service for the training input
    (`trainer.config.write_params`).
    Returns what failed after training, {what: reason}: conversions, their evaluations, the
    report, the summary. The model is trained and served by its SavedModel all the same;
    the exit status and the cacli markers are a conversion failure's.
    """
    from trainer.prepare import prepare
    from trainer.report import is_up_to_date, write_report
    from trainer.summary import summary
    from trainer.train import train

    refuse_overlap(data_dir, result_dir)
    result_dir = Path(result_dir).absolute()
    run_dir = RunDir(result_dir)
    if hardware.is_chief(os.environ):
        (result_dir / READY_FILE).unlink(missing_ok=True)
        _stage("prepare", f"{data_dir} -> {run_dir.data}")
        prepare(data_dir, result_dir, val_fraction=val_fraction, model=model)
        _stage("config", f"{model or 'default model'} -> {run_dir.params} (checkpoint fetched or taken "
                         "from the cache)")
        config.write_params(result_dir, model, steps, batch_size, checkpoint_url, init_from=init_from,
                            data_service=data_service)
        _write_ready(result_dir)
    else:
        _wait_for_chief(result_dir, {"asked_model": model, "steps": steps, "batch_size": batch_size})
    _stage("train", f"-> {run_dir.model}")
    train(result_dir, select_metric, patience, min_delta)
    if not hardware.is_chief(os.environ):
        return {}
    failed = {}
    if formats:
        _stage("export", f"{', '.join(formats)} -> {result_dir}")
        failed = failures(export(result_dir, formats))
    if is_up_to_date(result_dir):
        console.say(f"report: {run_dir.report_html} is up to date")
    else:
        _stage("report", f"-> {run_dir.report_html}")
        _after_training("report", write_report, result_dir, failed)
    lines = _after_training("summary", summary, result_dir, failed)
    for line in lines or ():
        console.say(line)
    return failed


def _after_training(name, work, result_dir, failed):
    """WORK(RESULT_DIR) once the model is trained: a failure is a warning recorded in FAILED, as a conversion's is."""
    try:
        return work(result_dir)
    except Exception as err:
        failed[name] = console.warn_failure(name, err)
        return None


def _write_ready(result_dir, env=os.environ):
    """The marker the other workers wait for, written last: this attempt's identity, the digest of every file."""
    ready = {"job": _job_identity(env), "nonce": secrets.token_hex(16),
             "files": {name: _digest(result_dir / name) for name in RunDir(result_dir).shared_files()}}
    (result_dir / READY_FILE).write_text(json.dumps(ready, indent=2) + "\n")


def _job_identity(env):
    """What every replica of the job in ENV derives alike: a digest of CLOUD_ML_JOB_ID and the cluster's addresses."""
    cluster = hardware.tf_config_from_env(env).get("cluster", {})
    text = json.dumps({"job": env.get("CLOUD_ML_JOB_ID"), "cluster": cluster}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _started_record(result_dir, env):
    """Where this worker records the nonce of the marker it started from: RESULT_DIR/ready-TYPE-INDEX.json."""
    task = hardware.tf_config_from_env(env).get("task", {})
    return result_dir / f"ready-{task.get('type', 'worker')}-{int(task.get('index', 0))}.json"


def _digest(path):
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _chief_ready(result_dir, wanted, env=os.environ):
    """The marker when it is this attempt's, its files match its digests and experiment.json WANTED; else None.

    This attempt's: of this job (ENV's identity) and not the one this worker already started from.
    """
    try:
        ready = json.loads((result_dir / READY_FILE).read_text())
        if ready["job"] != _job_identity(env) or ready["nonce"] == _started_from(result_dir, env):
            return None
        if any(_digest(result_dir / name) != digest for name, digest in ready["files"].items()):
            return None
        record = Experiment.load(RunDir(result_dir))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UserError):  # absent, being rewritten, or old
        return None
    return ready if all(value is None or getattr(record, key) == value for key, value in wanted.items()) else None


def _started_from(result_dir, env):
    """The nonce of the marker this worker last started from, or None."""
    try:
        return json.loads(_started_record(result_dir, env).read_text())["nonce"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _wait_for_chief(result_dir, wanted, env=os.environ):
    """Wait until the chief of this attempt has written its files (WANTED: this run's own arguments)."""
    _stage("wait", f"for the chief to write {result_dir / READY_FILE} (after data/, params.yaml, experiment.json)")
    deadline = time.monotonic() + CHIEF_WAIT_SECONDS
    while not (ready := _chief_ready(result_dir, wanted, env)):
        if time.monotonic() > deadline:
            raise UserError(f"the chief did not write {result_dir / READY_FILE} within {CHIEF_WAIT_SECONDS} s")
        time.sleep(CHIEF_POLL_SECONDS)
    _started_record(result_dir, env).write_text(json.dumps({"nonce": ready["nonce"]}) + "\n")


def _stage(name, what):
    console.stage(name, what)


def add_arguments(parser):
    parser.epilog = hardware.SIMULATION_HELP
    parser.add_argument("--data-dir", required=True,
                        help="the Cloud Annotations bucket (folder with _annotations.json)")
    parser.add_argument("--result-dir", required=True, help="where data/, params.yaml, model/ and metrics.json go")
    parser.add_argument("--model", default=None, metavar="NAME",
                        help=f"catalogue model (default by the bucket's type: {catalogue.defaults_help()}; demo: the "
                             "demo model of that type; see `python -m trainer config --help`)")
    parser.add_argument("--steps", type=int, help="training steps (default: from the dataset size)")
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the catalogue's for this hardware)")
    parser.add_argument("--checkpoint-url", help="pretrained checkpoint instead of the catalogue's (archive or prefix)")
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help=f"share of images held out for evaluation (default {DEFAULT_VAL_FRACTION}); "
                             "0 trains without evaluation")
    parser.add_argument("--formats", default=",".join(FORMAT_NAMES),
                        help="comma-separated export formats after training (default: all), or 'none'")
    best.add_arguments(parser)
    config.add_init_from(parser)
    config.add_data_service(parser)


def main(args):
    from trainer.train import TERMINATED_EXIT, Terminated

    formats = [] if args.formats == "none" else [name.strip() for name in args.formats.split(",") if name.strip()]
    try:
        failed = run(args.data_dir, args.result_dir, args.model, args.steps, args.batch_size, args.checkpoint_url,
                     formats, args.val_fraction, args.select_metric, args.patience, args.min_delta,
                     args.init_from, args.data_service)
    except Terminated:
        return TERMINATED_EXIT
    return conversion_exit(failed)
