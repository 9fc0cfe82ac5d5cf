"""Warm start (`--init-from RESULT_DIR`): begin from an earlier run's best checkpoint instead of the zoo's.

Config records the earlier run (`source`) and restores through Model Garden's own task
`initialize`: everything (`all`) when the labels are the same, else the backbone and
decoder; then train copies each kept label's rows of the classification head to its new
id, matched by name (`copy_head`), so a label added, removed or renamed costs only its
own rows. The schedule is shorter and lower (config.WARM_START_*).
"""
from pathlib import Path

from trainer import tasks
from trainer.best import checkpoint_to_export, last_checkpoint_step
from trainer.errors import UserError
from trainer.run_dir import Experiment, RunDir, load_labels

GCS_MOUNT = Path("/gcs")  # where Vertex AI (Cloud Storage FUSE) mounts gs://BUCKET/...


def run_folder(init_from):
    """INIT_FROM as a local folder: a gs:// path is read through its FUSE mount, /gcs/BUCKET/..."""
    text = str(init_from)
    if text.startswith("gs://"):
        folder = GCS_MOUNT / text[len("gs://"):]
        if not folder.is_dir():
            raise UserError(f"--init-from {text}: {folder} is not there; a gs:// run folder is read through its "
                            f"Cloud Storage FUSE mount (/gcs/BUCKET/..., as Vertex AI mounts it)")
        return folder
    return Path(init_from).absolute()


def source(init_from):
    """What a warm start needs from the earlier run folder INIT_FROM: {"run", "checkpoint" (prefix), "model", "task",
    "labels"}. Its best evaluation's checkpoint (metrics.json's `best`), else its last."""
    folder = run_folder(init_from)
    run = RunDir(folder)
    missing = [str(path) for path in (run.experiment_json, run.labels_json) if not path.is_file()]
    step = last_checkpoint_step(run.model)
    if missing or step is None:
        raise UserError(f"--init-from {init_from} is not a trained run folder (missing: "
                        f"{', '.join(missing) or run.model / 'checkpoint'})")
    record = Experiment.load(run)
    prefix, name = checkpoint_to_export(folder, str(run.model / f"ckpt-{step}"))
    return {"run": str(folder), "checkpoint": prefix, "checkpoint_name": name, "model": record.model,
            "task": record.task, "labels": load_labels(run)}


def kept_ids(old_labels, new_labels, task):
    """[(old id, new id)] of the labels both runs have, matched by name; a detector's background (0) too."""
    first = tasks.get(task).FIRST_LABEL_ID
    old = {name: index for index, name in enumerate(old_labels, start=first)}
    pairs = [(old[name], index) for index, name in enumerate(new_labels, start=first) if name in old]
    return [(0, 0), *pairs] if first else pairs


def copy_head(model, init, new_labels, params, old_params, strategy):
    """Copy the classification head's rows of every label kept from INIT's run (matched by name) into MODEL.

    The earlier run's model is rebuilt from its own params.yaml (OLD_PARAMS) and restored whole; every
    head weight of the same shape is copied (box regression, class-net convolutions), and
    the class outputs (the last axis: anchors x classes for a detector, classes for a
    classifier) are copied label by label. Labels new to this run keep their fresh rows.
    """
    import tensorflow as tf
    from official.core import task_factory

    task = tasks.get(init["task"])
    with strategy.scope():
        old_model = task_factory.get_task(old_params.task).build_model()
        for built, settings in ((old_model, old_params), (model, params)):
            task.build_head(built, settings)
    tf.train.Checkpoint(model=old_model).read(init["checkpoint"]).expect_partial()
    pairs = kept_ids(init["labels"], new_labels, init["task"])
    old_count, new_count = old_params.task.model.num_classes, params.task.model.num_classes
    new_layer = task.class_layer(model)
    outputs = {id(variable) for variable in new_layer.variables if variable.shape[-1] == _width(new_layer)}
    for old, new in zip(task.head_variables(old_model), task.head_variables(model), strict=True):
        if id(new) in outputs:
            new.assign(_copy_rows(old.numpy(), new.numpy(), old_count, new_count, pairs))
        elif old.shape == new.shape:
            new.assign(old)


def _width(layer):
    return getattr(layer, "filters", None) or layer.units


def _copy_rows(old, new, old_count, new_count, pairs):
    """NEW with the class outputs of PAIRS (old id, new id) taken from OLD, per anchor (the last axis is
    anchor-major: anchor a's class c is a * classes + c)."""
    anchors = old.shape[-1] // old_count
    result = new.copy()
    for anchor in range(anchors):
        for old_id, new_id in pairs:
            result[..., anchor * new_count + new_id] = old[..., anchor * old_count + old_id]
    return result


