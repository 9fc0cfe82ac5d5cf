"""The export table: one row per model format, the one place that says where each lands and what runs it.

After Ultralytics' `export_formats()`. A row is an output export.json and evaluation.json
can hold: its folder and main file under RESULT_DIR, the module that writes and runs it
(trainer/export/MODULE.py: `write(job, row)` -> its path, `run(job, path, images)`), the
runtime its evaluation runs it in and the tasks it serves. A quantised TFLite row comes
from `tflite` on --quantize; a derived row (MediaPipe) writes nothing and evaluates its
source's file in another runtime, whenever that source is exported.
"""
import importlib
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import UserError
from trainer.run_dir import EXPORT_DIR

REFERENCE = "saved_model"  # always written: the others are converted from it and measured against it
TASKS = ("detection", "classification")


@dataclass(frozen=True)
class ExportFormat:
    """One row of the table."""
    name: str             # the key in --formats, export.json and evaluation.json
    module: str           # trainer.export.MODULE writes and runs it
    folder: str           # under RESULT_DIR
    file: str             # the main file (or folder) in FOLDER
    runtime: str          # what its evaluation runs it with
    tasks: tuple = TASKS  # the tasks it can export
    quantize: str = None  # the --quantize option it is written with (a TFLite variant)
    source: str = None    # the --formats format it comes with (a variant's, a derived row's)
    derived: bool = False  # writes nothing: SOURCE's file, evaluated in RUNTIME

    def path(self, result_dir):
        """Its main file under RESULT_DIR."""
        return Path(result_dir) / self.folder / self.file

    def unsupported(self, task, declared):
        """Why a TASK model whose catalogue entry DECLARED ({format: reason}) cannot have it; None when it can."""
        if task not in self.tasks:
            return f"{self.name} exports no {task} models"
        return declared.get(self.source or self.name)

    def write(self, job):
        return importlib.import_module(f"trainer.export.{self.module}").write(job, self)

    def run(self, job, path, images):
        return importlib.import_module(f"trainer.export.{self.module}").run(job, path, images)


EXPORT_FORMATS = {row.name: row for row in (
    ExportFormat(REFERENCE, "saved_model", EXPORT_DIR, "saved_model", "TensorFlow, as TF Serving runs it"),
    ExportFormat("tflite", "tflite", "model_android", "model.tflite", "LiteRT's interpreter"),
    ExportFormat("tfjs", "tfjs", "model_web", "model.json", "@tensorflow/tfjs in Node"),
    ExportFormat("coreml", "coreml", "model_ios", "Model.mlmodel",
                 "the converted TensorFlow function and Core ML's NMS (Core ML runs on Apple systems only)"),
    ExportFormat("tflite_fp16", "tflite", "model_android", "model_fp16.tflite", "LiteRT's interpreter",
                 quantize="fp16", source="tflite"),
    ExportFormat("tflite_int8", "tflite", "model_android", "model_int8.tflite", "LiteRT's interpreter",
                 quantize="int8", source="tflite"),
    ExportFormat("mediapipe", "mediapipe_tasks", "model_android", "model.tflite",
                 "MediaPipe Tasks (ObjectDetector, ImageClassifier) in .venv-mediapipe", source="tflite", derived=True),
)}
FORMAT_NAMES = tuple(name for name, row in EXPORT_FORMATS.items() if not row.source)  # --formats, all by default
QUANTIZE = tuple(row.quantize for row in EXPORT_FORMATS.values() if row.quantize)  # --quantize


def outputs(formats, quantize):
    """The rows' names an export of FORMATS with QUANTIZE writes or evaluates, in order; unknown names refused."""
    unknown = sorted(set(formats) - set(FORMAT_NAMES)) + sorted(set(quantize) - set(QUANTIZE))
    if unknown:
        raise UserError(f"unknown format or quantisation {', '.join(unknown)}; formats: {', '.join(FORMAT_NAMES)}; "
                        f"quantize: {', '.join(QUANTIZE)}")
    quantized = {row.quantize: name for name, row in EXPORT_FORMATS.items() if row.quantize}
    derived = [name for name, row in EXPORT_FORMATS.items() if row.derived and row.source in formats]
    return list(dict.fromkeys([REFERENCE, *formats, *(quantized[q] for q in quantize), *derived]))
