"""Report stage: RESULT_DIR/report.html, a page about the dataset, the training and the model's mistakes.

People would rather look at their data and at what the model gets wrong than read
JSON. The page and its PNGs (RESULT_DIR/report/) use relative links only and no
external resources, so it reads straight from a bucket. Every section comes from
files earlier stages wrote: data/report.json and the TFRecords, the TensorBoard
events, metrics.json, model_export/export.json and evaluation.json, and the
SavedModel's detections on the evaluated split (model_export/evaluation/). A
section whose files are not there yet says so. Written at the end of `run` and
after each evaluation while training. One module per section of the page.
"""
from pathlib import Path

from trainer import console
from trainer.report import dataset, exports, model, training
from trainer.report.page import PNG_DIR, Page
from trainer.run_dir import RunDir


def write_report(result_dir, best_effort=False):
    """Write RESULT_DIR/report.html and its PNGs in RESULT_DIR/report/; return the page's path.

    best_effort (while training): a failure is a warning, not the end of the training.
    """
    import matplotlib

    if best_effort:
        try:
            return write_report(result_dir)
        except Exception as err:  # the report must never stop a training run
            console.warn_failure("report: could not refresh report.html", err)
            return None
    result_dir = Path(result_dir)
    png_dir = result_dir / PNG_DIR
    png_dir.mkdir(exist_ok=True)
    page = Page(png_dir)
    with matplotlib.rc_context({"text.parse_math": False}):  # labels are names: `$`, `$$` are not TeX
        dataset.section(page, result_dir)
        training.section(page, result_dir)
        model.section(page, result_dir)
        exports.section(page, result_dir)
    path = RunDir(result_dir).report_html
    path.write_text(page.html(f"Training report: {result_dir.name}"))
    return path


def is_up_to_date(result_dir):
    """Whether report.html is newer than everything it is drawn from (a rerun of a complete run leaves it)."""
    run = RunDir(result_dir)
    page = run.report_html
    if not page.is_file():
        return False
    sources = [run.report_json, run.metrics_json, *run.model.rglob("events.out.tfevents.*"),
               *run.exports.glob("*.json"), *run.evaluation_details.glob("*.json")]
    newest = max((path.stat().st_mtime_ns for path in sources if path.is_file()), default=0)
    return page.stat().st_mtime_ns >= newest


def add_arguments(parser):
    parser.add_argument("--result-dir", required=True,
                        help="the run folder; writes RESULT_DIR/report.html and the PNGs in RESULT_DIR/report/")


def main(args):
    from trainer.errors import UserError

    if not Path(args.result_dir).is_dir():
        raise UserError(f"{args.result_dir} is not a folder: give the RESULT_DIR of a run")
    console.say(f"report: {write_report(args.result_dir)}")
    return 0
