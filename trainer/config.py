"""Config stage: write RESULT_DIR/params.yaml, the Model Garden experiment for this dataset and hardware.

params.yaml is a complete Model Garden ExperimentConfig (what `official/vision/train.py
--config_file` takes): the catalogue entry's experiment and overrides, plus what only
this run knows - the class count and shards from prepare, the pretrained checkpoint,
the hardware found (strategy, GPU count, precision), and a schedule sized to the
dataset. Beside it, experiment.json records the experiment name that params.yaml must
be loaded onto, and why the run got its steps and batch size (trainer/run_dir.py's
`Experiment`); `load_params` reads both.

The hardware is trainer/hardware.py's: what this machine has (or simulates with
TRAINER_SIMULATE_GPUS=N or TRAINER_SIMULATE_TPU=1), unless `write_params` is given one.
"""
import hashlib
import math
import os
import re
from dataclasses import asdict
from pathlib import Path

from trainer import catalogue, console, model_garden, tasks
from trainer.dataset import counted
from trainer.errors import UserError
from trainer.hardware import (DATA_SERVICE_POOL, PRECISION, SIMULATION_HELP, STEPS_PER_LOOP, TPU_EVAL_BATCH,
                              data_service_address, this_machine)
from trainer.images import downscaled
from trainer.run_dir import EvaluationPlan, Experiment, Report, RunDir

# The default detector (a classification bucket's default is catalogue.DEFAULT_MODELS'):
# mobile SpineNet-49 RetinaNet, 2.3 M parameters, 1 GFLOP at 384 px, TFLite-friendly
# ops and a COCO checkpoint, so it fine-tunes well and runs on phones and in browsers.
DEFAULT_MODEL = catalogue.DEFAULT_MODELS["detection"]
MIN_DEFAULT_STEPS = 100
# Linear warmup over this many images (as Model Garden's COCO recipes: 500 steps of
# 256 would be far too long for small datasets), capped at a tenth of the run.
WARMUP_IMAGES = 8000
EVALUATIONS_PER_RUN = 4
# A warm start (--init-from an earlier run) begins from weights already trained on most of
# these images: a quarter of the default steps and a quarter of the learning rate adapt
# them to the corrected or added labels without the large early updates that would
# undo what the earlier run learned (the reason fine-tuning uses a lower rate).
WARM_START_STEPS_FACTOR = 0.25
WARM_START_LR_FACTOR = 0.25
CHECKPOINTS_PER_RUN = 10
MAX_CHECKPOINTS_KEPT = 3
# Model Garden repeats the training records, then shuffles them in a buffer of 10000
# by default: filling it reads 10000 encoded images before the first step. A buffer
# of the dataset (capped) shuffles as well for small datasets and starts at once.
MAX_SHUFFLE_BUFFER = 1000
# Model Garden's tf.data service job for the training input (it appends the batch size and a random number).
DATA_SERVICE_JOB = "train"
DATA_SERVICE_FORM = re.compile(r"grpc://[^:/\s]+:\d+")


