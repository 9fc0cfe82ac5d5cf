"""The block that ends a run: how good the model is, what was exported, what to do next.

Built only from the files the stages wrote (metrics.json, experiment.json,
model_export/export.json and evaluation.json), so it says the same thing on a
rerun that found everything done.
"""
from pathlib import Path

from trainer.export.formats import EXPORT_FORMATS, REFERENCE
from trainer.run_dir import Experiment, ExportManifest, Metrics, RunDir, find_evaluations


def summary(result_dir):
    """The final summary of RESULT_DIR's run, as console lines."""
    result_dir = Path(result_dir).absolute()
    run = RunDir(result_dir)
    record = Metrics.find(run) or Metrics({})
    model = (Experiment.load(run) if run.experiment_json.is_file() else Experiment()).model
    lines = ["==> summary"]
    metrics = record.exported
    if "accuracy" in metrics:
        top_k = f", top-5 accuracy {_shown(metrics['top_5_accuracy'])}" if "top_5_accuracy" in metrics else ""
        lines.append(f"  model {model or '?'}, step {metrics['step']}: accuracy "
                     f"{_shown(metrics['accuracy'])}{top_k} (validation split{_exported(record)})")
        for label, values in metrics.get("per_class", {}).items():
            lines.append(f"    {label:<20} accuracy {_shown(values.get('accuracy'))}  ({values.get('images')} images)")
    elif metrics.get("evaluated", True) and "AP" in metrics:
        lines.append(f"  model {model or '?'}, step {metrics['step']}: AP {_shown(metrics['AP'])}, "
                     f"AP50 {_shown(metrics['AP50'])} (validation split{_exported(record)})")
        for label, values in metrics.get("per_class", {}).items():
            lines.append(f"    {label:<20} AP {_shown(values.get('AP'))}  AP50 {_shown(values.get('AP50'))}")
    elif metrics:
        lines.append(f"  model {model or '?'}, step {metrics.get('step')}: NOT EVALUATED: "
                     f"{metrics.get('reason', 'no validation split')}")
    stopped = record.stopped
    lines += [f"  early stopping at step {stopped['step']}: {stopped['reason']}"] if stopped else []
    lines += _exports(run)
    predict = [f"    predict:     python -m trainer predict --model {result_dir} IMAGE_OR_DIR... --out predictions"]
    lines += ["  next:", *(predict if EXPORT_FORMATS[REFERENCE].path(run.root).is_dir() else []),
              f"    TensorBoard: tensorboard --logdir {run.model}",
              f"    submit:      make submit DATA=gs://BUCKET/data OUTPUT=gs://BUCKET/runs"
              f"{' MODEL=' + model if model else ''}  (a cloud GPU job)",
              f"  report: {run.report_html}",
              f"  logs:   {run.logs}/"]
    return lines


def _exported(record):
    """What the headline's evaluation is: the best by its metric, exported; and the last, when it is another."""
    best = record.best
    if not best:
        return ""
    if best["step"] == record.step:
        return f"; the best by {best['metric']} and the last, exported"
    return (f"; the best by {best['metric']}, exported from {best['checkpoint']}; the last, step {record.step}: "
            f"{best['metric']} {_shown(_value(record.evaluation, best['metric']))}")


def _value(record, metric):
    from trainer.best import metric_value

    return metric_value(record, metric)


def _exports(run):
    manifest = ExportManifest.find(run)
    if not manifest:
        return []
    evaluation = find_evaluations(run)
    # a derived format (MediaPipe) shares its source's file: one line for both
    derived = {row.source: name for name, row in EXPORT_FORMATS.items() if row.derived}
    lines = ["  exports:"]
    for name, entry in manifest.results.items():
        if name in derived.values():
            continue
        if "path" not in entry:
            lines.append(f"    {name:<12} {'FAILED' if 'error' in entry else 'skipped'}: "
                         f"{entry.get('error') or entry.get('unsupported')}")
            continue
        other = derived.get(name)
        also = f" ({other} {_score(evaluation[other])})" if _score(evaluation.get(other) or {}) else ""
        lines.append(f"    {name:<12} {entry['bytes'] / 1e6:6.1f} MB  {entry['path']}"
                     f"{_score(evaluation.get(name, {}), '  ')}{also}")
    return lines


def _score(scored, lead=""):
    """`AP 0.123` or `accuracy 0.950` of an evaluation entry, after LEAD; empty when it has neither."""
    return "".join(f"{lead}{key} {_shown(scored[key])}" for key in ("AP", "accuracy") if key in scored)


def _shown(value):
    return "n/a" if value is None else f"{value:.3f}"
