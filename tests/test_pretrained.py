"""Pretrained restore for every catalogue model with a checkpoint, through config and the task's initialize.

The archive is laid out as Model Garden publishes its checkpoints (tests/zoo_archive.py):
COCO's 91 classes, written as a trainer of the same experiment writes ckpt-N, tarred in
one folder. config fetches it through the checkpoint stage (file:// URL, our cache), and
the model is restored as train does: Orbit calls the task's `initialize` on a new model.
Models are built, never trained, here.
"""
import numpy as np
import pytest

from trainer import catalogue, config
from trainer.hardware import Hardware

CHECKPOINTED = sorted(path.stem for path in catalogue.MODELS_DIR.glob("*.yaml")
                      if catalogue.load_model(path.stem).checkpoint
                      and catalogue.load_model(path.stem).task == "detection")
CLASSIFIERS_CHECKPOINTED = sorted(path.stem for path in catalogue.MODELS_DIR.glob("*.yaml")
                                  if catalogue.load_model(path.stem).checkpoint
                                  and catalogue.load_model(path.stem).task == "classification")
COCO_CLASSES = 91
IMAGENET_CLASSES = 1001  # Model Garden's ImageNet classifiers count a background class


@pytest.fixture(scope="module")
def prepared_data(sample_bucket, tmp_path_factory):
    from trainer.prepare import prepare

    result_dir = tmp_path_factory.mktemp("pretrained-data")
    prepare(sample_bucket, result_dir)
    return result_dir / "data"


@pytest.fixture(scope="module")
def prepared_classes(tmp_path_factory):
    from trainer.prepare import prepare
    from trainer.sample import make_sample_bucket

    bucket = tmp_path_factory.mktemp("pretrained-classes") / "bucket"
    make_sample_bucket(bucket, 12, kind="classification")
    result_dir = tmp_path_factory.mktemp("pretrained-classes-data")
    prepare(bucket, result_dir, model="mobilenet_v2")  # the classifiers' largest stored size: both fit
    return result_dir / "data"


def restored_from_zoo(model, data, zoo_classes, tmp_path, monkeypatch):
    """(model restored as train does, the zoo model, params): MODEL's zoo archive with ZOO_CLASSES and random
    weights in Model Garden's layout, fetched through config (file:// URL, our cache) onto DATA."""
    from official.core import task_factory

    from zoo_archive import tar_folder, write_checkpoint

    monkeypatch.setenv("CHECKPOINT_CACHE", str(tmp_path / "cache"))
    zoo_dir, result_dir = tmp_path / "zoo", tmp_path / "result"
    for folder in (zoo_dir, result_dir):
        folder.mkdir()
        (folder / "data").symlink_to(data)
    config.write_params(zoo_dir, model, hardware=Hardware("cpu"), init_checkpoint="")
    zoo_params = config.load_params(zoo_dir)
    zoo_params.override({"task": {"model": {"num_classes": zoo_classes}}})
    zoo_model, _ = write_checkpoint(zoo_params, tmp_path / f"{model}-zoo")
    archive = tar_folder(tmp_path / f"{model}-zoo", tmp_path / f"{model}-zoo.tar.gz")

    config.write_params(result_dir, model, checkpoint_url=archive.as_uri(), hardware=Hardware("cpu"))
    params = config.load_params(result_dir)
    assert params.task.init_checkpoint.startswith(str(tmp_path / "cache"))
    task = task_factory.get_task(params.task)
    restored = task.build_model()
    task.initialize(restored)  # what Orbit's checkpoint manager calls when model/ has no checkpoint
    return restored, zoo_model, params


@pytest.mark.parametrize("model", CLASSIFIERS_CHECKPOINTED)
def test_a_classifier_restores_the_imagenet_backbone_and_starts_its_head_fresh(model, prepared_classes, tmp_path,
                                                                                monkeypatch):
    """An archive of Model Garden's ImageNet classifier (1001 classes) restores into our 3-class classifier."""
    restored, zoo_model, params = restored_from_zoo(model, prepared_classes, IMAGENET_CLASSES, tmp_path, monkeypatch)
    assert params.task.init_checkpoint_modules == "backbone" and params.task.model.num_classes == 3
    pairs = list(zip(restored.backbone.variables, zoo_model.backbone.variables, strict=True))
    assert pairs
    for ours, zoo in pairs:
        np.testing.assert_array_equal(ours.numpy(), zoo.numpy(), err_msg=ours.name)
    backbone = {id(variable) for variable in restored.backbone.variables}
    head = [variable for variable in restored.variables if id(variable) not in backbone and "kernel" in variable.name]
    assert [variable.shape[-1] for variable in head] == [3]  # the classifier's dense layer: new, 3 classes


@pytest.mark.parametrize("model", CHECKPOINTED)
def test_the_catalogue_modules_are_restored_and_the_head_starts_fresh(model, prepared_data, tmp_path, monkeypatch):
    modules = catalogue.load_model(model).checkpoint.modules
    restored, zoo_model, params = restored_from_zoo(model, prepared_data, COCO_CLASSES, tmp_path, monkeypatch)
    assert list(params.task.init_checkpoint_modules) == list(modules)

    for module in modules:
        pairs = list(zip(getattr(restored, module).variables, getattr(zoo_model, module).variables, strict=True))
        assert pairs, module
        for ours, zoo in pairs:
            np.testing.assert_array_equal(ours.numpy(), zoo.numpy(), err_msg=f"{module}: {ours.name}")
    for module in {"backbone", "decoder"} - set(modules):  # not listed: freshly initialised (or no weights)
        if getattr(restored, module) is None:
            continue
        for ours, zoo in zip(getattr(restored, module).variables, getattr(zoo_model, module).variables, strict=True):
            if "kernel" in ours.name:  # biases and batch-norm statistics start at the same constants
                assert not np.array_equal(ours.numpy(), zoo.numpy()), f"{module} restored: {ours.name}"
    head = restored.head if hasattr(restored, "head") else restored.rpn_head
    zoo_head = zoo_model.head if hasattr(zoo_model, "head") else zoo_model.rpn_head
    zoo_kernels = [zoo.numpy() for zoo in zoo_head.variables if "kernel" in zoo.name]
    kernels = [ours for ours in head.variables if "kernel" in ours.name]
    if not head.variables:  # SpineNet RetinaNets build their head lazily, on the first call: nothing restored
        assert "spinenet" in model
        return
    assert kernels, [variable.name for variable in head.variables]
    for ours in kernels:  # freshly initialised: no kernel is the archive's
        assert not any(zoo.shape == ours.shape and np.array_equal(zoo, ours.numpy()) for zoo in zoo_kernels), ours.name
