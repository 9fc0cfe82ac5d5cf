"""Stage 5, export: the best evaluation's checkpoint -> SavedModel, TFLite, TF.js and Core ML, each evaluated in its
own runtime.

One module per format (saved_model, tflite, tfjs, coreml), each with `write(job, row)` (the
files, beside labels.json) and `run(job, path, images)` (detections as its users get
them); `formats` has the table, a row per output. A format the model cannot have is declared in its
catalogue entry (`export: unsupported:`) and skipped with that reason; a format that
fails to convert is recorded (the job reports CONVERSION-FAILED) and the others are
still written; a SavedModel failure raises. Then every format is run on the whole
validation split and scored with COCO AP, or a classifier's accuracy (`evaluate`):
model_export/evaluation.json; `mediapipe` there is model.tflite run through MediaPipe
Tasks (`mediapipe_tasks`, a derived row: it writes nothing of its own).
Models are built in float32 whatever mixed-precision policy training left set.
"""
import time
from pathlib import Path

from trainer import console
from trainer.export.common import float32_policy, load_job, size_of
from trainer.export.formats import EXPORT_FORMATS, FORMAT_NAMES, REFERENCE, outputs
from trainer.run_dir import ExportManifest, RunDir

CONVERSION_FAILED_EXIT = 3  # a conversion failed, the rest worked: start.sh prints CACLI-CONVERSION-FAILED, exits 0


def export(result_dir, formats=FORMAT_NAMES, quantize=(), keep_versions=3, evaluate=True):
    """Export RESULT_DIR's best checkpoint (its last, for runs without `best` in metrics.json) to FORMATS
    (+ quantised TFLite) and evaluate them.

    Returns {name: {"path", "bytes"} or {"error"} or {"unsupported"}}. Outputs already
    written (and evaluated) from the same checkpoint are kept.
    """
    wanted = outputs(formats, quantize)
    with float32_policy():
        return _export(load_job(result_dir, keep_versions), wanted, evaluate)


def _export(job, wanted, evaluate):
    run = RunDir(job.result_dir)
    done = _reusable(job, run)
    results = {}
    for name in wanted:
        reason = EXPORT_FORMATS[name].unsupported(job.task, job.unsupported)
        if reason:
            results[name] = {"unsupported": reason}
            console.say(f"export: {name}: skipped, not supported by {job.model}: {reason}")
        elif name in done:
            results[name] = {key: done[name][key] for key in ("path", "bytes")}
            console.say(f"export: {name}: up to date ({results[name]['path']})")
        else:
            _step(name, job, results)
    written = {name: r for name, r in results.items() if "path" in r}
    previous = {name: done[name].get("evaluation") for name in written if name in done}
    evaluations = {name: e for name, e in previous.items() if e and "evaluation_failed" not in e}  # failed: retried
    todo = [name for name in written if name not in evaluations] if evaluate else []
    if not todo and all(name in done or "unsupported" in results[name] for name in wanted):
        return results  # an up-to-date rerun leaves every file as it was
    entries = _write_manifest(job, run, done, results, evaluations)  # kept should evaluation fail
    if todo:
        evaluations.update(_evaluate(job, {name: written[name] for name in todo}))
        for name, evaluation in evaluations.items():
            if "evaluation_failed" in evaluation and name in results:
                results[name]["evaluation_failed"] = evaluation["evaluation_failed"]
        entries = _write_manifest(job, run, done, results, evaluations)
    if evaluate:
        from trainer.export.evaluate import write_evaluation

        write_evaluation(job, {name: e.get("evaluation") or {key: e[key] for key in ("unsupported", "error")
                                                             if key in e} for name, e in entries.items()
                               if "evaluation" in e or "unsupported" in e or "error" in e})
    return results


def _evaluate(job, outputs):
    """{name: evaluation} of OUTPUTS on the validation split; a failure is a warning, the exports stay."""
    from trainer.export import evaluate as evaluation

    try:
        split = evaluation.split_to_evaluate(job.result_dir)
        images, groundtruth = evaluation.load_split(job.result_dir, split, job.task)
        return evaluation.evaluate(job, outputs, EXPORT_FORMATS, images, groundtruth, split)
    except Exception as err:
        reason = console.warn_failure("export: evaluation", err)
        return {name: {"bytes": output["bytes"], "evaluation_failed": reason} for name, output in outputs.items()}


