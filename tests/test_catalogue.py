"""The catalogue: entries load as typed values, and a bad key is refused in one line naming file and key."""
import dataclasses
import inspect

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import yaml

from trainer import catalogue, tasks
from trainer.__main__ import main as cli
from trainer.errors import UserError

SHIPPED = sorted(path.stem for path in catalogue.MODELS_DIR.glob("*.yaml"))
KNOWN_KEYS = "known keys: description, experiment, checkpoint, hardware, overrides, task, epochs, export"
DEMO = yaml.safe_load((catalogue.MODELS_DIR / "demo.yaml").read_text())


@pytest.fixture
def write_entry(tmp_path, monkeypatch):
    """write_entry(CHANGE): the path of models/broken.yaml, demo.yaml's entry after CHANGE(entry) edits it."""
    monkeypatch.setattr(catalogue, "MODELS_DIR", tmp_path / "models")
    (tmp_path / "models").mkdir()

    def write(change):
        entry = yaml.safe_load(yaml.safe_dump(DEMO))  # a deep copy
        change(entry)
        path = tmp_path / "models" / "broken.yaml"
        path.write_text(yaml.safe_dump(entry))
        return path
    return write


def refusal(path):
    """The one-line refusal of models/broken.yaml, less the PATH that begins it."""
    with pytest.raises(UserError) as refused:
        catalogue.load_model("broken")
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message[len(f"{path}: "):]


def test_an_entry_loads_as_typed_values():
    demo = catalogue.load_model("demo")
    assert (demo.name, demo.task, demo.experiment, demo.epochs, demo.checkpoint) == (
        "demo", "detection", "retinanet_mobile_coco", 40, None)
    assert demo.hardware.of("cpu") == catalogue.HardwareReference(batch_size=8, learning_rate=0.08)
    assert (demo.input_side, demo.export.unsupported) == (128, {})
    assert demo.overrides == DEMO["overrides"]  # Model Garden's own schema: a dict, validated by Model Garden
    faster = catalogue.load_model("fasterrcnn_resnet50_fpn")
    assert faster.checkpoint == catalogue.Checkpoint(
        url="gs://cloud-tpu-checkpoints/vision-2.0/resnet50_imagenet/ckpt-28080", modules=("backbone",))
    assert (faster.epochs, sorted(faster.export.unsupported)) == (catalogue.DEFAULT_EPOCHS, ["coreml", "tflite"])
    assert catalogue.load_model("mobilenet_v2").task == "classification"


@pytest.mark.parametrize("model", SHIPPED)
def test_every_shipped_entry_is_a_valid_model_garden_experiment(model):
    """Each entry's overrides fit its experiment's schema; test_config builds every entry through config too."""
    from trainer.model_garden import experiments

    entry = catalogue.load_model(model)
    assert None not in (entry.hardware.cpu, entry.hardware.gpu, entry.hardware.tpu)
    params = experiments()[0].get_exp_config(entry.experiment)
    params.override(entry.overrides, is_strict=True)
    params.validate()
    assert max(params.task.model.input_size[:2]) == entry.input_side
    # The stored size reads the entry with Model Garden's defaults: the same as reading the whole built config.
    train_data = params.task.train_data.as_dict()
    built = dataclasses.replace(entry, overrides={"task": {"model": entry.overrides["task"]["model"],
                                                           "train_data": train_data}})
    assert tasks.get(entry.task).stored_size(entry) == tasks.get(entry.task).stored_size(built)



def test_the_stored_size_defaults_are_model_gardens():
    """What an entry leaves out of its augmentation is read as Model Garden's own default."""
    from official.vision.configs import image_classification, maskrcnn, retinanet
    from official.vision.ops import preprocess_ops

    from trainer.tasks import classification, detection

    for parser in (retinanet.Parser(), maskrcnn.Parser()):
        assert {key: getattr(parser, key) for key in detection.PARSER_DEFAULTS} == detection.PARSER_DEFAULTS
    data = image_classification.DataConfig()
    assert {key: getattr(data, key) for key in classification.DATA_DEFAULTS} == classification.DATA_DEFAULTS
    for crop in (preprocess_ops.random_crop_image, preprocess_ops.random_crop_image_v2):
        assert inspect.signature(crop).parameters["aspect_ratio_range"].default[0] == classification.NARROWEST_CROP

def test_an_unknown_key_is_refused_in_one_line_with_the_near_match(write_entry, tmp_path, capsys):
    path = write_entry(lambda entry: entry.update(epoch=entry.pop("epochs")))
    assert cli(["checkpoint", "--model", "broken", "--cache-dir", str(tmp_path / "cache")]) == 1
    assert capsys.readouterr().err == f"error: {path}: unknown key 'epoch' (did you mean 'epochs'?)\n"


