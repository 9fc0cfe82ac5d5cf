"""Job specs: a configs/jobs/*.yaml file filled with one run's values and checked by Vertex AI's own types.

A spec is a Vertex AI `CustomJobSpec` in YAML with camelCase keys, the file
`gcloud ai custom-jobs create --config` takes. Strings in it may hold
placeholders `${NAME}` or `${NAME:-default}` (see PLACEHOLDERS). A string
holding an optional value the user did not give (STEPS, MODEL) is left out
with the list item or `env` entry it is in, so `"--steps=${STEPS}"` or
`{name: MODEL, value: "${MODEL}"}` disappears and the trainer's own default
applies.

Checking the filled spec with `google.cloud.aiplatform_v1.types.CustomJobSpec`
catches a typo'd or mistyped field here, with its name, instead of after an
upload and a round trip to the API.
"""
import re
from pathlib import Path

import yaml
from google.cloud import aiplatform_v1
from google.protobuf import json_format

from trainer.errors import UserError

PLACEHOLDERS = {
    "IMAGE": "the training image's repository, without a tag (`--image`); specs append `:gpu` or `:tpu`",
    "DATA_DIR": "the data bucket as the job sees it through Cloud Storage FUSE: /gcs/BUCKET/PREFIX",
    "RESULT_DIR": "this run's output folder through Cloud Storage FUSE: /gcs/OUTBUCKET/PREFIX/RUN",
    "OUTPUT_URI": "this run's output folder as a gs:// URI (baseOutputDirectory): gs://OUTBUCKET/PREFIX/RUN",
    "STEPS": "training steps (`--steps`); empty: the model's default",
    "MODEL": "catalogue model name (`--model`); empty: the trainer's default",
    "RUN_NAME": "this run's name (`--run-name`), also the job's display name",
    "STRATEGY": "Vertex AI's scheduling strategy: SPOT with `--spot`, else empty (the spec's default, STANDARD)",
    "PACKAGE_PATH": "the trainer sdist staged in the run folder, as the job sees it through Cloud Storage FUSE: "
                    "/gcs/OUTBUCKET/PREFIX/RUN/package/NAME.tar.gz (python-package.yaml)",
}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_OMITTED = object()


def fill_job_spec(path, values):
    """The spec at PATH with VALUES filled in, as a camelCase dict that Vertex AI accepts.

    VALUES maps placeholder names to strings: "" for an optional value not
    given, None (or absent) for one this run does not have, which is an error
    when the spec uses it without a default.
    """
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read job spec {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path} is not a CustomJobSpec: expected a mapping with workerPoolSpecs")
    filled = _fill(spec, values, path)
    _check_job_spec(filled, path)
    return filled


def _check_job_spec(spec, source):
    """Raise UserError naming the field when SPEC is not a valid CustomJobSpec."""
    try:
        json_format.ParseDict(spec, aiplatform_v1.CustomJobSpec.pb()())
    except json_format.ParseError as err:
        first_line = str(err).splitlines()[0].rstrip(".")
        raise UserError(f"{source}: {first_line}") from None
    if not spec.get("workerPoolSpecs"):
        raise UserError(f"{source}: workerPoolSpecs is empty: a job needs at least one worker pool")


def _fill(node, values, source):
    """NODE with placeholders filled; _OMITTED for a string that carries an optional value not given."""
    if isinstance(node, dict):
        filled = {key: _fill(value, values, source) for key, value in node.items()}
        if set(node) == {"name", "value"} and filled["value"] is _OMITTED:
            return _OMITTED  # an env entry without its value: leave the variable unset
        return {key: value for key, value in filled.items() if value is not _OMITTED}
    if isinstance(node, list):
        return [item for item in (_fill(item, values, source) for item in node) if item is not _OMITTED]
    if isinstance(node, str):
        omitted = []
        filled = _PLACEHOLDER.sub(lambda match: _value(match, values, source, omitted), node)
        return _OMITTED if omitted else filled
    return node


def _value(match, values, source, omitted):
    name, default = match.group(1), match.group(2)
    if name not in PLACEHOLDERS:
        raise UserError(f"{source}: unknown placeholder ${{{name}}}; known: {', '.join(PLACEHOLDERS)}")
    value = values.get(name)
    if value:
        return value
    if default is not None:
        return default
    if value is None:
        raise UserError(f"{source} needs ${{{name}}}: {PLACEHOLDERS[name]}")
    omitted.append(name)
    return ""