def write_params(result_dir, model=None, steps=None, batch_size=None,
                 checkpoint_url=None, init_checkpoint=None, hardware=None, init_from=None, data_service=None):
    """Write RESULT_DIR/params.yaml (and experiment.json) for MODEL on the dataset prepare wrote; return its path.

    MODEL defaults by the dataset's task (detection or classification); `demo` is the
    demo model of that task; a model of the other task is refused.
    STEPS defaults from the dataset size; BATCH_SIZE (global) from the catalogue for
    the hardware, with the learning rate scaled linearly. INIT_CHECKPOINT is a prefix
    from the checkpoint stage; without one, the checkpoint (CHECKPOINT_URL, else the
    catalogue's) is fetched here. HARDWARE defaults to what this machine has. INIT_FROM, an earlier
    run folder of the same model, is a warm start from its best checkpoint (trainer/warm_start.py).
    DATA_SERVICE, grpc://HOST:PORT (default: the data-service pool of Vertex AI's CLUSTER_SPEC, if any), runs the
    training input on a tf.data service (trainer/data_service.py); evaluation reads its records here.
    """
    data_service = _data_service(data_service)  # a malformed address is the first thing to hear about
    result_dir = Path(result_dir).absolute()
    run = RunDir(result_dir)
    if model is not None:
        catalogue.load_model(model)  # an unknown name is the first thing to hear about
    dataset = _read_dataset(run)
    asked, model = model, catalogue.resolve_model(model, dataset["task"])
    entry = catalogue.load_model(model)
    exp_factory, hyperparams = model_garden.experiments()
    hardware = hardware or this_machine()
    warm = _warm_start(init_from, model, dataset, checkpoint_url) if init_from else None
    _check_stored_size(entry, dataset, run)
    plan = _plan(entry, dataset, hardware, steps, batch_size, warm_start=bool(warm))
    checkpoint = warm["checkpoint"] if warm else _checkpoint(entry, checkpoint_url, init_checkpoint)
    if checkpoint["path"] and hardware.num_workers > 1:
        checkpoint["path"] = _share_checkpoint(checkpoint["path"], run.pretrained)

    params = exp_factory.get_exp_config(entry.experiment)
    params.override(entry.overrides, is_strict=True)
    decoder = "decoder" in tasks.get(dataset["task"]).WARM_MODULES
    if warm and decoder and params.task.model.decoder.type == "identity":
        warm["checkpoint"]["modules"] = warm["record"]["modules"] = [m for m in checkpoint["modules"] if m != "decoder"]
    params.override(_run_overrides(dataset, hardware, plan, checkpoint), is_strict=True)
    if data_service:
        params.override({"task": {"train_data": {"enable_tf_data_service": True, "tf_data_service_address": data_service,
                                                 "tf_data_service_job_name": DATA_SERVICE_JOB}}}, is_strict=True)
    if model_garden.is_retinanet(params):  # training's evaluation scores the detections the exports return
        model_garden.portable_detections(params)
    params.override(model_garden.tuples_as_lists(params.as_dict()), is_strict=True)
    params.validate()
    if (decoder and checkpoint["path"] and "decoder" in checkpoint["modules"]
            and params.task.model.decoder.type == "identity"):
        raise UserError(f"{model}'s checkpoint modules include the decoder, but its decoder is the identity "
                        f"(no weights) and Model Garden cannot restore into it: restore [backbone]")

    path = run.params
    previous = path.read_text() if path.is_file() else None
    hyperparams.save_params_dict_to_yaml(params, str(path))
    evaluation = _evaluation_plan(dataset["val_images"], hardware, run.data)
    Experiment(model=model, asked_model=asked, task=dataset["task"], experiment=entry.experiment,
               hardware=asdict(hardware), **plan, init_checkpoint=checkpoint["path"], evaluation=evaluation,
               init_from=warm["record"] if warm else None, data_service=data_service).write(run)
    state = "unchanged" if path.read_text() == previous else "written"
    console.say(f"config: {path} {state}: {model} ({entry.experiment}), {dataset['labels']} labels, "
                f"{hardware.describe()}, batch {plan['batch_size']}, learning rate {plan['learning_rate']:g}")
    console.say(f"config: {plan['steps']} steps: {plan['steps_reason']}")
    if data_service:
        console.say(f"config: training input from the tf.data service at {data_service}")
    if not evaluation.evaluated:
        console.say(f"config: WARNING: {evaluation.reason}: the model will be trained WITHOUT evaluation "
                    f"(no COCO metrics; metrics.json will say evaluated: false)", error=True)
    return path


def load_params(result_dir):
    """RESULT_DIR/params.yaml as a validated Model Garden ExperimentConfig (train and export read it so)."""
    exp_factory, hyperparams = model_garden.experiments()
    run = RunDir(result_dir)
    params = exp_factory.get_exp_config(Experiment.load(run).experiment)
    params = hyperparams.override_params_dict(params, str(run.params), is_strict=True)
    params.validate()
    return params