@pytest.mark.parametrize("change, message", [
    (lambda entry: entry["hardware"]["cpu"].update(batch=8), "unknown key 'hardware.cpu.batch' "
                                                             "(did you mean 'hardware.cpu.batch_size'?)"),
    (lambda entry: entry["hardware"].update(gpus=entry["hardware"].pop("gpu")),
     "unknown key 'hardware.gpus' (did you mean 'hardware.gpu'?)"),
    (lambda entry: entry.update(colour="red"), f"unknown key 'colour' ({KNOWN_KEYS})"),
    (lambda entry: entry.update(name="other"), f"unknown key 'name' ({KNOWN_KEYS})"),  # the file's stem names it
])
def test_unknown_keys_are_refused_at_any_depth(write_entry, change, message):
    assert refusal(write_entry(change)) == message


@pytest.mark.parametrize("change, message", [
    (lambda entry: entry.update(epochs="forty"), "'epochs' must be a number, not 'forty'"),
    (lambda entry: entry["hardware"]["cpu"].update(batch_size=8.5), "'hardware.cpu.batch_size' must be an integer, "
                                                                    "not 8.5"),
    (lambda entry: entry["hardware"]["tpu"].update(learning_rate=True), "'hardware.tpu.learning_rate' must be a "
                                                                        "number, not True"),
    (lambda entry: entry.update(checkpoint={"url": "gs://zoo/ckpt-1", "modules": "all"}),
     "'checkpoint.modules' must be a list, each a string, not 'all'"),
    (lambda entry: entry.update(export={"unsupported": {"tflite": 3}}),
     "'export.unsupported' must be a mapping, each value a string, not {'tflite': 3}"),
    (lambda entry: entry.update(hardware=None), "'hardware' must be a mapping of keys, not None"),
    (lambda entry: entry.update(overrides=[1]), "'overrides' must be a mapping, not [1]"),
    (lambda entry: entry.update(task="detecton"), "'task' must be one of detection, classification, not 'detecton'"),
])
def test_a_wrong_type_is_refused(write_entry, change, message):
    assert refusal(write_entry(change)) == message


@pytest.mark.parametrize("change, message", [
    (lambda entry: entry.pop("experiment"), "missing key 'experiment'"),
    (lambda entry: entry.pop("checkpoint"), "missing key 'checkpoint'"),
    (lambda entry: entry.update(checkpoint={"sha256": None}), "missing key 'checkpoint.url'"),
    (lambda entry: entry["hardware"]["gpu"].pop("learning_rate"), "missing key 'hardware.gpu.learning_rate'"),
])
def test_a_missing_key_is_refused(write_entry, change, message):
    assert refusal(write_entry(change)) == message


def test_an_empty_file_is_refused(write_entry):
    write_entry(dict.clear).write_text("")
    assert refusal(catalogue.MODELS_DIR / "broken.yaml") == "the file must be a mapping of keys, not None"


def without_optional_keys(entry):
    del entry["epochs"]
    entry["checkpoint"] = {"url": "gs://zoo/ckpt-1"}


def test_defaults_fill_the_optional_keys(write_entry):
    write_entry(without_optional_keys)
    entry = catalogue.load_model("broken")
    assert (entry.task, entry.epochs, entry.export.unsupported) == ("detection", 20, {})
    assert entry.checkpoint == catalogue.Checkpoint("gs://zoo/ckpt-1", None, None, ("backbone", "decoder"))


def test_a_broken_entry_is_one_line_where_the_help_lists_the_catalogue(write_entry, tmp_path, capsys):
    """config lists every entry in its --help: a broken one is refused there too, without a traceback."""
    path = write_entry(lambda entry: entry.update(epoch=entry.pop("epochs")))
    assert cli(["config", "--result-dir", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err == f"error: {path}: unknown key 'epoch' (did you mean 'epochs'?)\n"


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                     st.text(max_size=12), st.lists(st.text(max_size=4), max_size=3))


@settings(derandomize=True, max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # write_entry rewrites one file per case
@given(st.data())
def test_any_entry_loads_or_is_refused_in_one_line(write_entry, data):
    """Fuzz: demo.yaml's entry with keys dropped, added (near and random names) or given values of another type
    (YAML as people edit it); loading gives an Entry or one UserError line naming the file, never another error."""
    keys = [("description",), ("experiment",), ("checkpoint",), ("hardware",), ("overrides",), ("epochs",),
            ("hardware", "cpu"), ("hardware", "gpu", "batch_size"), ("hardware", "tpu", "learning_rate")]
    edits = data.draw(st.lists(st.tuples(st.sampled_from(["drop", "set", "add"]), st.sampled_from(keys), _SCALARS,
                                         st.sampled_from(["epoch", "hardwares", "task", "export", "url", "x"])),
                               max_size=4))

    def change(entry):
        for action, path, value, name in edits:
            parent = entry
            for key in path[:-1]:
                parent = parent.get(key) if isinstance(parent, dict) else None
            if not isinstance(parent, dict):
                continue
            if action == "drop":
                parent.pop(path[-1], None)
            elif action == "set":
                parent[path[-1]] = value
            else:
                parent[name] = value
    path = write_entry(change)
    try:
        entry = catalogue.load_model("broken")
    except UserError as refused:
        assert str(refused).startswith(f"{path}: ") and "\n" not in str(refused)
    else:
        assert isinstance(entry, catalogue.Entry)  # a hardware kind may be absent: config refuses it in one line
