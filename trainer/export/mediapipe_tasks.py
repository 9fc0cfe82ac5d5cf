"""MediaPipe Tasks: model_android/model.tflite (with its metadata) evaluated through ObjectDetector / ImageClassifier.

Not a file of its own: the `mediapipe` entry of evaluation.json is model.tflite as a
MediaPipe app runs it (the whole frame as an mp.Image; MediaPipe stretches it to the
input, reads labels and output meaning from the metadata). mediapipe 1.2.2 requires
absl-py 2 and opencv-contrib-python, and our TensorFlow Model Optimization pin requires
absl-py < 2 beside opencv-python-headless, so MediaPipe runs in its own environment
(`make mediapipe`: .venv-mediapipe, pinned by packaging/mediapipe-constraints.txt), through
mediapipe_run.py in a child process, as TF.js runs in Node.
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


from trainer.export import metadata, serving
from trainer.export.common import NotEvaluated, write_raw_images
from trainer.model_garden import SCORE_THRESHOLD

RUNNER = Path(__file__).with_name("mediapipe_run.py")
VENV = Path(__file__).resolve().parents[2] / ".venv-mediapipe"
MAX_RESULTS = 100  # with SCORE_THRESHOLD: what the models return, so every detection or class comes back


def python():
    """A Python with mediapipe: $MEDIAPIPE_PYTHON, .venv-mediapipe beside the code, or this one; else NotEvaluated."""
    explicit = os.environ.get("MEDIAPIPE_PYTHON")
    if explicit:
        return explicit
    if (VENV / "bin" / "python").is_file():
        return str(VENV / "bin" / "python")
    if importlib.util.find_spec("mediapipe"):
        return sys.executable
    raise NotEvaluated(f"MediaPipe not found (`make mediapipe` builds {VENV.name}, or set MEDIAPIPE_PYTHON to a "
                       "Python with mediapipe==1.2.2)")


def write(job, row):
    """The file MediaPipe loads: ROW's path, model_android/model.tflite, written (with its metadata) by the tflite
    format."""
    path = row.path(job.result_dir)
    if not path.is_file():
        raise RuntimeError(f"{path} was not written")
    return path


def run(job, path, images):
    """Detections (or probabilities) and seconds per image through MediaPipe Tasks, each whole image given."""
    results = detect(job.task, path, images)
    lines = metadata.label_lines(job.task, job.labels)
    convert = serving.get(job.task).from_mediapipe
    return ([convert(with_label_ids(r, lines), image.shape, job.labels) for r, image in zip(results, images)],
            [r["ms"] / 1000 for r in results])


def detect(task, path, images):
    """mediapipe_run.py's raw results for IMAGES (RGB uint8 arrays) and the model at PATH."""
    with tempfile.TemporaryDirectory() as tmp:
        listing = write_raw_images(images, tmp)
        command = [python(), str(RUNNER), task, str(path), str(listing), str(SCORE_THRESHOLD),
                   str(MAX_RESULTS)]
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError as err:  # e.g. $MEDIAPIPE_PYTHON names no program
            raise NotEvaluated(f"cannot run {command[0]}: {err}") from err
    if done.returncode:  # a runtime that refuses the model: the export's other formats still count
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise NotEvaluated(f"MediaPipe failed: {lines[-1] if lines else done.returncode}")
    return json.loads(done.stdout)["results"]


def with_label_ids(result, lines):
    """RESULT (one image's, from mediapipe_run.py) with each category's label id as its `index`: its line in
    labels.txt's LINES (see `metadata.label_lines`)."""
    categories = result.get("categories", []) + [c for d in result.get("detections", []) for c in d["categories"]]
    for category in categories:
        category["index"] = _label_id(category, lines)
    return result


def _label_id(category, names):
    """A category's index, or (as MediaPipe 1.2.2 leaves it unset when labels name it) its name's line."""
    return category["index"] if category["index"] is not None else names.index(category["name"])