def _write_manifest(job, run, done, results, evaluations):
    """model_export/export.json: every output written from this checkpoint (paths relative), with its evaluation."""
    entries = {**{name: {**r, "path": str(Path(r["path"]).relative_to(job.result_dir))} for name, r in done.items()},
               **{name: {**r, "path": str(Path(r["path"]).relative_to(job.result_dir))} if "path" in r else r
                  for name, r in results.items()}}
    for name, entry in entries.items():
        entry.pop("evaluation_failed", None)
        if name in evaluations:
            entry["evaluation"] = evaluations[name]
    ExportManifest(job.checkpoint_name, entries).write(run)
    return entries


def _step(name, job, results):
    """Write one output and record its path and size, or why it failed (one console line, when done)."""
    start = time.time()
    try:
        path = EXPORT_FORMATS[name].write(job)
    except Exception as err:  # recorded: a conversion failure must not stop the other formats
        if name == REFERENCE:  # ... but without a SavedModel there is nothing to serve or convert
            raise
        results[name] = {"error": f"{type(err).__name__}: {err}".strip().splitlines()[-1][:500]}
        console.say(f"export: {name} FAILED: {results[name]['error']}", error=True)
        return
    results[name] = {"path": str(path), "bytes": size_of(path)}
    if not EXPORT_FORMATS[name].derived:  # a derived format's file is its source's, said already
        console.say(f"export: {name}: {path} ({results[name]['bytes'] / 1e6:.1f} MB, {time.time() - start:.0f} s)")


def _reusable(job, run):
    """The outputs a previous export wrote from this checkpoint and that are still on disk (with their evaluation)."""
    manifest = ExportManifest.find(run)
    if not manifest or manifest.checkpoint != job.checkpoint_name:
        return {}
    return {name: {**r, "path": str(job.result_dir / r["path"])} for name, r in manifest.results.items()
            if "path" in r and (job.result_dir / r["path"]).exists()}


def add_arguments(parser):
    parser.add_argument("--result-dir", required=True, help="the run's output folder (params.yaml, model/, data/)")
    parser.add_argument("--formats", default=",".join(FORMAT_NAMES),
                        help=f"comma-separated formats to write (default: all: {','.join(FORMAT_NAMES)}); the "
                             "SavedModel is always written, as the others are converted from it or measured against it")
    parser.add_argument("--quantize", default="none",
                        help="also write quantised TFLite models: comma-separated fp16 (float16 weights, "
                             f"{EXPORT_FORMATS['tflite_fp16'].file}) and/or int8 (full integer calibrated on training "
                             f"images, {EXPORT_FORMATS['tflite_int8'].file}); default none")
    parser.add_argument("--keep-versions", type=int, default=3, help="SavedModel versions kept for TF Serving")
    parser.add_argument("--no-evaluation", action="store_true",
                        help="skip running every format on the validation split (evaluation.json)")


def main(args):
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    quantize = [q.strip() for q in args.quantize.split(",") if q.strip() and q.strip() != "none"]
    results = export(args.result_dir, formats=formats, quantize=quantize, keep_versions=args.keep_versions,
                     evaluate=not args.no_evaluation)
    return conversion_exit(failures(results))


def failures(results):
    """{what: reason} of the conversions and the evaluations in export's RESULTS that failed."""
    failed = {name: result["error"] for name, result in results.items() if "error" in result}
    failed.update({f"{name} evaluation": result["evaluation_failed"] for name, result in results.items()
                   if "evaluation_failed" in result})
    return failed


def conversion_exit(failed):
    """Name each failure after training (conversions, evaluations, report) on stderr; the exit status for `export`
    and `run`."""
    for name, reason in failed.items():
        console.say(f"CONVERSION-FAILED {name}: {reason}", error=True)
    return CONVERSION_FAILED_EXIT if failed else 0
