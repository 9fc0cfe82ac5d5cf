"""Which evaluation is the best, and when to stop: the bookkeeping behind model/best/ and early stopping.

Model Garden's BestCheckpointExporter keeps a best checkpoint too, but every replica of
a multi-worker job would write it into the shared model folder, it has no minimum
improvement for early stopping (Model Garden has no early stopping) and it names
per-class metrics by class id. So train keeps its own: after each evaluation it saves
ckpt-STEP (all replicas, as Orbit's own saves) and the chief copies the best one's files
into model/best/. This module is the pure-Python part, over metrics.json's dicts, so it
is tested without training. The state lives in metrics.json (`best`, `last`,
`early_stopping`), which is how a resumed run keeps its best and its patience count.
Export and warm starts take the best checkpoint, else the last (`checkpoint_to_export`).
"""
import math
import re
from dataclasses import dataclass
from pathlib import Path

from trainer import console
from trainer.errors import UserError
from trainer.run_dir import Metrics, RunDir, StageMissing

# Evaluations without an improvement of at least DEFAULT_MIN_DELTA before training stops.
# A run evaluates 4 times (config.EVALUATIONS_PER_RUN), so 2 stops only a run whose
# evaluations at 50 % and 75 % of its steps are no better than the one at 25 %; the demo
# curve (docs/stages.md, "train") improved at every evaluation by far more than the delta.
DEFAULT_PATIENCE = 2
DEFAULT_MIN_DELTA = 0.001
CHECKPOINT_STATE_PATH = re.compile(r'^model_checkpoint_path:\s*"(.*)"', re.MULTILINE)


def higher_is_better(metric):
    return not metric.split("/", 1)[0].endswith("loss")


def metric_value(metrics, metric):
    """METRIC's value in one evaluation's METRICS: a top-level name (AP, AP50, accuracy, validation_loss...)
    or NAME/LABEL for one class's (AP/kangaroo, accuracy/cat). None where the evaluation has no value."""
    if metric in metrics and not isinstance(metrics[metric], (dict, list)):
        return metrics[metric]
    name, _, label = metric.partition("/")
    return (metrics.get("per_class") or {}).get(label, {}).get(name)


def check_metric(metric, names, labels):
    """A UserError unless METRIC is one of NAMES (top-level) or PER_CLASS_NAME/LABEL for one of LABELS.

    NAMES: {"top": [...], "per_class": [...]}.
    """
    if metric in names["top"]:
        return
    name, _, label = metric.partition("/")
    if name in names["per_class"] and label in labels:
        return
    raise UserError(f"--select-metric {metric!r} is not a metric of this run: choose one of "
                    f"{', '.join(names['top'])}, or one class's as NAME/LABEL with NAME one of "
                    f"{', '.join(names['per_class'])} (e.g. {names['per_class'][0]}/{labels[0]})")


