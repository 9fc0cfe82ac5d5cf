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