def _read_dataset(run):
    """What config needs from prepare's outputs, with the label ids checked against num_classes."""
    report = Report.load(run)
    labels = report.labels
    task = report.task
    first_id = tasks.get(task).FIRST_LABEL_ID
    num_classes = len(labels) + first_id
    label_map = run.label_map.read_text()
    for label_id in (int(found) for found in re.findall(r"^\s*id:\s*(-?\d+)", label_map, re.MULTILINE)):
        if not first_id <= label_id < num_classes:
            raise UserError(
                f"label id {label_id} in {run.label_map} is outside {first_id}..{num_classes - 1}: "
                f"the {task} model has {num_classes} classes ({len(labels)} labels"
                f"{' + background' if first_id else ''}) and Model Garden would silently mistrain it; rerun prepare")
    if not report.images("train"):
        raise UserError(f"training needs training images; {run.report_json} has none "
                        f"(and {report.images('val')} validation images)")
    return {
        "task": task,
        "labels": len(labels),
        "label_names": labels,
        "num_classes": num_classes,
        "train_images": report.images("train"),
        "val_images": report.images("val"),
        "train_files": [str(run.data / name) for name in report.files["train"]],
        "val_files": [str(run.data / name) for name in report.files["val"]],
        "max_boxes": report.max_boxes_per_image,
        "options": report.options or {},
        "repaired": report.repaired,
    }


def _data_service(asked):
    """The tf.data service address: ASKED (checked), else CLUSTER_SPEC's data-service pool's, else None."""
    if not asked:
        return data_service_address(os.environ)
    if not DATA_SERVICE_FORM.fullmatch(asked):
        raise UserError(f"--data-service must be grpc://HOST:PORT (the data-service dispatcher), not {asked!r}")
    return asked


def _check_stored_size(entry, dataset, run):
    """Refuse ENTRY when prepare stored an image with less detail than its training reads (prepared for a
    smaller model, or with a smaller --max-side): the model would train on upscaled pixels without a word."""
    need = tasks.get(entry.task).stored_size(entry)
    short = [key for key, source, stored in downscaled(dataset["repaired"])
             if any(needed > kept for needed, kept in zip(need.fitted(*source), stored))]
    if short:
        options = dataset["options"]
        given = f"--max-side {options['max_side']}" if options.get("max_side") else f"--model {options.get('model')}"
        raise UserError(f"{entry.name} trains on images with {need.describe()}, but prepare ({given}) stored "
                        f"{counted(len(short), 'image')} smaller (first: {short[0]}; {run.report_json}): "
                        f"rerun prepare with --model {entry.name}")


def _warm_start(init_from, model, dataset, checkpoint_url):
    """The checkpoint to restore from run INIT_FROM and experiment.json's record of it.

    Same labels: everything (`all`); else the backbone and decoder (train copies the kept labels' head rows).
    """
    from trainer import warm_start

    if checkpoint_url:
        raise UserError("--init-from and --checkpoint-url both name the weights to start from: give one")
    init = warm_start.source(init_from)
    if init["model"] != model:
        raise UserError(f"--init-from {init_from} trained {init['model']}, this run trains {model}: a warm start "
                        f"needs the same model (--model {init['model']})")
    labels = dataset["label_names"]
    same = init["labels"] == labels
    modules = ["all"] if same else list(tasks.get(dataset["task"]).WARM_MODULES)
    record = {**init, "same_labels": same, "modules": modules,
              "kept": [name for name in labels if name in init["labels"]],
              "added": [name for name in labels if name not in init["labels"]],
              "removed": [name for name in init["labels"] if name not in labels]}
    return {"checkpoint": {"path": init["checkpoint"], "modules": modules}, "record": record}


