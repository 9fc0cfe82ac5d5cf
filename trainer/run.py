"""Run stage: the whole job, DATA_DIR -> RESULT_DIR, as start.sh calls it.

Each stage skips the work its outputs already hold, so a job preempted or killed
anywhere is resumed by running it again with the same arguments: prepare keeps
complete records, the checkpoint stage its cache (config calls it), config rewrites
an identical params.yaml, train restores its last checkpoint and returns at once
when it is at the final step with metrics.json from that step.

In a multi-worker job every replica runs start.sh on the same RESULT_DIR: only
the chief prepares and configures; the other workers wait for its params.yaml
and then join the training.
"""
import os
import time
from pathlib import Path

from trainer import config, console
from trainer.errors import UserError
from trainer.export import FORMATS, conversion_exit, export  # imports TensorFlow only when exporting

CHIEF_WAIT_SECONDS = 3600  # how long a worker waits for the chief's data/ and params.yaml
CHIEF_POLL_SECONDS = 10


def run(data_dir, result_dir, model=config.DEFAULT_MODEL, steps=None, batch_size=None, checkpoint_url=None,
        formats=FORMATS):
    """Prepare DATA_DIR, configure and train MODEL into RESULT_DIR, export FORMATS.

    Returns the conversions that failed, {format: reason}: the model is trained
    and served by its SavedModel even when a TFLite, TF.js or Core ML conversion fails.
    """
    from trainer.prepare import prepare
    from trainer.report import write_report
    from trainer.summary import summary
    from trainer.train import train

    result_dir = Path(result_dir).absolute()
    if _is_chief(os.environ):
        _stage("prepare", f"{data_dir} -> {result_dir / 'data'}")
        prepare(data_dir, result_dir)
        _stage("config", f"{model} -> {result_dir / 'params.yaml'} (checkpoint fetched or taken from the cache)")
        config.write_params(result_dir, model, steps, batch_size, checkpoint_url)
    else:
        _wait_for_chief(result_dir)
    _stage("train", f"-> {result_dir / 'model'}")
    train(result_dir)
    if not _is_chief(os.environ):
        return {}
    failed = {}
    if formats:
        _stage("export", f"{', '.join(formats)} -> {result_dir}")
        failed = {name: result["error"] for name, result in export(result_dir, formats).items() if "error" in result}
    _stage("report", f"-> {result_dir / 'report.html'}")
    write_report(result_dir)
    for line in summary(result_dir):
        console.say(line)
    return failed


def _is_chief(env):
    """True unless TF_CONFIG / CLUSTER_SPEC names this replica a non-chief worker."""
    tf_config = config.tf_config_from_env(env)
    task = tf_config.get("task", {})
    if "chief" not in tf_config.get("cluster", {}):  # no chief pool: worker 0 leads
        return task.get("type", "worker") == "worker" and task.get("index", 0) == 0
    return task.get("type") == "chief"


def _wait_for_chief(result_dir):
    wanted = [result_dir / "data" / "report.json", result_dir / "params.yaml"]
    _stage("wait", f"for the chief to write {', '.join(map(str, wanted))}")
    deadline = time.monotonic() + CHIEF_WAIT_SECONDS
    while not all(path.is_file() for path in wanted):
        if time.monotonic() > deadline:
            raise UserError(f"the chief did not write {result_dir / 'params.yaml'} within {CHIEF_WAIT_SECONDS} s")
        time.sleep(CHIEF_POLL_SECONDS)


def _stage(name, what):
    console.stage(name, what)


def add_arguments(parser):
    parser.add_argument("--data-dir", required=True,
                        help="the Cloud Annotations bucket (folder with _annotations.json)")
    parser.add_argument("--result-dir", required=True, help="where data/, params.yaml, model/ and metrics.json go")
    parser.add_argument("--model", default=config.DEFAULT_MODEL, metavar="NAME",
                        help=f"catalogue model (default {config.DEFAULT_MODEL}; see `python -m trainer config --help`)")
    parser.add_argument("--steps", type=int, help="training steps (default: from the dataset size)")
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the catalogue's for this hardware)")
    parser.add_argument("--checkpoint-url", help="pretrained checkpoint instead of the catalogue's (archive or prefix)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help="comma-separated export formats after training (default: all), or 'none'")


def main(args):
    from trainer.train import TERMINATED_EXIT, Terminated

    formats = [] if args.formats == "none" else [name.strip() for name in args.formats.split(",") if name.strip()]
    try:
        failed = run(args.data_dir, args.result_dir, args.model, args.steps, args.batch_size, args.checkpoint_url,
                     formats)
    except Terminated:
        return TERMINATED_EXIT
    return conversion_exit(failed)
