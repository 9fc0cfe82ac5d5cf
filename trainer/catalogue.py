"""The model catalogue: one YAML file per model in configs/models/.

The folder sits beside the `trainer` package in the repo and in the zip bundle,
so the catalogue travels with the code that reads it.
"""
from pathlib import Path

import yaml

from trainer.errors import UserError

MODELS_DIR = Path(__file__).resolve().parent.parent / "configs" / "models"


def load_model(name):
    """The catalogue entry NAME as a dict (see configs/models/README.md for its keys)."""
    path = MODELS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MODELS_DIR.glob("*.yaml")))
        raise UserError(f"unknown model {name!r}; known models: {known}")
    entry = yaml.safe_load(path.read_text())
    entry["name"] = name
    return entry
