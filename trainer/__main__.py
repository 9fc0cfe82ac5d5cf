"""`python -m trainer STAGE ...`: one sub-command per stage module.

Stage modules (MODULES maps the names that differ) are imported only when their sub-command runs, so `--help`
answers without loading TensorFlow. Each stage module defines
`add_arguments(parser)` and `main(args) -> int`.
"""
import argparse
import contextlib
import faulthandler
import importlib
import sys
import traceback

from trainer import console
from trainer.errors import UserError
from trainer.folders import refuse_overlap
from trainer.run_dir import RunDir

STAGES = {
    "prepare": "validate _annotations.json and write sharded TFRecords, label map and report",
    "checkpoint": "download, verify and cache a pretrained zoo checkpoint",
    "config": "write RESULT_DIR/params.yaml: the Model Garden experiment for this dataset and hardware",
    "train": "train and evaluate with Model Garden into RESULT_DIR/model (resumable)",
    "export": "export SavedModel, TFLite, TF.js and Core ML models and score each on the validation split",
    "predict": "run an exported model on images: a Cloud Annotations bucket of its detections, boxed previews",
    "run": "chain every stage (what start.sh calls); each skips work already done",
    "report": "write RESULT_DIR/report.html: dataset, training curves, the model's mistakes, exports",
    "sample": "write a synthetic Cloud Annotations bucket for demos and tests",
    "import": "turn a COCO, Pascal VOC, YOLO or Open Images dataset into a Cloud Annotations bucket",
    "export-annotations": "write a bucket's _annotations.json as COCO instances JSON",
    "merge-buckets": "fold corrected images back into a training bucket (later buckets win)",
    "data-service": "run a tf.data service dispatcher and/or worker: training's input pipeline on other CPUs",
}
MODULES = {"import": "datasets.import_dataset", "export-annotations": "datasets.export_annotations",
           "merge-buckets": "merge_buckets", "data-service": "data_service"}  # stage names that are not module names


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Cloud Annotations detector trainer: the stages of the training job.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name, summary in STAGES.items():
        sub.add_parser(name, help=summary, add_help=False)
    if not argv or argv[0] not in STAGES:
        parser.parse_args(argv or ["--help"])
        return 2
    name = argv[0]
    module = importlib.import_module(f"trainer.{MODULES.get(name, name)}")
    # A native crash (SIGSEGV in a library) leaves its Python stack in the stage log, which fd 2 points at.
    with contextlib.suppress(AttributeError, OSError, ValueError):  # in-process callers may have no real stderr
        faulthandler.enable()
    try:
        args = _stage_parser(name, module).parse_args(argv[1:])  # its help may read the catalogue: a UserError
        if getattr(args, "result_dir", None):
            if getattr(args, "data_dir", None):  # before logs/ is made: it would land in an overlapping bucket
                refuse_overlap(args.data_dir, args.result_dir)
            console.start(RunDir(args.result_dir).logs, name, args.verbose)
        return module.main(args)
    except UserError as err:
        console.say(f"error: {err}", error=True)
        return 1
    except Exception as err:  # the traceback is in the log; the console gets its last line and where to look
        if console.log_path() is None:
            raise
        traceback.print_exc()
        console.say(f"error: {type(err).__name__}: {err}".splitlines()[0][:500]
                    + f" (traceback in {console.log_path()})", error=True)
        return 1
    finally:
        console.stop()  # in-process callers (tests) get their file descriptors back


def _stage_parser(name, module):
    parser = argparse.ArgumentParser(prog=f"python -m trainer {name}", description=STAGES[name])
    module.add_arguments(parser)
    parser.add_argument("--verbose", action="store_true",
                        help="show every library's output on the console (by default it goes to "
                             "RESULT_DIR/logs/STAGE.log and the console shows only the trainer's lines)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