@dataclass
class Tracker:
    """The best evaluation so far by METRIC, and the early-stopping count.

    Best: any strict improvement of METRIC. Early stopping: PATIENCE evaluations in a row
    without beating REFERENCE (the last value that improved by MIN_DELTA) by at least
    MIN_DELTA; PATIENCE 0 never stops.
    """
    metric: str
    patience: int = DEFAULT_PATIENCE
    min_delta: float = DEFAULT_MIN_DELTA
    best: dict = None       # {"step", "checkpoint", "metric", "value", "metrics"}
    reference: float = None
    waited: int = 0
    stopped: dict = None    # {"step", "reason"} once early stopping ended the run

    @classmethod
    def resume(cls, record, metric, patience, min_delta):
        """The tracker a run continues with, from its metrics.json RECORD (a Metrics; None or one without `best`:
        fresh).

        A best chosen by another metric stays the best candidate, scored by METRIC; the count starts again.
        """
        tracker = cls(metric, patience, min_delta)
        if not record or not record.best:
            return tracker
        best = record.best
        tracker.best = {**best, "metric": metric, "value": metric_value(best["metrics"], metric)}
        state = record.early_stopping or {}
        if state.get("metric") == metric:
            tracker.reference, tracker.waited = state.get("reference"), state.get("evaluations_without_improvement", 0)
            tracker.stopped = state.get("stopped")
        else:
            tracker.reference = tracker.best["value"]
        return tracker

    def _better(self, value, than, delta=0.0):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if than is None:
            return True
        return value > than + delta if higher_is_better(self.metric) else value < than - delta

    def update(self, metrics, checkpoint):
        """Count one evaluation (METRICS, its checkpoint's name under model/); True when it is the new best."""
        value = metric_value(metrics, self.metric)
        if self._better(value, self.reference, self.min_delta):
            self.reference, self.waited = value, 0
        elif value is not None:  # an evaluation without a value (no such box in val) says nothing
            self.waited += 1
        improved = self.best is None or self._better(value, self.best["value"])
        if improved:
            self.best = {"step": metrics["step"], "checkpoint": checkpoint, "metric": self.metric, "value": value,
                         "metrics": metrics}
        return improved

    def should_stop(self):
        return self.patience > 0 and self.waited >= self.patience

    def stop(self, step):
        """Record that early stopping ends the run at STEP; return the console line that says why."""
        best = self.best
        reason = (f"{self.waited} evaluations in a row without an improvement of {self.metric} by at least "
                  f"{self.min_delta:g} (patience {self.patience}); best {self.metric} {_shown(best['value'])} "
                  f"at step {best['step']}")
        self.stopped = {"step": step, "reason": reason}
        return f"train: early stopping at step {step}: {reason}"

    def record(self, metrics, checkpoint):
        """metrics.json: the last evaluation's METRICS at the top level (as before), plus best, last and the count."""
        return Metrics(metrics,
                       best=self.best,
                       last={"step": metrics["step"], "checkpoint": checkpoint, "metrics": metrics},
                       early_stopping={"metric": self.metric, "patience": self.patience, "min_delta": self.min_delta,
                                       "reference": self.reference, "evaluations_without_improvement": self.waited,
                                       "stopped": self.stopped})


def checkpoint_to_export(result_dir, latest):
    """(prefix, name under model/) of the checkpoint to export: metrics.json's `best` (model/best/ckpt-N),
    else LATEST (the last checkpoint: runs trained before the best was kept, or without evaluation)."""
    run = RunDir(result_dir)
    best = (Metrics.find(run) or Metrics({})).best
    if best:
        prefix = run.model / best["checkpoint"]
        if Path(f"{prefix}.index").is_file():
            return str(prefix), best["checkpoint"]
        console.say(f"export: WARNING: metrics.json's best checkpoint {prefix} is missing: exporting the last "
                    f"checkpoint instead", error=True)
    if not latest:
        raise StageMissing(run.model / "checkpoint", "train", result_dir)
    return latest, Path(latest).name


def last_checkpoint_step(model_dir):
    """The step of model_dir's latest checkpoint (its state file, no TensorFlow), or None."""
    state = model_dir / "checkpoint"
    match = CHECKPOINT_STATE_PATH.search(state.read_text()) if state.is_file() else None
    return int(match.group(1).rsplit("-", 1)[1]) if match else None


def add_arguments(parser):
    """--select-metric, --patience and --min-delta (train and run)."""
    parser.add_argument("--select-metric", metavar="NAME",
                        help="the metric that picks the best evaluation, whose checkpoint is exported (default AP "
                             "for detectors, accuracy for classifiers; any top-level metric of metrics.json, e.g. "
                             "AP50, or one class's as NAME/LABEL, e.g. AP/kangaroo; *loss: lower is better)")
    parser.add_argument("--patience", type=int, default=DEFAULT_PATIENCE, metavar="N",
                        help=f"stop after N evaluations in a row without an improvement of the selected metric by "
                             f"at least --min-delta (default {DEFAULT_PATIENCE}; 0: never stop early)")
    parser.add_argument("--min-delta", type=float, default=DEFAULT_MIN_DELTA,
                        help=f"the smallest change that counts as an improvement (default "
                             f"{DEFAULT_MIN_DELTA:g})")


def _shown(value):
    return "n/a" if value is None else f"{value:.3f}"
