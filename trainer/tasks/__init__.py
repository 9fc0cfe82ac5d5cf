"""The tasks a run can train, one module each, after Model Garden's `task_factory`.

What differs between a detector and a classifier lives in its task's module, so callers ask
`get(task)` for the fact instead of testing the task's name, and a third task is one new module.
"""
from trainer.errors import UserError
from trainer.tasks import classification, detection

TASKS = {task.NAME: task for task in (detection, classification)}


def get(task_name):
    """The module of the task named TASK_NAME (a report's or experiment's `task`)."""
    if task_name not in TASKS:
        raise UserError(f"unknown task {task_name!r}: one of {', '.join(TASKS)}")
    return TASKS[task_name]
