"""The model catalogue: one YAML file per model in configs/models/.

The folder sits beside the `trainer` package in the repo and in the zip bundle,
and inside it (as `trainer/catalogue_models`) when installed from the sdist,
so the catalogue travels with the code that reads it.
"""
from pathlib import Path

import yaml

from trainer.errors import UserError

_BESIDE_PACKAGE = Path(__file__).resolve().parent.parent / "configs" / "models"  # the repo and trainer.zip
_INSIDE_PACKAGE = Path(__file__).resolve().parent / "catalogue_models"  # an installed sdist or wheel
MODELS_DIR = _BESIDE_PACKAGE if _BESIDE_PACKAGE.is_dir() else _INSIDE_PACKAGE
# The model a bucket trains when none is named, by its task (the bucket's type).
DEFAULT_MODELS = {"detection": "retinanet_spinenet49_mobile", "classification": "mobilenet_v2"}


def load_model(name):
    """The catalogue entry NAME as a dict (see configs/models/README.md for its keys)."""
    path = MODELS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MODELS_DIR.glob("*.yaml")))
        raise UserError(f"unknown model {name!r}; known models: {known}")
    entry = yaml.safe_load(path.read_text())
    entry["name"] = name
    return entry


def input_side(entry):
    """The model's input side in pixels (images are scaled so that their longer side fits it)."""
    return max(entry["overrides"]["task"]["model"]["input_size"][:2])


def task_of(entry):
    """"detection" or "classification": the entry's `task` (detection when absent)."""
    return entry.get("task", "detection")


def resolve_model(name, task):
    """The catalogue model that trains a TASK bucket when NAME is asked for.

    None gives TASK's default. A model of the other task gives its TASK variant
    NAME_TASK when there is one (`demo` -> `demo_classification`, so MODEL=demo works
    on either bucket type); otherwise it is refused in one line.
    """
    if name is None:
        return DEFAULT_MODELS[task]
    entry = load_model(name)
    if task_of(entry) == task:
        return name
    variant = f"{name}_{task}"
    if (MODELS_DIR / f"{variant}.yaml").is_file() and task_of(load_model(variant)) == task:
        return variant
    same_task = sorted(p.stem for p in MODELS_DIR.glob("*.yaml") if task_of(load_model(p.stem)) == task)
    raise UserError(f"model {name!r} is a {task_of(entry)} model, but this bucket is for {task}: use one of "
                    f"{', '.join(same_task)}")


def defaults_help():
    """The default models, for --help: "retinanet_spinenet49_mobile for detection, ..."."""
    return ", ".join(f"{model} for {task}" for task, model in DEFAULT_MODELS.items())
