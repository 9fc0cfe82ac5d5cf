"""The run folder (RESULT_DIR): every path the stages share, and typed records of their JSON files.

Stages talk only through RESULT_DIR, so this module is their contract: `RunDir` names
each file once, and `Report` (data/report.json), `Experiment` (experiment.json),
`Metrics` (metrics.json) and `ExportManifest` (model_export/export.json) read and write
them. The JSON on disk keeps the keys and values earlier versions wrote, so a run
folder written by them still loads and resumes; keys this version does not know are
ignored, keys an older version did not write take the defaults that version meant.
Deep, free-form parts (per-class tables, a warm start's record) stay dicts.
"""
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import UserError

PARTIAL_SUFFIX = ".partial"
EXPORT_DIR = "model_export"  # the SavedModel's folder, and export.json, evaluation.json and evaluation/ beside it
BEST_FOLDER = "best"  # under model/: the best evaluation's checkpoint files (metrics.json's best/ckpt-N)
# The command that writes each stage's outputs, for the one "run it first" error.
STAGE_COMMANDS = {"prepare": "python -m trainer prepare --data-dir DATA_DIR --result-dir {result_dir}",
                  "config": "python -m trainer config --result-dir {result_dir}",
                  "train": "python -m trainer train --result-dir {result_dir}",
                  "export": "python -m trainer export --result-dir {result_dir}"}


class StageMissing(UserError):
    """An earlier stage's output is not in the run folder: one line naming the file and the command to run."""

    def __init__(self, path, stage, result_dir):
        command = STAGE_COMMANDS[stage].format(result_dir=result_dir)
        super().__init__(f"{path} is missing: run `{command}` first")


@dataclass(frozen=True)
class RunDir:
    """RESULT_DIR's paths: what each stage writes, named once."""

    root: Path

    def __init__(self, root):
        object.__setattr__(self, "root", Path(root))

    @property
    def data(self):
        """prepare's folder: records, label files, report.json."""
        return self.root / "data"

    @property
    def report_json(self):
        return self.data / "report.json"

    @property
    def labels_json(self):
        return self.data / "labels.json"

    @property
    def label_map(self):
        return self.data / "label_map.pbtxt"

    @property
    def params(self):
        return self.root / "params.yaml"

    @property
    def experiment_json(self):
        return self.root / "experiment.json"

    @property
    def pretrained(self):
        """The zoo checkpoint copied for the other workers of a multi-worker job."""
        return self.root / "pretrained"

    @property
    def model(self):
        """train's checkpoints and TensorBoard events."""
        return self.root / "model"

    @property
    def best(self):
        """The best evaluation's checkpoint files (what export exports)."""
        return self.model / BEST_FOLDER

    @property
    def dataset_json(self):
        """The labels and ids model/'s checkpoints were trained on."""
        return self.model / "dataset.json"

    @property
    def metrics_json(self):
        return self.root / "metrics.json"

    @property
    def exports(self):
        """The SavedModel's folder, holding the export manifest and evaluation."""
        return self.root / EXPORT_DIR

    @property
    def evaluation_details(self):
        """Export evaluation's COCO files: groundtruth.json and FORMAT_detections.json (a classifier's
        FORMAT_predictions.json), which the report analyses."""
        return self.exports / "evaluation"

    @property
    def export_json(self):
        return self.exports / "export.json"

    @property
    def evaluation_json(self):
        return self.exports / "evaluation.json"

    @property
    def report_html(self):
        return self.root / "report.html"

    @property
    def logs(self):
        return self.root / "logs"

    def records(self, split):
        """data/SPLIT-*.tfrecord, sorted."""
        return sorted(self.data.glob(f"{split}-*.tfrecord"))

    def shared_files(self):
        """What the chief writes for the other workers, relative to the root: dataset, config, shared checkpoint."""
        names = [self.report_json, self.labels_json, self.params, self.experiment_json, *sorted(self.pretrained.glob("*"))]
        return [str(path.relative_to(self.root)) for path in names]


def _read(path, stage, run):
    """PATH's JSON value; StageMissing (STAGE writes it) when absent."""
    if not path.is_file():
        raise StageMissing(path, stage, run.root)
    return json.loads(path.read_text())


def write_json(path, value, ensure_ascii=True):
    """Rewrite PATH whole as indented JSON (FUSE-safe: a file replace, never a directory rename)."""
    partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=ensure_ascii) + "\n")
    os.replace(partial, path)


class _Record:
    """from_dict / as_dict between a frozen dataclass and its JSON object (unknown keys ignored).

    `LATER`: keys newer than files a run may hold, left out while None, so an older run's file is written back as it
    was."""

    LATER = ()

    @classmethod
    def from_dict(cls, data):
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def as_dict(self):
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if not (field.name in self.LATER and getattr(self, field.name) is None)}


def load_labels(run):
    """data/labels.json: the label names in id order."""
    return _read(run.labels_json, "prepare", run)


def read_labels(path):
    """A labels.json anywhere (an export folder's, a run's)."""
    return json.loads(Path(path).read_text())


LABELS_FILE = "labels.json"  # beside every exported model, and in data/


def write_labels(folder, labels, newline=True):
    """FOLDER/labels.json (names in id order); data/'s ends with a newline, the export folders' never did."""
    Path(folder, LABELS_FILE).write_text(json.dumps(labels, ensure_ascii=False) + ("\n" if newline else ""),
                                         encoding="utf-8")


