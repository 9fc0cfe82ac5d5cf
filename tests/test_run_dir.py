"""The run folder's contract (trainer/run_dir.py): paths named once, typed records that read what every version
wrote, one "run X first" error, and no other module reading the stages' JSON by string key."""
import ast
import json
import shutil
from pathlib import Path

import pytest

from trainer import config, export, summary
from trainer.best import Tracker
from trainer.errors import UserError
from trainer.hardware import Hardware
from trainer.run_dir import (EvaluationPlan, Experiment, ExportManifest, Metrics, Report, RunDir, StageMissing,
                             load_labels, write_labels)

ROOT = Path(__file__).resolve().parent.parent
# The JSON files one stage writes and another reads: only run_dir.py names them.
RUN_FILES = ("report.json", "labels.json", "experiment.json", "metrics.json", "export.json", "evaluation.json")
# RunDir's paths of those files: outside run_dir.py they are passed around, tested for, never opened.
JSON_PATHS = ("report_json", "labels_json", "experiment_json", "metrics_json", "export_json", "evaluation_json")
READS = ("read_text", "read_bytes", "open")
# An old run folder: the JSON files (and params.yaml, the checkpoint state files) of a demo detector trained
# 60 steps and exported by the code before run_dir.py, byte for byte as its writers wrote them (checked
# against those writers); no records or weights. `copy_old_run` adds empty stand-ins for the weights.
OLD_RUN = Path(__file__).parent / "data" / "old_run"


