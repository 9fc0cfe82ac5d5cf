"""config: every catalogue model becomes a valid Model Garden experiment for every kind of hardware.

The dataset is the sample bucket through the real prepare stage; hardware comes from
detect_hardware with the environment Vertex AI / Cloud TPU would set, so CPU, GPU,
multi-worker and TPU configs are all checked on this CPU-only machine.
"""
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from trainer import catalogue, config
from trainer.__main__ import main as cli
from trainer.errors import UserError
from trainer.hardware import Hardware, detect_hardware, tf_config_from_env

ALL_MODELS = sorted(path.stem for path in catalogue.MODELS_DIR.glob("*.yaml"))
MODELS = [name for name in ALL_MODELS if catalogue.load_model(name).task == "detection"]
CLASSIFIERS = [name for name in ALL_MODELS if catalogue.load_model(name).task == "classification"]
CLUSTER_SPEC = {  # as Vertex AI sets it for a chief and two workers
    "cluster": {"workerpool0": ["cmle-training-workerpool0-0:2222"],
                "workerpool1": ["cmle-training-workerpool1-0:2222", "cmle-training-workerpool1-1:2222"]},
    "environment": "cloud",
    "task": {"type": "workerpool1", "index": 1},
}
HARDWARE = {  # name: (environment, visible GPUs), expected strategy, GPUs per worker, workers, dtype
    "cpu": (({}, 0), "one_device", 0, 1, "float32"),
    "gpu": (({}, 2), "mirrored", 2, 1, "float16"),
    "multi_worker": (({"CLUSTER_SPEC": json.dumps(CLUSTER_SPEC)}, 4), "multi_worker_mirrored", 4, 3, "float16"),
    "tpu": (({"TPU_NAME": "grpc://10.2.3.4:8470"}, 0), "tpu", 0, 1, "bfloat16"),
}


@pytest.fixture(scope="module")
def prepared(sample_bucket, tmp_path_factory):
    """data/ of the sample bucket as prepare writes it, and prepare's report."""
    from trainer.prepare import prepare

    result_dir = tmp_path_factory.mktemp("prepared")
    report = prepare(sample_bucket, result_dir)
    return result_dir / "data", report


def run_dir(tmp_path, prepared, name="run"):
    """A fresh result dir whose data/ is the prepared sample bucket."""
    result_dir = tmp_path / name
    result_dir.mkdir()
    (result_dir / "data").symlink_to(prepared[0])
    return result_dir


def test_detect_hardware_cpu_and_gpus():
    assert detect_hardware({}, 0) == Hardware("cpu")
    gpus = detect_hardware({}, 8)
    assert (gpus.kind, gpus.num_gpus, gpus.num_workers, gpus.strategy, gpus.replicas) == ("gpu", 8, 1, "mirrored", 8)
    one = detect_hardware({}, 1)
    assert (one.strategy, one.replicas) == ("mirrored", 1)


def test_detect_hardware_workers_from_tf_config_and_vertex_cluster_spec():
    tf_config = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1", "d:1"], "ps": ["e:1"]},
                 "task": {"type": "worker", "index": 0}}
    hardware = detect_hardware({"TF_CONFIG": json.dumps(tf_config)}, 2)
    assert (hardware.strategy, hardware.num_workers, hardware.replicas) == ("multi_worker_mirrored", 4, 8)
    converted = tf_config_from_env({"CLUSTER_SPEC": json.dumps(CLUSTER_SPEC)})
    assert converted == {"cluster": {"chief": CLUSTER_SPEC["cluster"]["workerpool0"],
                                     "worker": CLUSTER_SPEC["cluster"]["workerpool1"]},
                         "task": {"type": "worker", "index": 1}}
    single = {"cluster": {"chief": ["a:1"]}, "task": {"type": "chief", "index": 0}}
    assert detect_hardware({"TF_CONFIG": json.dumps(single)}, 0) == Hardware("cpu")


def test_detect_hardware_tpu():
    assert detect_hardware({"TPU_NAME": "grpc://10.0.0.2:8470"}, 0) == Hardware(
        "tpu", tpu="grpc://10.0.0.2:8470")
    tpu_vm = detect_hardware({"TPU_ACCELERATOR_TYPE": "v3-8"}, 0)
    assert (tpu_vm.kind, tpu_vm.tpu, tpu_vm.strategy) == ("tpu", "local", "tpu")


