"""Warm start (--init-from an earlier run): config restores through Model Garden's `initialize`, train copies the
kept labels' head rows by name. No training: the earlier run is a checkpoint of random weights in the layout our
trainer writes (Model Garden's base_trainer: global_step, model, optimizer and the model's checkpoint items)."""
import json
import shutil

import numpy as np
import pytest

from trainer import config, tasks
from trainer.errors import UserError
from trainer.hardware import Hardware
from trainer.run_dir import Experiment, RunDir
from trainer.warm_start import kept_ids

CPU = Hardware("cpu")


def bucket_with_labels(sample, folder, renames, labels, kind="localization"):
    """SAMPLE's images with their labels renamed (RENAMES: old -> new) and LABELS as the bucket's label list."""
    folder.mkdir(parents=True)
    document = json.loads((sample / "_annotations.json").read_text())
    for name in document["annotations"]:
        shutil.copyfile(sample / name, folder / name)
        for entry in document["annotations"][name]:
            entry["label"] = renames.get(entry["label"], entry["label"])
    document["labels"] = labels
    (folder / "_annotations.json").write_text(json.dumps(document))
    return folder


def prepared(bucket, folder, **options):
    from trainer.prepare import prepare

    prepare(bucket, folder, model="demo")
    config.write_params(folder, "demo", steps=10, hardware=CPU, init_checkpoint="", **options)
    return folder


def earlier_run(bucket, folder):
    """A run folder as train leaves it: data/, params.yaml, experiment.json, model/ckpt-N (random weights)."""
    from zoo_archive import write_checkpoint

    prepared(bucket, folder)
    model, prefix = write_checkpoint(config.load_params(folder), folder / "model")
    return model, prefix


def initialised(result_dir):
    """The model of RESULT_DIR's params as train's first start restores it (task.initialize, head rows copied)."""
    import tensorflow as tf
    from official.core import task_factory

    from trainer.train import _copying_head

    params = config.load_params(result_dir)
    task = task_factory.get_task(params.task)
    model = task.build_model()
    init = Experiment.load(RunDir(result_dir)).init_from
    if not init["same_labels"]:
        labels = json.loads((result_dir / "data" / "labels.json").read_text())
        task.initialize = _copying_head(task.initialize, init, labels, params, tf.distribute.get_strategy())
    task.initialize(model)
    return model, params


def class_outputs(model, task):
    from trainer.warm_start import _width

    layer = tasks.get(task).class_layer(model)
    return [variable.numpy() for variable in layer.variables if variable.shape[-1] == _width(layer)]


@pytest.fixture(scope="module")
def detector_runs(sample_bucket, tmp_path_factory):
    """(earlier model, its prefix, base folder): the sample bucket's circle, square, triangle run."""
    base = tmp_path_factory.mktemp("warm-detector")
    model, prefix = earlier_run(sample_bucket, base / "earlier")
    return model, prefix, base


def test_new_and_renamed_labels_restore_backbone_decoder_and_copy_kept_rows_by_name(detector_runs, sample_bucket):
    old_model, prefix, base = detector_runs
    bucket = bucket_with_labels(sample_bucket, base / "bucket", {"square": "hexagon"}, ["triangle", "hexagon", "circle"])
    result_dir = prepared(bucket, base / "changed", init_from=base / "earlier")
    record = json.loads((result_dir / "experiment.json").read_text())
    assert record["init_from"]["checkpoint"] == prefix and record["init_from"]["checkpoint_name"] == "ckpt-1234"
    assert {key: record["init_from"][key] for key in ("same_labels", "modules", "kept", "added", "removed")} == {
        "same_labels": False, "modules": ["backbone", "decoder"], "kept": ["triangle", "circle"], "added": ["hexagon"],
        "removed": ["square"]}
    demo_rate = 0.08  # configs/models/demo.yaml's CPU rate at its batch
    assert record["learning_rate"] == pytest.approx(demo_rate * config.WARM_START_LR_FACTOR)

    model, params = initialised(result_dir)
    assert params.task.init_checkpoint == prefix and list(params.task.init_checkpoint_modules) == ["backbone", "decoder"]
    for module in ("backbone", "decoder"):
        for ours, earlier in zip(getattr(model, module).variables, getattr(old_model, module).variables, strict=True):
            np.testing.assert_array_equal(ours.numpy(), earlier.numpy(), err_msg=ours.name)
    old, new = class_outputs(old_model, "detection"), class_outputs(model, "detection")
    assert [value.shape[-1] for value in new] == [9 * 4, 9 * 4]  # pointwise kernel and bias: 9 anchors x 4 classes
    pairs = kept_ids(["circle", "square", "triangle"], ["triangle", "hexagon", "circle"], "detection")
    assert pairs == [(0, 0), (3, 1), (1, 3)]
    for earlier, ours in zip(old, new):
        for anchor in range(9):
            for old_id, new_id in pairs:
                np.testing.assert_array_equal(ours[..., anchor * 4 + new_id], earlier[..., anchor * 4 + old_id])
            if ours.ndim > 1:  # hexagon's kernel rows are fresh, not square's
                assert not np.array_equal(ours[..., anchor * 4 + 2], earlier[..., anchor * 4 + 2])
    outputs = {id(value) for value in tasks.get("detection").class_layer(model).variables}
    kept_other = [(a, b) for a, b in zip(old_model.head.variables, model.head.variables) if id(b) not in outputs]
    assert kept_other and all(np.array_equal(a.numpy(), b.numpy()) for a, b in kept_other)  # box net, class convs


