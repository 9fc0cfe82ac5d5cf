"""The best evaluation and early stopping (trainer/best.py), the checkpoint export picks, and what the summary says.

Pure bookkeeping over metrics.json's dicts, fuzzed with hypothesis; the training run that
shows it end to end is in tests/test_train.py (`early_stopped_run`).
"""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.best import Tracker, check_metric, checkpoint_to_export, metric_value
from trainer.errors import UserError
from trainer.run_dir import Metrics
from trainer.summary import summary

LABELS = ["circle", "square", "triangle"]
NAMES = {"top": ["AP", "AP50", "validation_loss"], "per_class": ["AP", "AP50"]}
values = st.lists(st.one_of(st.none(), st.floats(0, 1, allow_nan=False)), min_size=1, max_size=12)


def evaluation(step, ap, loss=1.0, per_class=None):
    return {"step": step, "AP": ap, "AP50": ap, "validation_loss": loss, "per_class": per_class or {}}


def run(tracker, aps, first_step=1):
    """Feed evaluations with APS (steps FIRST_STEP, ...) to TRACKER; return the step it stopped at, or None."""
    for step, ap in enumerate(aps, start=first_step):
        tracker.update(evaluation(step, ap), f"best/ckpt-{step}")
        if tracker.should_stop():
            tracker.stop(step)
            return step
    return None


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(values, st.integers(0, 4))
def test_the_best_is_the_first_highest_and_patience_counts_evaluations_not_beating_the_best(aps, patience):
    tracker = Tracker("AP", patience=patience, min_delta=0.0)
    stopped = run(tracker, aps)
    seen = aps[:stopped] if stopped else aps
    scored = [(ap, -index) for index, ap in enumerate(seen) if ap is not None]
    best_step = -max(scored)[1] + 1 if scored else 1
    assert tracker.best["step"] == best_step and tracker.best["checkpoint"] == f"best/ckpt-{best_step}"
    # Reference: stop at the first evaluation that ends PATIENCE valued ones in a row none above the running best.
    expected, best, waited = None, None, 0
    for step, ap in enumerate(aps, start=1):
        if ap is not None:
            waited = 0 if best is None or ap > best else waited + 1
            best = ap if best is None or ap > best else best
        if patience and waited >= patience:
            expected = step
            break
    assert stopped == expected


@settings(derandomize=True, max_examples=1500, deadline=None)
@given(values, st.integers(0, 3), st.sampled_from([0.0, 0.01, 0.2]), st.data())
def test_a_resumed_run_keeps_its_best_and_its_count(aps, patience, min_delta, data):
    """Preempted after any evaluation: the tracker rebuilt from metrics.json (as JSON) ends as the uninterrupted one."""
    whole = Tracker("AP", patience, min_delta)
    whole_stop = run(whole, aps)
    cut = data.draw(st.integers(1, len(aps)))
    first = Tracker("AP", patience, min_delta)
    stop = run(first, aps[:cut])
    if stop is None:
        record = Metrics.from_dict(json.loads(json.dumps(first.record(evaluation(cut, aps[cut - 1]),
                                                                      f"ckpt-{cut}").as_dict())))
        resumed = Tracker.resume(record, "AP", patience, min_delta)
        stop = run(resumed, aps[cut:], first_step=cut + 1)
        first = resumed
    assert stop == whole_stop
    assert (first.best, first.waited, first.reference) == (whole.best, whole.waited, whole.reference)


def test_min_delta_a_lower_is_better_loss_and_a_class_metric():
    tracker = Tracker("AP", patience=2, min_delta=0.05)
    assert run(tracker, [0.30, 0.33, 0.34, 0.36]) == 3  # 0.33 and 0.34 are new bests, but not by 0.05
    assert tracker.best["step"] == 3 and tracker.reference == 0.30
    assert "2 evaluations in a row without an improvement of AP by at least 0.05" in tracker.stopped["reason"]

    loss = Tracker("validation_loss", patience=0)
    for step, value in enumerate([2.0, 1.5, 1.7], start=1):
        loss.update(evaluation(step, 0.1, loss=value), f"best/ckpt-{step}")
    assert loss.best["step"] == 2 and not loss.should_stop()

    per_class = {"square": {"AP": 0.2}, "circle": {"AP": None}}
    assert metric_value(evaluation(1, 0.5, per_class=per_class), "AP/square") == 0.2
    assert metric_value(evaluation(1, 0.5, per_class=per_class), "AP/circle") is None
    assert metric_value({"accuracy": 0.5, "per_class": {"a/b": {"accuracy": 0.25}}}, "accuracy/a/b") == 0.25


