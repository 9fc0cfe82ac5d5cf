"""The task registry (trainer/tasks/): each task's facts in its own module, and no task-name test elsewhere."""
import ast
from pathlib import Path

import pytest

from trainer import tasks
from trainer.errors import UserError
from trainer.tasks import classification, detection

ROOT = Path(__file__).resolve().parent.parent
NAMES = {"detection", "classification"}
# Modules that may still compare a value with a task's name, each with why.
ALLOWED = {
    "trainer/export/mediapipe_run.py": "standalone: runs in the MediaPipe venv's Python, which has no trainer package",
    "trainer/annotations.py": "compares the bucket's Cloud Annotations `type` (a file format value), not a task",
    "trainer/sample.py": "compares the sample bucket's Cloud Annotations `type` (--type), not a task",
}


def task_name_tests(tree):
    """[line, ...] of every comparison in TREE with the literal "detection" or "classification"."""
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Compare)
            and any(isinstance(operand, ast.Constant) and operand.value in NAMES
                    for operand in (node.left, *node.comparators))]


def test_the_registry_returns_each_task_by_its_name():
    assert tasks.TASKS == {"detection": detection, "classification": classification}
    assert tasks.get("detection") is detection
    assert tasks.get("classification") is classification


def test_an_unknown_task_is_refused_in_one_line():
    with pytest.raises(UserError) as raised:
        tasks.get("segmentation")
    assert str(raised.value) == "unknown task 'segmentation': one of detection, classification"


def test_each_task_holds_its_facts():
    assert (detection.FIRST_LABEL_ID, detection.DEFAULT_METRIC, detection.EXPORT_SCORES, detection.WARM_MODULES) == (
        1, "AP", ("AP", "AP50"), ("backbone", "decoder"))
    assert (classification.FIRST_LABEL_ID, classification.DEFAULT_METRIC, classification.EXPORT_SCORES,
            classification.WARM_MODULES) == (0, "accuracy", ("accuracy", "top_5_accuracy"), ("backbone",))
    assert (detection.BOXES, detection.OBJECTS, detection.LEARNER, detection.SUMMARY) == (
        True, ("boxes", "box"), "detector", "")
    assert (classification.BOXES, classification.OBJECTS, classification.LEARNER, classification.SUMMARY) == (
        False, ("images", "image"), "classifier", ", classification")
    assert detection.SERVING_OUTPUTS == ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
    assert classification.SERVING_OUTPUTS == ("probs",)


def test_each_task_names_the_metrics_train_may_select_by():
    assert detection.metric_names(["a"]) == {
        "top": ["AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl",
                "validation_loss"], "per_class": ["AP", "AP50", "AP75", "ARmax100"]}
    assert classification.metric_names(list("abcde")) == {"top": ["accuracy", "validation_loss"],
                                                          "per_class": ["accuracy"]}
    assert classification.metric_names(list("abcdef"))["top"] == ["accuracy", "top_5_accuracy", "validation_loss"]


def test_a_detectors_metrics_are_cocos_with_per_class_ap_from_id_1():
    output = {name: 0.5 for name in detection.COCO_METRICS} | {"APs": -1.0, "Precision mAP ByCategory/1": 0.25}
    metrics = detection.evaluation_metrics(output, ["cat"], 7, confusion=None)
    assert metrics["step"] == 7 and metrics["AP"] == 0.5 and metrics["APs"] is None
    assert metrics["per_class"] == {"cat": {"AP": 0.25, "AP50": None, "AP75": None, "ARmax100": None}}
    assert metrics["validation_loss"] is None


def test_the_scan_finds_a_task_name_compared_on_either_side():
    tree = ast.parse('if task == "detection":\n    pass\nx = 1 if "classification" != kind else 0\n'
                     'y = {"detection": 1}\nz = kind in ("detection",)\n')
    assert task_name_tests(tree) == [1, 3]


def test_no_module_outside_trainer_tasks_tests_a_task_name():
    """A task's behaviour lives in trainer/tasks/: a third task is a new module there, not a hunt through
    every `if task == "classification"`."""
    found = {}
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("trainer/tasks/"):
            continue
        if lines := task_name_tests(ast.parse(path.read_text(), relative)):
            found[relative] = lines
    assert sorted(set(found) - set(ALLOWED)) == [], found
    assert sorted(set(ALLOWED) - set(found)) == [], "stale ALLOWED entries"