def test_the_same_labels_restore_everything(detector_runs, sample_bucket):
    old_model, prefix, base = detector_runs
    result_dir = prepared(sample_bucket, base / "same", init_from=base / "earlier")
    model, params = initialised(result_dir)
    assert params.task.init_checkpoint_modules == "all" and Experiment.load(RunDir(result_dir)).init_from["same_labels"]
    for ours, earlier in zip(model.variables, old_model.variables, strict=True):
        np.testing.assert_array_equal(ours.numpy(), earlier.numpy(), err_msg=ours.name)
    record = json.loads((result_dir / "experiment.json").read_text())
    assert record["steps"] == 10 and "warm start" not in record["steps_reason"]  # --steps as asked


def test_a_classifier_warm_starts_with_its_kept_classes(tmp_path):
    from trainer.sample import make_sample_bucket

    make_sample_bucket(tmp_path / "classes", 12, kind="classification")
    old_model, prefix = earlier_run(tmp_path / "classes", tmp_path / "earlier")
    bucket = bucket_with_labels(tmp_path / "classes", tmp_path / "bucket", {"circle": "disc"},
                                ["triangle", "square", "disc"], kind="classification")
    result_dir = prepared(bucket, tmp_path / "changed", init_from=tmp_path / "earlier")
    model, params = initialised(result_dir)
    assert params.task.init_checkpoint_modules == "backbone"
    old, new = class_outputs(old_model, "classification"), class_outputs(model, "classification")
    assert [value.shape[-1] for value in new] == [3, 3]  # kernel and bias
    for earlier, ours in zip(old, new):
        np.testing.assert_array_equal(ours[..., 0], earlier[..., 2])  # triangle: 2 -> 0
        np.testing.assert_array_equal(ours[..., 1], earlier[..., 1])  # square stays 1
        if ours.ndim > 1:
            assert not np.array_equal(ours[..., 2], earlier[..., 0])  # disc is new, not circle
    for ours, earlier in zip(model.backbone.variables, old_model.backbone.variables, strict=True):
        np.testing.assert_array_equal(ours.numpy(), earlier.numpy())


def test_warm_start_defaults_to_fewer_steps(detector_runs, sample_bucket):
    _, _, base = detector_runs
    from trainer.prepare import prepare

    prepare(sample_bucket, base / "default-steps", model="demo")
    config.write_params(base / "default-steps", "demo", hardware=CPU, init_from=base / "earlier")
    record = json.loads((base / "default-steps" / "experiment.json").read_text())
    # demo.yaml: 40 passes; a warm start a quarter of them, over 79 training images at batch 8
    assert record["steps"] == 100 and "a warm start trains a quarter of the usual passes" in record["steps_reason"]


def test_warm_start_refuses_what_cannot_start_it(detector_runs, sample_bucket, tmp_path):
    _, _, base = detector_runs
    from trainer.prepare import prepare

    prepare(sample_bucket, tmp_path / "run", model="demo")
    cases = [({"init_from": tmp_path / "nothing"}, "is not a trained run folder"),
             ({"init_from": "gs://no-bucket/runs/old"}, r"/gcs/no-bucket/runs/old is not there"),
             ({"init_from": base / "earlier", "checkpoint_url": "file:///x"}, "give one")]
    for options, message in cases:
        with pytest.raises(UserError, match=message):
            config.write_params(tmp_path / "run", "demo", steps=10, hardware=CPU, **options)
    with pytest.raises(UserError, match=r"trained demo, this run trains retinanet_resnet50_fpn"):
        config.write_params(tmp_path / "run", "retinanet_resnet50_fpn", steps=10, hardware=CPU,
                            init_from=base / "earlier")
