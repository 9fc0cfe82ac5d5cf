"""Archives laid out as Model Garden publishes its pretrained checkpoints, for tests.

A published archive (e.g. retinanet-resnet50fpn.tar.gz) is one folder holding a
`ckpt-N` written by Model Garden's trainer of that experiment: base_trainer's
tf.train.Checkpoint(global_step, model, optimizer, **model.checkpoint_items), so the
model's backbone, decoder and head are also direct children of the root, which is
what the task's `init_checkpoint_modules` restore reads. This writes the same thing
for a model built from our params, with random weights the tests compare against.
"""
import tarfile
from pathlib import Path

STEP = 1234  # the N of ckpt-N


def write_checkpoint(params, folder):
    """Build PARAMS' model (untrained) and save it as Model Garden's trainer would; return (model, prefix)."""
    import tensorflow as tf
    from official.core import task_factory

    task = task_factory.get_task(params.task)
    model = task.build_model()
    optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
    global_step = tf.Variable(STEP, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(global_step=global_step, model=model, optimizer=optimizer,
                                     **model.checkpoint_items)
    manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=1)
    return model, manager.save(checkpoint_number=STEP)


def tar_folder(folder, archive_path):
    """Write FOLDER as the .tar.gz ARCHIVE_PATH, its files under FOLDER's own name (one top-level folder)."""
    folder = Path(folder)
    with tarfile.open(archive_path, mode="w:gz", compresslevel=1) as archive:
        for path in sorted(folder.iterdir()):
            archive.add(path, arcname=f"{folder.name}/{path.name}")
    return Path(archive_path)
