"""The model catalogue: one YAML file per model in configs/models/, loaded as a typed `Entry`.

The folder sits beside the `trainer` package in the repo and in the zip bundle,
and inside it (as `trainer/catalogue_models`) when installed from the sdist,
so the catalogue travels with the code that reads it. Loading refuses an unknown,
missing or mistyped key in one line (a typo would otherwise fall back to a default
unseen); `overrides` stays a dict, Model Garden's own schema, which it validates.
"""
import difflib
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path

import yaml

from trainer.errors import UserError

_BESIDE_PACKAGE = Path(__file__).resolve().parent.parent / "configs" / "models"  # the repo and trainer.zip
_INSIDE_PACKAGE = Path(__file__).resolve().parent / "catalogue_models"  # an installed sdist or wheel
MODELS_DIR = _BESIDE_PACKAGE if _BESIDE_PACKAGE.is_dir() else _INSIDE_PACKAGE
# The model a bucket trains when none is named, by its task (the bucket's type).
DEFAULT_MODELS = {"detection": "retinanet_spinenet49_mobile", "classification": "mobilenet_v2"}
# cacli's rule of thumb was about 20 steps per image at batch size 1, i.e. 20 passes
# over the data; in passes it holds at any batch size. Entries may set `epochs`
# (models trained from scratch need more).
DEFAULT_EPOCHS = 20
# What a checkpoint restores when its entry names no modules (and with no checkpoint at all).
DEFAULT_MODULES = ("backbone", "decoder")


@dataclass(frozen=True)
class Checkpoint:
    """`checkpoint:` the pretrained zoo checkpoint an entry fine-tunes from.

    url: http(s)://, gs://, file:// or a path; an archive or a checkpoint prefix (required).
    sha256, size: of the downloaded archive where known, checked after download (default null: unknown).
    modules: Model Garden `init_checkpoint_modules`, what to restore (default [backbone, decoder]).
        A COCO detector's head has 91 classes, so never `all`: [backbone, decoder] for an FPN,
        [backbone] for SpineNet, whose identity decoder has no weights to restore into.
    """
    url: str
    sha256: typing.Optional[str] = None
    size: typing.Optional[int] = None
    modules: typing.Tuple[str, ...] = DEFAULT_MODULES


@dataclass(frozen=True)
class HardwareReference:
    """The reference batch for one hardware kind and the learning rate that goes with it (both required).

    batch_size: per machine for `cpu`, per GPU for `gpu`, global for `tpu`. The config stage
        multiplies it by the GPUs and workers found (or takes `--batch-size`, the global batch)
        and scales learning_rate linearly with it.
    """
    batch_size: int
    learning_rate: float


@dataclass(frozen=True)
class HardwareReferences:
    """`hardware:` a HardwareReference per kind (`cpu`, `gpu`, `tpu`; each default absent: config refuses it)."""
    cpu: typing.Optional[HardwareReference] = None
    gpu: typing.Optional[HardwareReference] = None
    tpu: typing.Optional[HardwareReference] = None

    def of(self, kind):
        """The reference for hardware KIND ("cpu", "gpu", "tpu"), None where the entry has none."""
        return getattr(self, kind)


@dataclass(frozen=True)
class ExportLimits:
    """`export:` unsupported: {FORMAT: reason} for formats (`tflite`, `tfjs`, `coreml`) this model
    cannot have; `trainer export` skips them with the reason instead of failing (default: none)."""
    unsupported: typing.Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """One catalogue model, configs/models/NAME.yaml; its keys are these fields but `name`.

    name: NAME, the file's stem (not a key).
    description: one line, shown by `python -m trainer config --help` (required).
    experiment: a Model Garden experiment registered in `official.core.exp_factory`
        (e.g. `retinanet_mobile_coco`); the config stage starts from it (required).
    checkpoint: a Checkpoint, or null to train from scratch (required, null allowed).
    hardware: the HardwareReferences (required).
    overrides: a nested dict merged into the experiment as Model Garden `params_override`:
        input size, backbone, decoder, head, activation, augmentation (required: it holds
        task.model.input_size). Keep the architecture in step with the checkpoint's (e.g. mobile
        SpineNet-49's `hard_swish`), or the restored weights see different functions.
    task: `detection` or `classification` (Model Garden `image_classification` experiments)
        (default detection).
    epochs: passes over the training images when no step count is given (default DEFAULT_EPOCHS, 20;
        models trained from scratch need more).
    export: the ExportLimits (default: every format supported).
    """
    name: str
    description: str
    experiment: str
    checkpoint: typing.Optional[Checkpoint]
    hardware: HardwareReferences
    overrides: dict
    task: str = "detection"
    epochs: float = DEFAULT_EPOCHS
    export: ExportLimits = field(default_factory=ExportLimits)

    @property
    def input_side(self):
        """The model's input side in pixels (images are scaled so that their longer side fits it)."""
        return max(self.overrides["task"]["model"]["input_size"][:2])


