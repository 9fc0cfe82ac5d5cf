"""The block that ends a run: how good the model is, what was exported, what to do next.

Built only from the files the stages wrote (metrics.json, experiment.json,
model_export/export.json and evaluation.json), so it says the same thing on a
rerun that found everything done.
"""
import json
from pathlib import Path

from trainer.export.formats import EXPORT_DIR, EXPORT_FORMATS, REFERENCE


def summary(result_dir):
    """The final summary of RESULT_DIR's run, as console lines."""
    result_dir = Path(result_dir).absolute()
    record = _json(result_dir / "metrics.json") or {}
    experiment = _json(result_dir / "experiment.json") or {}
    lines = ["==> summary"]
    metrics = (record.get("best") or {}).get("metrics") or record  # the exported evaluation's
    if "accuracy" in metrics:
        top_k = f", top-5 accuracy {_shown(metrics['top_5_accuracy'])}" if "top_5_accuracy" in metrics else ""
        lines.append(f"  model {experiment.get('model', '?')}, step {metrics['step']}: accuracy "
                     f"{_shown(metrics['accuracy'])}{top_k} (validation split{_exported(record)})")
        for label, values in metrics.get("per_class", {}).items():
            lines.append(f"    {label:<20} accuracy {_shown(values.get('accuracy'))}  ({values.get('images')} images)")
    elif metrics.get("evaluated", True) and "AP" in metrics:
        lines.append(f"  model {experiment.get('model', '?')}, step {metrics['step']}: AP {_shown(metrics['AP'])}, "
                     f"AP50 {_shown(metrics['AP50'])} (validation split{_exported(record)})")
        for label, values in metrics.get("per_class", {}).items():
            lines.append(f"    {label:<20} AP {_shown(values.get('AP'))}  AP50 {_shown(values.get('AP50'))}")
    elif metrics:
        lines.append(f"  model {experiment.get('model', '?')}, step {metrics.get('step')}: NOT EVALUATED: "
                     f"{metrics.get('reason', 'no validation split')}")
    stopped = (record.get("early_stopping") or {}).get("stopped")
    lines += [f"  early stopping at step {stopped['step']}: {stopped['reason']}"] if stopped else []
    lines += _exports(result_dir)
    predict = [f"    predict:     python -m trainer predict --model {result_dir} IMAGE_OR_DIR... --out predictions"]
    lines += ["  next:", *(predict if EXPORT_FORMATS[REFERENCE].path(result_dir).is_dir() else []),
              f"    TensorBoard: tensorboard --logdir {result_dir / 'model'}",
              f"    submit:      make submit DATA=gs://BUCKET/data OUTPUT=gs://BUCKET/runs"
              f"{' MODEL=' + experiment['model'] if experiment.get('model') else ''}  (a cloud GPU job)",
              f"  report: {result_dir / 'report.html'}",
              f"  logs:   {result_dir / 'logs'}/"]
    return lines


def _exported(record):
    """What the headline's evaluation is: the best by its metric, exported; and the last, when it is another."""
    best = record.get("best")
    if not best:
        return ""
    if best["step"] == record["step"]:
        return f"; the best by {best['metric']} and the last, exported"
    return (f"; the best by {best['metric']}, exported from {best['checkpoint']}; the last, step {record['step']}: "
            f"{best['metric']} {_shown(_value(record, best['metric']))}")


def _value(record, metric):
    from trainer.best import metric_value

    return metric_value(record, metric)


def _exports(result_dir):
    manifest = _json(result_dir / EXPORT_DIR / "export.json")
    if not manifest:
        return []
    evaluation = _json(result_dir / EXPORT_DIR / "evaluation.json") or {}
    # a derived format (MediaPipe) shares its source's file: one line for both
    derived = {row.source: name for name, row in EXPORT_FORMATS.items() if row.derived}
    lines = ["  exports:"]
    for name, entry in manifest.get("results", {}).items():
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


def _json(path):
    return json.loads(path.read_text()) if path.is_file() else None


def _shown(value):
    return "n/a" if value is None else f"{value:.3f}"