def _modules():
    for folder in ("trainer", "cloud"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            if name != "trainer/run_dir.py":
                yield name, ast.parse(path.read_text())


def _run_file_reads(tree):
    """(line, what) of each string-keyed run-folder read in TREE: a literal naming a run file (the whole string or
    its last path part), or RunDir's path of one opened, read or passed to open()/json.load()."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.rsplit("/", 1)[-1] in RUN_FILES:
            found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.Attribute) and node.attr in JSON_PATHS:
            parent = parents.get(node)
            opened = isinstance(parent, ast.Attribute) and parent.attr in READS
            called = isinstance(parent, ast.Call) and node in parent.args and ast.unparse(parent.func) in (
                "open", "json.load", "json.loads")
            if opened or called:
                found.append((node.lineno, f".{node.attr}.{parent.attr if opened else ''} read"))
    return found


def test_no_module_but_run_dir_reads_a_run_folder_json_by_string_key():
    reads = [f"{name}:{line}: {what}" for name, tree in _modules() for line, what in _run_file_reads(tree)]
    assert reads == []


def test_the_check_finds_each_kind_of_read():
    tree = ast.parse('import json\np = result_dir / "metrics.json"\nq = "data/labels.json"\n'
                     'r = json.loads(run.report_json.read_text())\ns = open(run.experiment_json)\n'
                     't = "see report.json"\nu = run.metrics_json.is_file()\n')
    assert sorted(line for line, _ in _run_file_reads(tree)) == [2, 3, 4, 5]


def copy_old_run(tmp_path):
    """OLD_RUN in TMP_PATH, with empty files where its checkpoints and exports were."""
    folder = tmp_path / "old"
    shutil.copytree(OLD_RUN, folder)
    for name in ("model/ckpt-60.index", "model/best/ckpt-60.index", "model_android/model.tflite",
                 "model_ios/Model.mlmodel", "model_web/model.json", "model_export/saved_model/saved_model.pb"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    return RunDir(folder)


def test_records_read_an_old_run_folder(tmp_path):
    run = copy_old_run(tmp_path)
    report = Report.load(run)
    assert (report.task, report.labels, report.images("train"), report.images("val")) == (
        "detection", ["circle", "square", "triangle"], 79, 17)
    assert report.record_files("val") == ["val-00000-of-00001.tfrecord"] and report.max_boxes_per_image == 4
    assert report.repaired[0] == {"image": "sample-0003.jpg", "reason": "rotated: EXIF orientation 6"}
    experiment = Experiment.load(run)
    assert (experiment.model, experiment.experiment, experiment.steps, experiment.batch_size) == (
        "demo", "retinanet_mobile_coco", 60, 8)
    assert experiment.evaluation == EvaluationPlan(True, "") and experiment.init_from is None
    assert Hardware(**experiment.hardware) == Hardware("cpu")
    metrics = Metrics.load(run)
    assert (metrics.step, metrics.evaluated, metrics.best["checkpoint"], metrics.stopped) == (
        60, True, "best/ckpt-60", None)
    assert metrics.evaluation["AP50"] == 0.046204619109630585 and metrics.exported["step"] == 60
    manifest = ExportManifest.find(run)
    assert manifest.checkpoint == "best/ckpt-60" and manifest.results["tflite"]["bytes"] == 2228284
    assert load_labels(run) == ["circle", "square", "triangle"]


@pytest.mark.parametrize("record, path", [(Report, "report_json"), (Experiment, "experiment_json"),
                                          (Metrics, "metrics_json"), (ExportManifest, "export_json")])
def test_each_record_writes_back_the_bytes_it_read(tmp_path, record, path):
    """Load then write gives the very file main wrote: same keys, values, order and final newline."""
    run = copy_old_run(tmp_path)
    before = getattr(run, path).read_bytes()
    loaded = record.load(run) if hasattr(record, "load") else record.find(run)
    getattr(run, path).unlink()
    loaded.write(run)
    assert getattr(run, path).read_bytes() == before
    assert not list(run.root.rglob("*.partial"))


def test_unknown_and_absent_keys_load(tmp_path):
    """A key this version does not know is ignored; an older file's absent keys take what that version meant."""
    run = RunDir(tmp_path)
    run.data.mkdir()
    run.report_json.write_text(json.dumps({"labels": ["a"], "splits": {"train": {"images": 2}, "val": {"images": 0}},
                                           "files": {"train": ["train-00000-of-00001.tfrecord"], "val": []},
                                           "from_the_future": 1}))
    run.experiment_json.write_text(json.dumps({"model": "demo", "experiment": "retinanet_mobile_coco",
                                               "hardware": {"kind": "cpu"}, "later": {"x": 1}}))
    run.metrics_json.write_text(json.dumps({"step": 5, "AP": 0.5}))
    report, experiment, metrics = Report.load(run), Experiment.load(run), Metrics.load(run)
    assert (report.task, report.max_boxes_per_image, report.images("train")) == ("detection", 1, 2)
    assert (experiment.task, experiment.evaluation, experiment.init_from) == ("detection", EvaluationPlan(), None)
    assert (metrics.best, metrics.stopped, metrics.exported) == (None, None, {"step": 5, "AP": 0.5})
    assert Tracker.resume(metrics, "AP", 2, 0.0).best is None


def test_round_trips_of_what_the_stages_write(tmp_path):
    run = RunDir(tmp_path)
    run.data.mkdir()
    report = Report(task="classification", labels=["cat", "dog"], split_from="hash",
                    splits={"train": {"images": 4, "per_class": {"cat": 2, "dog": 2}}, "val": {"images": 2}},
                    files={"train": ["train-00000-of-00001.tfrecord"], "val": ["val-00000-of-00001.tfrecord"]},
                    max_boxes_per_image=0, input_size=224, skipped=[{"image": "x.png", "reason": "unreadable"}],
                    repaired=[], warnings=[], options={"seed": 42}, fingerprint="abc")
    report.write(run)
    assert Report.load(run) == report and json.loads(run.report_json.read_text())["labels"] == ["cat", "dog"]
    experiment = Experiment(model="demo", asked_model=None, task="detection", experiment="retinanet_mobile_coco",
                            hardware={"kind": "gpu", "num_gpus": 2, "num_workers": 1, "tpu": "", "simulated": False},
                            batch_size=16, learning_rate=0.02, steps=100, steps_reason="as asked", steps_per_loop=50,
                            warmup_steps=10, validation_interval=50, checkpoint_interval=50, init_checkpoint="",
                            evaluation=EvaluationPlan(False, "no val"), init_from={"run": "/runs/a", "modules": ["all"]})
    experiment.write(run)
    assert Experiment.load(run) == experiment
    assert json.loads(run.experiment_json.read_text())["evaluation"] == {"evaluated": False, "reason": "no val"}
    tracker = Tracker("AP")
    tracker.update({"step": 10, "AP": 0.5}, "best/ckpt-10")
    metrics = tracker.record({"step": 10, "AP": 0.5}, "ckpt-10")
    metrics.write(run)
    assert Metrics.load(run) == metrics and Tracker.resume(Metrics.load(run), "AP", 2, 0.0).best["step"] == 10
    unevaluated = Metrics({"step": 3, "evaluated": False, "reason": "no val"})
    unevaluated.write(run)
    assert json.loads(run.metrics_json.read_text()) == {"step": 3, "evaluated": False, "reason": "no val"}
    assert Metrics.load(run) == unevaluated and not unevaluated.evaluated
    run.exports.mkdir()
    manifest = ExportManifest("ckpt-3", {"saved_model": {"path": "model_export/saved_model", "bytes": 9},
                                         "coreml": {"unsupported": "no"}})
    manifest.write(run)
    assert ExportManifest.find(run) == manifest
    write_labels(run.data, ["ä", "b"])
    assert run.labels_json.read_text(encoding="utf-8") == '["ä", "b"]\n' and load_labels(run) == ["ä", "b"]


@pytest.mark.parametrize("read, stage, command", [
    (Report.load, "prepare", "python -m trainer prepare --data-dir DATA_DIR --result-dir {root}"),
    (load_labels, "prepare", "python -m trainer prepare --data-dir DATA_DIR --result-dir {root}"),
    (Experiment.load, "config", "python -m trainer config --result-dir {root}"),
    (Metrics.load, "train", "python -m trainer train --result-dir {root}"),
])
def test_one_missing_stage_message(tmp_path, read, stage, command):
    with pytest.raises(StageMissing) as raised:
        read(RunDir(tmp_path))
    message = str(raised.value)
    assert message.endswith(f" is missing: run `{command.format(root=tmp_path)}` first") and "\n" not in message
    assert isinstance(raised.value, UserError)


def test_every_stage_says_the_same_missing_line(tmp_path):
    """config, train and export, each before the stage it needs: the one StageMissing line naming its file."""
    from trainer import train

    cases = [(lambda: config.write_params(tmp_path, "demo", hardware=Hardware("cpu")), "data/report.json",
              "prepare --data-dir DATA_DIR"),
             (lambda: train.train(tmp_path), "params.yaml", "config"),
             (lambda: config.load_params(tmp_path), "experiment.json", "config")]
    for call, name, stage in cases:
        with pytest.raises(StageMissing, match=f"^{tmp_path / name} is missing: run `python -m trainer {stage} "
                                               f"--result-dir {tmp_path}` first$"):
            call()


def test_the_summary_of_an_old_run(tmp_path):
    lines = summary.summary(copy_old_run(tmp_path).root)
    assert lines[1] == ("  model demo, step 60: AP 0.029, AP50 0.046 (validation split; the best by AP and the "
                        "last, exported)")
    assert lines[3] == "    square               AP 0.087  AP50 0.139"
    assert lines[6] == "    saved_model     8.3 MB  model_export/saved_model  AP 0.142"
    assert lines[7] == "    tflite          2.2 MB  model_android/model.tflite  AP 0.144 (mediapipe AP 0.152)"


def test_an_old_run_resumes_train_and_export_find_it_done(tmp_path, capsys):
    """The resume path a preempted job takes on its rerun (tests/test_train.py's kill/preempt test trains one):
    train at its final step with metrics.json from it returns at once, export finds every output up to date."""
    from trainer import train

    run = copy_old_run(tmp_path)
    before = {path: path.read_bytes() for path in run.root.rglob("*") if path.is_file()}
    assert train.train(run.root) == json.loads(run.metrics_json.read_text())
    results = export.export(run.root)
    assert results == {name: {"path": str(run.root / entry["path"]), "bytes": entry["bytes"]}
                       for name, entry in json.loads(run.export_json.read_text())["results"].items()}
    out = capsys.readouterr().out
    assert "train: complete: ckpt-60 and metrics.json are at the final step; nothing to do" in out
    assert "export: coreml: up to date (" in out
    assert {path: path.read_bytes() for path in run.root.rglob("*") if path.is_file()} == before


def test_an_old_run_is_a_warm_start_source(tmp_path):
    from trainer import warm_start

    run = copy_old_run(tmp_path)
    assert warm_start.source(run.root) == {
        "run": str(run.root), "checkpoint": str(run.best / "ckpt-60"), "checkpoint_name": "best/ckpt-60",
        "model": "demo", "task": "detection", "labels": ["circle", "square", "triangle"]}