def test_another_metric_on_resume_rescores_the_best_and_restarts_the_count():
    first = Tracker("AP", patience=3)
    run(first, [0.5, 0.4])
    record = first.record(evaluation(2, 0.4), "ckpt-2")
    resumed = Tracker.resume(record, "validation_loss", 3, 0.0)
    assert resumed.best["step"] == 1 and resumed.best["value"] == 1.0 and resumed.waited == 0
    old = Metrics({"step": 2, "AP": 0.4})  # an old metrics.json: nothing kept
    assert Tracker.resume(old, "AP", 3, 0.0).best is None


@pytest.mark.parametrize("metric", ["AP", "validation_loss", "AP50/square", "AP/circle"])
def test_check_metric_takes_metrics_json_names(metric):
    check_metric(metric, NAMES, LABELS)


@pytest.mark.parametrize("metric", ["ap", "AP/hexagon", "validation_loss/circle", "accuracy"])
def test_check_metric_refuses_other_names_in_one_line(metric):
    with pytest.raises(UserError, match=r"--select-metric .* is not a metric of this run: choose one of AP, AP50, "
                                        r"validation_loss, or one class's as NAME/LABEL .*\(e.g. AP/circle\)"):
        check_metric(metric, NAMES, LABELS)


def write_checkpoint_files(folder, name):
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".index", ".data-00000-of-00001"):
        (folder / f"{name}{suffix}").write_text("weights")


def test_export_takes_the_best_checkpoint_else_the_last(tmp_path, capsys):
    model = tmp_path / "model"
    write_checkpoint_files(model / "best", "ckpt-20")
    latest = str(model / "ckpt-60")
    assert checkpoint_to_export(tmp_path, latest) == (latest, "ckpt-60")  # no metrics.json
    (tmp_path / "metrics.json").write_text(json.dumps({"step": 60, "AP": 0.3}))  # written before `best` existed
    assert checkpoint_to_export(tmp_path, latest) == (latest, "ckpt-60")
    tracker = Tracker("AP")
    run(tracker, [0.5, 0.3, 0.4], first_step=20)
    (tmp_path / "metrics.json").write_text(json.dumps(tracker.record(evaluation(22, 0.4), "ckpt-22").as_dict()))
    assert checkpoint_to_export(tmp_path, latest) == (str(model / "best" / "ckpt-20"), "best/ckpt-20")
    (model / "best" / "ckpt-20.index").unlink()
    assert checkpoint_to_export(tmp_path, latest) == (latest, "ckpt-60")
    assert "best checkpoint" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"model/checkpoint is missing: run `python -m trainer train --result-dir "
                                        r".*` first"):
        checkpoint_to_export(tmp_path, None)


def test_summary_shows_the_exported_best_evaluation_the_last_and_why_training_stopped(tmp_path):
    tracker = Tracker("AP", patience=2)
    aps = [0.2, 0.5, 0.45, 0.4]
    for step, ap in zip((10, 20, 30, 40), aps):
        tracker.update(evaluation(step, ap, per_class={"circle": {"AP": ap, "AP50": ap}}), f"best/ckpt-{step}")
    tracker.stop(40)
    (tmp_path / "metrics.json").write_text(json.dumps(tracker.record(evaluation(40, 0.4), "ckpt-40").as_dict()))
    (tmp_path / "experiment.json").write_text(json.dumps({"model": "demo"}))
    lines = summary(tmp_path)
    assert lines[1] == ("  model demo, step 20: AP 0.500, AP50 0.500 (validation split; the best by AP, exported "
                        "from best/ckpt-20; the last, step 40: AP 0.400)")
    assert lines[2] == "    circle               AP 0.500  AP50 0.500"
    assert lines[3] == ("  early stopping at step 40: 2 evaluations in a row without an improvement of AP by at least "
                        "0.001 (patience 2); best AP 0.500 at step 20")


def test_the_report_says_which_evaluation_was_exported(tmp_path):
    from trainer.report.model import selection_line
    from trainer.report.page import Page

    tracker = Tracker("AP50")
    run(tracker, [0.5, 0.25], first_step=1)
    page = Page(tmp_path)
    selection_line(page, tracker.record(evaluation(2, 0.25), "ckpt-2"))
    selection_line(page, Metrics({"step": 2, "AP": 0.25}))  # written before `best` existed: no line
    assert page.parts == ['<p class="">Exported: the best evaluation by AP50, step 1 (0.500, model/best/ckpt-1); the '
                          'metrics below are the last evaluation&#x27;s, step 2.</p>']