@dataclass(frozen=True)
class Report(_Record):
    """data/report.json, prepare's marker (written last): counts, record files, every skipped or repaired item.

    `splits`: {"train"|"val": counts per class}; `files`: {"train"|"val": record file names in data/};
    `stored_pixels`: {"train"|"val": pixels of the split's stored images}, what decoding it takes (3 bytes a pixel;
    None in reports older than it).
    """

    LATER = ("stored_pixels",)

    task: str = "detection"
    labels: list = dataclasses.field(default_factory=list)
    split_from: str = None
    splits: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)
    max_boxes_per_image: int = 1
    input_size: int = None
    stored_pixels: dict = None
    skipped: list = dataclasses.field(default_factory=list)
    repaired: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)
    options: dict = None
    fingerprint: str = None

    @classmethod
    def load(cls, run):
        return cls.from_dict(_read(run.report_json, "prepare", run))

    @classmethod
    def find(cls, run):
        """The report, or None when it is absent or unreadable (a run killed while writing it)."""
        try:
            return cls.from_dict(json.loads(run.report_json.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, run):
        write_json(run.report_json, self.as_dict(), ensure_ascii=False)

    def images(self, split):
        return self.splits[split]["images"]

    def decoded_bytes(self, split):
        """Bytes SPLIT's images take decoded (RGB), or None where prepare counted no pixels."""
        return 3 * self.stored_pixels[split] if self.stored_pixels else None

    def record_files(self, split):
        return self.files.get(split, [])


@dataclass(frozen=True)
class EvaluationPlan(_Record):
    """Whether training evaluates, and why not (no validation split, too few images for a TPU's batch)."""

    evaluated: bool = True
    reason: str = ""


@dataclass(frozen=True)
class Experiment(_Record):
    """experiment.json, beside params.yaml: the Model Garden experiment to load it onto, and why the run got its
    steps, batch size and hardware. `hardware`: config's Hardware as a dict; `init_from`: a warm start's record;
    `data_service`: the tf.data service (grpc://HOST:PORT) that runs the training input, or None."""

    model: str = None
    asked_model: str = None
    task: str = "detection"
    experiment: str = None
    hardware: dict = None
    batch_size: int = None
    learning_rate: float = None
    steps: int = None
    steps_reason: str = None
    steps_per_loop: int = None
    warmup_steps: int = None
    validation_interval: int = None
    checkpoint_interval: int = None
    init_checkpoint: str = None
    evaluation: EvaluationPlan = EvaluationPlan()
    init_from: dict = None
    data_service: str = None

    @classmethod
    def from_dict(cls, data):
        record = super().from_dict(data)
        return dataclasses.replace(record, evaluation=EvaluationPlan.from_dict(data.get("evaluation") or {}))

    def as_dict(self):
        """Every key, as config writes them; `init_from` only for a warm start, `data_service` only with one."""
        record = super().as_dict()
        for key in ("init_from", "data_service"):
            if record[key] is None:
                del record[key]
        return {**record, "evaluation": self.evaluation.as_dict()}

    @classmethod
    def load(cls, run):
        return cls.from_dict(_read(run.experiment_json, "config", run))

    def write(self, run):
        run.experiment_json.write_text(json.dumps(self.as_dict(), indent=2) + "\n")


@dataclass(frozen=True)
class Metrics(_Record):
    """metrics.json: the last evaluation's metrics at the top level (`evaluation`: step, AP... or accuracy...,
    or evaluated: false and the reason), and train's bookkeeping: `best`, `last`, `early_stopping` (trainer/best.py).
    Runs from before the bookkeeping have only the evaluation."""

    evaluation: dict
    best: dict = None
    last: dict = None
    early_stopping: dict = None

    BOOKKEEPING = ("best", "last", "early_stopping")

    @classmethod
    def from_dict(cls, data):
        return cls({key: value for key, value in data.items() if key not in cls.BOOKKEEPING},
                   **{key: data[key] for key in cls.BOOKKEEPING if key in data})

    def as_dict(self):
        return {**self.evaluation, **{key: getattr(self, key) for key in self.BOOKKEEPING
                                      if getattr(self, key) is not None}}

    @property
    def step(self):
        return self.evaluation.get("step")

    @property
    def evaluated(self):
        return self.evaluation.get("evaluated", True)

    @property
    def stopped(self):
        """{"step", "reason"} when early stopping ended the run, else None."""
        return (self.early_stopping or {}).get("stopped")

    @property
    def exported(self):
        """The exported evaluation's metrics: the best's, else the last."""
        return (self.best or {}).get("metrics") or self.evaluation

    @classmethod
    def load(cls, run):
        return cls.from_dict(_read(run.metrics_json, "train", run))

    @classmethod
    def find(cls, run):
        """The metrics, or None before the first evaluation."""
        return cls.load(run) if run.metrics_json.is_file() else None

    def write(self, run):
        write_json(run.metrics_json, self.as_dict())


@dataclass(frozen=True)
class ExportManifest(_Record):
    """model_export/export.json: the checkpoint exported (relative to model/) and each format's result:
    {"path" (relative to RESULT_DIR), "bytes", "evaluation"} or {"error"} or {"unsupported"}."""

    checkpoint: str = ""
    results: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def find(cls, run):
        """The manifest, or None before the first export."""
        return cls.from_dict(json.loads(run.export_json.read_text())) if run.export_json.is_file() else None

    def write(self, run):
        run.export_json.write_text(json.dumps({"checkpoint": self.checkpoint, "results": self.results}, indent=2))


def find_evaluations(run):
    """model_export/evaluation.json: {format: its scores, or why it has none}; {} before the first evaluation."""
    return json.loads(run.evaluation_json.read_text()) if run.evaluation_json.is_file() else {}


def write_evaluations(run, table):
    run.evaluation_json.write_text(json.dumps(table, indent=2))
