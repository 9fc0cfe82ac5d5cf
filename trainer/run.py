"""Run stage: the whole job, DATA_DIR -> RESULT_DIR, as start.sh calls it.

Each stage skips the work its outputs already hold, so a job preempted or killed
anywhere is resumed by running it again with the same arguments: prepare keeps
complete records, the checkpoint stage its cache (config calls it), config rewrites
an identical params.yaml, train restores its last checkpoint and returns at once
when it is at the final step with metrics.json from that step.
"""
from pathlib import Path

from trainer import config


def run(data_dir, result_dir, model=config.DEFAULT_MODEL, steps=None, batch_size=None, checkpoint_url=None):
    """Prepare DATA_DIR, configure MODEL and train it into RESULT_DIR; return the final metrics dict."""
    from trainer.prepare import prepare
    from trainer.train import train

    result_dir = Path(result_dir).absolute()
    _stage("prepare", f"{data_dir} -> {result_dir / 'data'}")
    prepare(data_dir, result_dir)
    _stage("config", f"{model} -> {result_dir / 'params.yaml'} (checkpoint fetched or taken from the cache)")
    config.write_params(result_dir, model, steps, batch_size, checkpoint_url)
    _stage("train", f"-> {result_dir / 'model'}")
    return train(result_dir)


def _stage(name, what):
    print(f"==> {name}: {what}", flush=True)


def add_arguments(parser):
    parser.add_argument("--data-dir", required=True,
                        help="the Cloud Annotations bucket (folder with _annotations.json)")
    parser.add_argument("--result-dir", required=True, help="where data/, params.yaml, model/ and metrics.json go")
    parser.add_argument("--model", default=config.DEFAULT_MODEL, metavar="NAME",
                        help=f"catalogue model (default {config.DEFAULT_MODEL}; see `python -m trainer config --help`)")
    parser.add_argument("--steps", type=int, help="training steps (default: from the dataset size)")
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the catalogue's for this hardware)")
    parser.add_argument("--checkpoint-url", help="pretrained checkpoint instead of the catalogue's (archive or prefix)")


def main(args):
    from trainer.train import TERMINATED_EXIT, Terminated

    try:
        run(args.data_dir, args.result_dir, args.model, args.steps, args.batch_size, args.checkpoint_url)
    except Terminated:
        return TERMINATED_EXIT
    return 0