@pytest.mark.parametrize("hardware_name", HARDWARE)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_loads_through_exp_factory_for_every_hardware(model, hardware_name, prepared, tmp_path):
    (env, gpus), strategy, num_gpus, workers, dtype = HARDWARE[hardware_name]
    hardware = detect_hardware(env, gpus)
    result_dir = run_dir(tmp_path, prepared)
    entry = catalogue.load_model(model)
    report = prepared[1]
    checkpoint = str(tmp_path / "zoo" / "ckpt-1") if entry.checkpoint else ""
    if checkpoint:  # the checkpoint stage's output; config reads it only to share it with other workers
        (tmp_path / "zoo").mkdir()
        Path(checkpoint + ".index").write_bytes(b"index")

    path = config.write_params(result_dir, model, hardware=hardware, init_checkpoint=checkpoint)
    params = config.load_params(result_dir)  # exp_factory config + params.yaml, strict, validated

    assert path == result_dir / "params.yaml"
    assert json.loads((result_dir / "experiment.json").read_text())["experiment"] == entry.experiment
    assert params.runtime.distribution_strategy == strategy
    assert params.runtime.num_gpus == num_gpus
    assert params.runtime.mixed_precision_dtype == dtype
    assert params.runtime.tpu == hardware.tpu
    task = params.task
    assert task.train_data.dtype == task.validation_data.dtype == dtype
    assert task.model.num_classes == len(report["labels"]) + 1
    assert task.train_data.input_path.split(",") == [str(result_dir / "data" / f) for f in report["files"]["train"]]
    assert task.validation_data.input_path.split(",") == [str(result_dir / "data" / f) for f in report["files"]["val"]]
    assert task.annotation_file == ""
    if checkpoint and workers > 1:  # the other machines read the chief's copy in RESULT_DIR
        shared = result_dir / "pretrained" / "ckpt-1"
        assert task.init_checkpoint == str(shared) and Path(f"{shared}.index").read_bytes() == b"index"
    else:
        assert task.init_checkpoint == checkpoint
    if entry.checkpoint:
        assert list(task.init_checkpoint_modules) == list(entry.checkpoint.modules)
    assert task.train_data.parser.max_num_instances >= max(100, report["max_boxes_per_image"])
    assert task.model.input_size == entry.overrides["task"]["model"]["input_size"]

    reference = entry.hardware.of(hardware.kind)
    batch = reference.batch_size * (1 if hardware.kind == "tpu" else max(num_gpus, 1) * workers)
    assert task.train_data.global_batch_size == batch
    schedule = params.trainer.optimizer_config
    assert schedule.learning_rate.cosine.initial_learning_rate == pytest.approx(
        reference.learning_rate * batch / reference.batch_size)
    steps = params.trainer.train_steps
    assert steps == max(config.MIN_DEFAULT_STEPS,
                        math.ceil(entry.epochs * report["splits"]["train"]["images"]
                                  / batch))
    assert 1 <= schedule.warmup.linear.warmup_steps <= max(1, steps // 10)
    val_images = report["splits"]["val"]["images"]
    eval_batch = task.validation_data.global_batch_size
    if hardware.kind == "tpu":
        assert task.validation_data.drop_remainder and params.trainer.validation_steps == max(1, val_images // 8)
    else:
        assert params.trainer.validation_steps * eval_batch >= val_images  # every val image is evaluated
    trainer = params.trainer
    assert trainer.summary_interval % trainer.steps_per_loop == 0
    assert trainer.validation_interval % trainer.steps_per_loop == 0
    assert trainer.checkpoint_interval % trainer.steps_per_loop == 0


def test_steps_and_batch_size_flags_scale_the_learning_rate(prepared, tmp_path):
    result_dir = run_dir(tmp_path, prepared)
    config.write_params(result_dir, "demo", steps=37, batch_size=16, hardware=Hardware("cpu"))
    params = config.load_params(result_dir)
    reference = catalogue.load_model("demo").hardware.cpu
    assert params.trainer.train_steps == 37
    assert params.task.train_data.global_batch_size == 16
    assert params.trainer.optimizer_config.learning_rate.cosine.initial_learning_rate == pytest.approx(
        reference.learning_rate * 16 / reference.batch_size)
    assert json.loads((result_dir / "experiment.json").read_text())["steps_reason"] == "as asked"
    with pytest.raises(UserError, match="does not split evenly over 2 devices"):
        config.write_params(result_dir, "demo", batch_size=5, hardware=Hardware("gpu", num_gpus=2))


def test_default_steps_are_printed_with_the_reason(prepared, tmp_path, capsys):
    config.write_params(run_dir(tmp_path, prepared), "demo", hardware=Hardware("cpu"))
    train_images = prepared[1]["splits"]["train"]["images"]
    assert f"passes over {train_images} training images at batch 8" in capsys.readouterr().out


@pytest.mark.parametrize("model", MODELS)
def test_every_model_builds_on_cpu_and_the_small_ones_train_a_step(model, prepared, tmp_path):
    """Model Garden builds each model from our CPU params; demo and the default take a real training step.

    Honest limits, to keep the suite fast on 2 cores: models are built at 128 px (same
    code path as full size, whose params are validated above); the big ones are built
    but not stepped (a Faster R-CNN step alone takes over a minute here).
    """
    import tensorflow as tf
    from official.core import task_factory

    result_dir = run_dir(tmp_path, prepared)
    config.write_params(result_dir, model, batch_size=2, hardware=Hardware("cpu"), init_checkpoint="")
    params = config.load_params(result_dir)
    params.override({"task": {"model": {"input_size": [128, 128, 3]}}})
    task = task_factory.get_task(params.task)
    model_instance = task.build_model()
    for module in params.task.init_checkpoint_modules:  # where the zoo checkpoint will be restored
        assert isinstance(getattr(model_instance, module), tf.Module), module
    if model in ("demo", config.DEFAULT_MODEL):
        optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
        inputs = next(iter(task.build_inputs(params.task.train_data)))
        logs = task.train_step(inputs, model_instance, optimizer, metrics=task.build_metrics(training=True))
        assert math.isfinite(float(logs[task.loss])) and float(logs[task.loss]) > 0


def test_label_id_beyond_num_classes_is_refused(prepared, tmp_path):
    result_dir = tmp_path / "run"
    shutil.copytree(prepared[0], result_dir / "data")
    label_map = result_dir / "data" / "label_map.pbtxt"
    label_map.write_text(label_map.read_text() + 'item {\n  id: 7\n  name: "stray"\n}\n')
    with pytest.raises(UserError, match=r"label id 7 .* outside 1..3: the detection model has 4 classes \(3 labels \+ background\)"):
        config.write_params(result_dir, "demo", hardware=Hardware("cpu"))
    assert not (result_dir / "params.yaml").exists()


def test_a_model_needing_more_detail_than_prepare_stored_is_refused(tmp_path):
    """Records prepared for the demo model (160 px shorter side: 128 x its 1.25 jitter) hold too little for the
    default model (768 px: 384 x 2.0); config says so before any checkpoint is fetched, and the demo model fits."""
    from test_prepare import box, jpegs, make_bucket

    from trainer.prepare import prepare

    bucket, result_dir = tmp_path / "bucket", tmp_path / "run"
    bucket.mkdir()
    files = {**jpegs(["a.jpg", "b.jpg", "c.jpg"]), **jpegs(["photo.jpg"], size=(640, 480))}
    make_bucket(bucket, files, {key: [box(0.2, 0.2, 0.8, 0.8)] for key in files})
    prepare(bucket, result_dir, model="demo")
    with pytest.raises(UserError) as error:
        config.write_params(result_dir, "retinanet_spinenet49_mobile", hardware=Hardware("cpu"))
    assert str(error.value) == (
        "retinanet_spinenet49_mobile trains on images with shorter side at most 768 px, longer side at most 1536 px, "
        "but prepare (--model demo) stored 1 image smaller (first: photo.jpg; "
        f"{result_dir / 'data' / 'report.json'}): rerun prepare with --model retinanet_spinenet49_mobile")
    assert not (result_dir / "params.yaml").exists()
    config.write_params(result_dir, "demo", hardware=Hardware("cpu"))
    assert (result_dir / "params.yaml").is_file()

def test_unknown_model_is_refused_in_one_line(prepared, tmp_path, capsys):
    result_dir = run_dir(tmp_path, prepared)
    assert cli(["config", "--model", "no_such_model", "--result-dir", str(result_dir)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: unknown model 'no_such_model'") and "retinanet_spinenet49_mobile" in error
    assert "\n" not in error


def test_missing_dataset_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"data/report.json is missing: run `python -m trainer prepare --data-dir "
                                        r"DATA_DIR --result-dir .*` first"):
        config.write_params(tmp_path, "demo", hardware=Hardware("cpu"))


def test_catalogue_entries_are_complete():
    assert CLASSIFIERS == ["demo_classification", "mobilenet_v2", "resnet50"]
    for model in ALL_MODELS:
        entry = catalogue.load_model(model)
        assert entry.description and "\n" not in entry.description
        assert None not in (entry.hardware.cpu, entry.hardware.gpu, entry.hardware.tpu)
        if entry.checkpoint is not None:
            assert entry.checkpoint.url and entry.checkpoint.modules
        assert yaml.safe_dump(entry.overrides)
    assert sorted(MODELS + CLASSIFIERS) == ALL_MODELS  # so the tests above build every shipped entry
    assert config.DEFAULT_MODEL in MODELS and catalogue.load_model("demo").checkpoint is None
    assert catalogue.DEFAULT_MODELS == {"detection": config.DEFAULT_MODEL, "classification": "mobilenet_v2"}


@pytest.fixture(scope="module")
def prepared_classes(tmp_path_factory):
    """data/ of a generated 3-class classification bucket (30 images), and prepare's report."""
    from trainer.prepare import prepare
    from trainer.sample import make_sample_bucket

    bucket = make_sample_bucket(tmp_path_factory.mktemp("classes") / "bucket", 30, kind="classification")
    result_dir = tmp_path_factory.mktemp("prepared-classes")
    # prepared for the default classifier, whose random crops read the most detail: every classifier fits
    report = prepare(tmp_path_factory.getbasetemp() / "classes0" / "bucket", result_dir)
    assert bucket["type"] == "classification" and report["task"] == "classification"
    return result_dir / "data", report


@pytest.mark.parametrize("hardware_name", HARDWARE)
@pytest.mark.parametrize("model", CLASSIFIERS)
def test_every_classifier_is_a_model_garden_image_classification_experiment(model, hardware_name, prepared_classes,
                                                                             tmp_path):
    (env, gpus), strategy, _, _, dtype = HARDWARE[hardware_name]
    result_dir = run_dir(tmp_path, prepared_classes)
    entry = catalogue.load_model(model)
    checkpoint = str(tmp_path / "zoo" / "ckpt-1") if entry.checkpoint else ""
    if checkpoint:
        (tmp_path / "zoo").mkdir()
        Path(checkpoint + ".index").write_bytes(b"index")
    config.write_params(result_dir, model, hardware=detect_hardware(env, gpus), init_checkpoint=checkpoint)
    params = config.load_params(result_dir)
    record = json.loads((result_dir / "experiment.json").read_text())

    assert (record["model"], record["task"], record["experiment"]) == (model, "classification", entry.experiment)
    assert type(params.task).__name__ == "ImageClassificationTask"
    assert (params.runtime.distribution_strategy, params.runtime.mixed_precision_dtype) == (strategy, dtype)
    assert params.task.model.num_classes == 3  # no background class
    assert params.task.model.input_size == entry.overrides["task"]["model"]["input_size"]
    assert params.task.train_data.aug_crop and not params.task.validation_data.aug_crop  # evaluation stretches
    assert params.task.evaluation.top_k == 3
    if checkpoint:
        assert params.task.init_checkpoint_modules == "backbone"
    assert params.task.train_data.input_path.split(",") == [
        str(result_dir / "data" / name) for name in prepared_classes[1]["files"]["train"]]
    assert yaml.safe_load((result_dir / "params.yaml").read_text())["task"]["train_data"]["crop_area_range"]


@pytest.mark.parametrize("model", CLASSIFIERS)
def test_every_classifier_builds_and_the_small_ones_train_a_step(model, prepared_classes, tmp_path):
    import tensorflow as tf
    from official.core import task_factory

    result_dir = run_dir(tmp_path, prepared_classes)
    config.write_params(result_dir, model, batch_size=2, hardware=Hardware("cpu"), init_checkpoint="")
    params = config.load_params(result_dir)
    params.override({"task": {"model": {"input_size": [64, 64, 3]}}})
    task = task_factory.get_task(params.task)
    model_instance = task.build_model()
    assert isinstance(model_instance.backbone, tf.Module)  # where the ImageNet checkpoint is restored
    if model in ("demo_classification", catalogue.DEFAULT_MODELS["classification"]):
        optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
        images, labels = next(iter(task.build_inputs(params.task.train_data)))
        assert images.shape == (2, 64, 64, 3) and set(labels.numpy()) <= {0, 1, 2}
        logs = task.train_step((images, labels), model_instance, optimizer, metrics=task.build_metrics(training=True))
        assert math.isfinite(float(logs[task.loss])) and float(logs[task.loss]) > 0


def test_demo_means_the_demo_of_the_buckets_task_and_other_task_models_are_refused(prepared_classes, prepared,
                                                                                   tmp_path, capsys):
    classes = run_dir(tmp_path, prepared_classes, "classes")
    config.write_params(classes, "demo", steps=5, hardware=Hardware("cpu"))
    record = json.loads((classes / "experiment.json").read_text())
    assert (record["model"], record["asked_model"], record["task"]) == ("demo_classification", "demo",
                                                                        "classification")
    config.write_params(classes, None, hardware=Hardware("cpu"), init_checkpoint="")
    assert json.loads((classes / "experiment.json").read_text())["model"] == "mobilenet_v2"
    assert cli(["config", "--model", "retinanet_resnet50_fpn", "--result-dir", str(classes)]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: model 'retinanet_resnet50_fpn' is a detection model, but this bucket is for classification: use one "
        "of demo_classification, mobilenet_v2, resnet50")
    boxes = run_dir(tmp_path, prepared, "boxes")
    with pytest.raises(UserError, match="model 'mobilenet_v2' is a classification model, but this bucket is for "
                                        "detection: use one of demo, fasterrcnn_resnet50_fpn, "):
        config.write_params(boxes, "mobilenet_v2", hardware=Hardware("cpu"))