def load_model(name):
    """The catalogue entry NAME, an Entry; a UserError names the file and key of a bad entry."""
    path = MODELS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MODELS_DIR.glob("*.yaml")))
        raise UserError(f"unknown model {name!r}; known models: {known}")
    entry = _build(Entry, yaml.safe_load(path.read_text()), path, "", name=name)
    if entry.task not in DEFAULT_MODELS:
        raise UserError(f"{path}: 'task' must be one of {', '.join(DEFAULT_MODELS)}, not {entry.task!r}")
    return entry


def _build(cls, values, path, where, **given):
    """Dataclass CLS from VALUES, the mapping at key WHERE ('a.b.') of PATH, plus the fields GIVEN."""
    if not isinstance(values, dict):
        what = f"'{where.rstrip('.')}'" if where else "the file"
        raise UserError(f"{path}: {what} must be a mapping of keys, not {values!r}")
    keys = [f.name for f in fields(cls) if f.name not in given]
    for key in values:
        if key not in keys:
            near = difflib.get_close_matches(str(key), keys, n=1)
            hint = f"did you mean '{where}{near[0]}'?" if near else f"known keys: {', '.join(keys)}"
            raise UserError(f"{path}: unknown key '{where}{key}' ({hint})")
    types = typing.get_type_hints(cls)
    for spec in fields(cls):
        if spec.name in values:
            given[spec.name] = _value(types[spec.name], values[spec.name], path, where + spec.name)
        elif spec.name not in given and spec.default is MISSING and spec.default_factory is MISSING:
            raise UserError(f"{path}: missing key '{where}{spec.name}'")
    return cls(**given)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "a mapping"}


def _value(kind, value, path, key):
    """VALUE of key KEY checked against the type KIND (a dataclass is built from its mapping)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is typing.Union:  # Optional[X]
        return None if value is None else _value(args[0], value, path, key)
    if is_dataclass(kind):
        return _build(kind, value, path, key + ".")
    if typing.get_origin(kind) is tuple:
        if isinstance(value, list) and all(isinstance(item, args[0]) for item in value):
            return tuple(value)
        raise UserError(f"{path}: '{key}' must be a list, each {_TYPE_NAMES[args[0]]}, not {value!r}")
    if typing.get_origin(kind) is dict:
        if isinstance(value, dict) and all(isinstance(item, args[1]) for item in value.values()):
            return value
        raise UserError(f"{path}: '{key}' must be a mapping, each value {_TYPE_NAMES[args[1]]}, not {value!r}")
    number = kind is float and isinstance(value, int)
    if isinstance(value, bool) or not (isinstance(value, kind) or number):
        raise UserError(f"{path}: '{key}' must be {_TYPE_NAMES[kind]}, not {value!r}")
    return value


def resolve_model(name, task):
    """The catalogue model that trains a TASK bucket when NAME is asked for.

    None gives TASK's default. A model of the other task gives its TASK variant
    NAME_TASK when there is one (`demo` -> `demo_classification`, so MODEL=demo works
    on either bucket type); otherwise it is refused in one line.
    """
    if name is None:
        return DEFAULT_MODELS[task]
    entry = load_model(name)
    if entry.task == task:
        return name
    variant = f"{name}_{task}"
    if (MODELS_DIR / f"{variant}.yaml").is_file() and load_model(variant).task == task:
        return variant
    same_task = sorted(p.stem for p in MODELS_DIR.glob("*.yaml") if load_model(p.stem).task == task)
    raise UserError(f"model {name!r} is a {entry.task} model, but this bucket is for {task}: use one of "
                    f"{', '.join(same_task)}")


def defaults_help():
    """The default models, for --help: "retinanet_spinenet49_mobile for detection, ..."."""
    return ", ".join(f"{model} for {task}" for task, model in DEFAULT_MODELS.items())