def _plan(entry, dataset, hardware, steps, batch_size, warm_start=False):
    """Batch size, learning rate (linear scaling rule), steps and the intervals derived from them.

    A warm start trains WARM_START_STEPS_FACTOR of the default steps at WARM_START_LR_FACTOR of the rate."""
    reference = _reference(entry, hardware)
    batch_size = batch_size or reference_batch(entry, hardware)
    if batch_size % hardware.replicas:
        raise UserError(f"batch size {batch_size} does not split evenly over {hardware.replicas} devices")
    learning_rate = reference.learning_rate * batch_size / reference.batch_size
    learning_rate *= WARM_START_LR_FACTOR if warm_start else 1
    if steps:
        steps_reason = "as asked"
    else:
        epochs = entry.epochs * (WARM_START_STEPS_FACTOR if warm_start else 1)
        steps = max(MIN_DEFAULT_STEPS, math.ceil(epochs * dataset["train_images"] / batch_size))
        steps_reason = (f"default: {epochs:g} passes over {dataset['train_images']} training images at batch "
                        f"{batch_size} (at least {MIN_DEFAULT_STEPS}"
                        f"{'; a warm start trains a quarter of the usual passes' if warm_start else ''}); "
                        f"set STEPS / --steps to change")
    steps_per_loop = min(STEPS_PER_LOOP[hardware.kind], steps)
    return {
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "steps": steps,
        "steps_reason": steps_reason,
        "steps_per_loop": steps_per_loop,
        "warmup_steps": max(1, min(steps // 10, math.ceil(WARMUP_IMAGES / batch_size))),
        "validation_interval": _round_up(math.ceil(steps / EVALUATIONS_PER_RUN), steps_per_loop),
        "checkpoint_interval": _round_up(math.ceil(steps / CHECKPOINTS_PER_RUN), steps_per_loop),
    }


def reference_batch(entry, hardware):
    """The global batch ENTRY trains with on HARDWARE when no --batch-size is given: its hardware.KIND
    batch_size times the devices a batch is split over. cloud/estimate.py sizes its estimate with it."""
    return _reference(entry, hardware).batch_size * hardware.replicas


def _reference(entry, hardware):
    reference = entry.hardware.of(hardware.kind)
    if reference is None:
        raise UserError(f"configs/models/{entry.name}.yaml has no hardware.{hardware.kind} settings")
    return reference


def _round_up(value, multiple):
    return math.ceil(value / multiple) * multiple


def _checkpoint(entry, checkpoint_url, init_checkpoint):
    """The prefix to restore ('' for none) and the modules to restore from it."""
    zoo = entry.checkpoint
    modules = list(zoo.modules if zoo else catalogue.DEFAULT_MODULES)
    if init_checkpoint is None and (checkpoint_url or zoo):
        from trainer.checkpoint import fetch_checkpoint

        if checkpoint_url:
            init_checkpoint = fetch_checkpoint(checkpoint_url)
        else:
            init_checkpoint = fetch_checkpoint(zoo.url, sha256=zoo.sha256, size=zoo.size)
    return {"path": str(init_checkpoint or ""), "modules": modules}


def _share_checkpoint(prefix, shared_dir):
    """Copy checkpoint PREFIX's files (as plain files) into SHARED_DIR; return the copy's prefix.

    The checkpoint cache is this machine's own: the other workers of a multi-worker
    job cannot read it, but they all read RESULT_DIR. A file already there with the
    same content (SHA-256) is kept; another checkpoint's file of the same name is replaced.
    """
    import shutil

    source = Path(prefix)
    files = sorted(source.parent.glob(source.name + ".*"))
    if not files:
        raise UserError(f"checkpoint {prefix} has no files ({prefix}.index, {prefix}.data-*) to share with the workers")
    shared_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        target = shared_dir / path.name
        if not (target.is_file() and target.stat().st_size == path.stat().st_size
                and _sha256(target) == _sha256(path)):
            shutil.copyfile(path, target)
    return str(shared_dir / source.name)


def _sha256(path):
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _run_overrides(dataset, hardware, plan, checkpoint):
    """The params_override that fits the experiment to this dataset, hardware and plan."""
    dtype = PRECISION[hardware.kind]
    eval_batch, eval_steps, drop_remainder = _evaluation(dataset["val_images"], plan["batch_size"], hardware)
    learning_rate = plan["learning_rate"]
    return {
        "runtime": {
            "distribution_strategy": hardware.strategy,
            "num_gpus": hardware.num_gpus,
            "mixed_precision_dtype": dtype,
            "loss_scale": "dynamic" if dtype == "float16" else None,
            "tpu": hardware.tpu,
        },
        "task": _task_overrides(dataset, checkpoint, {
            "train_data": {
                "input_path": ",".join(dataset["train_files"]),
                "global_batch_size": plan["batch_size"],
                "shuffle_buffer_size": min(dataset["train_images"], MAX_SHUFFLE_BUFFER),
                "dtype": dtype,
            },
            "validation_data": {
                "input_path": ",".join(dataset["val_files"]),
                "global_batch_size": eval_batch,
                "drop_remainder": drop_remainder,
                "dtype": dtype,
            },
        }),
        "trainer": {
            "train_steps": plan["steps"],
            "steps_per_loop": plan["steps_per_loop"],
            "summary_interval": plan["steps_per_loop"],
            "checkpoint_interval": plan["checkpoint_interval"],
            "max_to_keep": MAX_CHECKPOINTS_KEPT,
            "validation_interval": plan["validation_interval"],
            "validation_steps": eval_steps,
            "optimizer_config": {
                "learning_rate": {
                    "type": "cosine",
                    "cosine": {"initial_learning_rate": learning_rate, "decay_steps": plan["steps"]},
                },
                "warmup": {
                    "type": "linear",
                    "linear": {"warmup_steps": plan["warmup_steps"], "warmup_learning_rate": learning_rate / 10},
                },
            },
        },
    }


def _task_overrides(dataset, checkpoint, data):
    """The `task` override for the dataset's task: DATA (the input settings both tasks share) plus its own."""
    task = {"model": {"num_classes": dataset["num_classes"]}, "init_checkpoint": checkpoint["path"], **data}
    return tasks.get(dataset["task"]).task_overrides(task, dataset, checkpoint)


def _evaluation_plan(val_images, hardware, data_dir):
    """Whether the run evaluates, and why not: no val split, or fewer val images than a TPU's whole batch."""
    if not val_images:
        return EvaluationPlan(False, f"{data_dir} has no validation images")
    if hardware.kind == "tpu" and val_images < TPU_EVAL_BATCH:
        return EvaluationPlan(False, f"a TPU evaluates whole batches of {TPU_EVAL_BATCH} images and "
                                     f"{data_dir} has only {val_images} validation images")
    return EvaluationPlan()


def _evaluation(val_images, batch_size, hardware):
    """Eval batch, steps that cover the val set, and drop_remainder (TPUs need whole batches).

    tf.distribute splits every global batch evenly over the replicas, so the eval batch
    is a multiple of them; the last batch is partial and tf.distribute pads it.
    """
    if hardware.kind == "tpu":
        return TPU_EVAL_BATCH, max(1, val_images // TPU_EVAL_BATCH), True
    eval_batch = _round_up(max(1, min(batch_size, val_images)), hardware.replicas)
    return eval_batch, math.ceil(val_images / eval_batch), False


def add_arguments(parser):
    models = catalogue.MODELS_DIR.glob("*.yaml")
    listing = "; ".join(f"{p.stem}: {catalogue.load_model(p.stem).description}" for p in sorted(models))
    parser.add_argument("--model", default=None, metavar="NAME",
                        help=f"catalogue model (default by the dataset's task: {catalogue.defaults_help()}; "
                             f"demo: the demo model of that task). {listing}")
    parser.epilog = SIMULATION_HELP
    parser.add_argument("--result-dir", required=True, help="the run folder: reads data/, writes params.yaml")
    parser.add_argument("--steps", type=int, help="training steps (default: from the dataset size)")
    parser.add_argument("--batch-size", type=int,
                        help="global batch size (default: the catalogue's for this hardware); "
                             "the learning rate scales with it")
    parser.add_argument("--checkpoint-url",
                        help="pretrained checkpoint (archive or prefix: http(s)://, gs://, file:// or a path) "
                             "instead of the catalogue's; fetched and cached by the checkpoint stage")
    add_init_from(parser)
    add_data_service(parser)


def add_data_service(parser):
    parser.add_argument("--data-service", metavar="grpc://HOST:PORT",
                        help="run the training input (decode, augment, anchor labels) on the tf.data service whose "
                             "dispatcher is there (`python -m trainer data-service`) when this machine's CPUs cannot "
                             f"feed its accelerators (default: Vertex AI's {DATA_SERVICE_POOL}, when CLUSTER_SPEC "
                             "has one); evaluation stays local")


def add_init_from(parser):
    parser.add_argument("--init-from", metavar="RESULT_DIR",
                        help="warm start from an earlier run folder of the same model (its best checkpoint; a gs:// "
                             "folder through its /gcs/ mount): everything restored when the labels are the same, "
                             "else the backbone, decoder and the kept labels' head rows; fewer steps, lower rate")


def main(args):
    write_params(args.result_dir, args.model, args.steps, args.batch_size, args.checkpoint_url,
                 init_from=args.init_from, data_service=args.data_service)
    return 0
