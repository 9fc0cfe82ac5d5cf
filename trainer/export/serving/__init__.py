"""Each task's serving code for every export format, one module per task (after Model Garden's
`official/vision/serving`): what a detector or a classifier takes in and gives out in each format.

The format modules (saved_model.py, tflite.py, coreml.py, ...) do what a format needs whatever
the task, and ask `get(job.task)` for the task's part, so a third task is one new module here.
"""
from trainer import tasks
from trainer.export.serving import classification, detection

SERVING = {module.NAME: module for module in (detection, classification)}


def get(task_name):
    """The serving module of the task named TASK_NAME (a UserError names the known tasks)."""
    return SERVING[tasks.get(task_name).NAME]
