"""Train stage: Model Garden training with periodic COCO evaluation into RESULT_DIR/model/.

Orbit (Model Garden's train_lib) does the work in train_and_eval mode: checkpoints
`model/ckpt-N` (N = step), TensorBoard events in `model/train/` and
`model/validation/` (losses, learning rate, COCO AP, validation images with their
predicted boxes; for classifiers, accuracy). On top of it this stage adds what a cloud
job needs: resume from the last checkpoint (said in the log), a checkpoint on SIGTERM
(how Vertex AI preempts), a progress line per loop (step, loss, images/s, ETA), and
RESULT_DIR/metrics.json with the last evaluation's metrics: COCO and per-class AP for
detectors; accuracy, top-5, per-class accuracy and the confusion matrix for classifiers.
Each evaluation also saves ckpt-STEP; the best one by the selected metric is copied
into model/best/ (what export exports) and recorded in metrics.json's `best`, beside
`last` and the early-stopping count (trainer/best.py), so a resumed run keeps both.
Training stops early after --patience evaluations without improvement. A run whose
last checkpoint is at the final step (or where early stopping ended it) and whose
metrics.json is from that step is complete: a rerun returns at once.
"""
import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import yaml

from trainer import best as selection
from trainer import config, console, model_garden, tasks
from trainer.report import write_report
from trainer.metrics import class_confusion
from trainer.errors import UserError
from trainer.hardware import SIMULATE_GPUS_ENV, Hardware, available_memory, is_chief, training_tf_config
from trainer.run_dir import (BEST_FOLDER, Experiment, Metrics, Report, RunDir, StageMissing, load_labels,
                             write_json)

TERMINATED_EXIT = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM arrived; a BaseException so that no `except Exception` on the way swallows it."""


def train(result_dir, select_metric=None, patience=selection.DEFAULT_PATIENCE,
          min_delta=selection.DEFAULT_MIN_DELTA):
    """Train RESULT_DIR's experiment (params.yaml) to its final step; return the final metrics dict.

    SELECT_METRIC (default AP for detectors, accuracy for classifiers; see trainer/best.py)
    picks the best evaluation, whose checkpoint export exports; PATIENCE evaluations in a row
    without an improvement of at least MIN_DELTA stop training early (0: never).

    The process-wide mixed-precision policy that training sets is put back on return
    and on exceptions, so what runs next in this process (export) does not inherit it.
    """
    run = RunDir(Path(result_dir).absolute())
    if not run.params.is_file():
        raise StageMissing(run.params, "config", run.root)
    steps = yaml.safe_load(run.params.read_text())["trainer"]["train_steps"]
    last_step = selection.last_checkpoint_step(run.model)
    if last_step is not None and last_step > steps:
        raise UserError(f"{run.model} already holds ckpt-{last_step}, beyond the {steps} steps asked: "
                        f"ask for more steps, or train into a new result dir")
    experiment = Experiment.load(run)
    _check_dataset(run, experiment, last_step)
    record = Metrics.find(run) if last_step is not None else None
    if last_step == steps and record and record.step == steps:
        console.say(f"train: complete: ckpt-{steps} and metrics.json are at the final step; nothing to do")
        return _summary(run)
    stopped = record.stopped if record else None
    if stopped and stopped["step"] == last_step == record.step:
        console.say(f"train: complete: early stopping ended this run at step {last_step}; nothing to do")
        return _summary(run)
    tracker = _tracker(run, experiment, record, select_metric, patience, min_delta)

    import tf_keras

    policy = tf_keras.mixed_precision.global_policy()
    try:
        return _train(run, experiment, steps, last_step, tracker)
    finally:
        tf_keras.mixed_precision.set_global_policy(policy)


def _tracker(run, experiment, record, select_metric, patience, min_delta):
    """The best-evaluation and early-stopping tracker, resumed from RECORD (the previous Metrics)."""
    if patience < 0 or min_delta < 0:
        raise UserError(f"--patience and --min-delta must be 0 or more, not {patience} and {min_delta}")
    task = experiment.task
    labels = load_labels(run)
    metric = select_metric or tasks.get(task).DEFAULT_METRIC
    selection.check_metric(metric, tasks.get(task).metric_names(labels), labels)
    return selection.Tracker.resume(record, metric, patience, min_delta)


def _train(run, experiment, steps, last_step, tracker):
    from official.core import train_lib
    from official.modeling import performance
    from official.vision.utils import summary_manager

    from trainer import input_pipeline

    model_garden.patch_coco_evaluation()
    model_garden.quiet_orbit()
    model_dir = run.model
    params = config.load_params(run.root)
    params.lock()
    evaluation = experiment.evaluation
    if os.environ.get("TF_CONFIG") or os.environ.get("CLUSTER_SPEC"):  # what the strategy reads, sans data service
        os.environ["TF_CONFIG"] = json.dumps(training_tf_config(os.environ))
    performance.set_mixed_precision_policy(params.runtime.mixed_precision_dtype)
    strategy = _distribution_strategy(params, Hardware(**experiment.hardware))
    init = experiment.init_from  # a warm start (trainer/warm_start.py)
    if last_step is None:
        start = f"pretrained {params.task.init_checkpoint}" if params.task.init_checkpoint else "scratch"
        start = _warm_start_words(init) if init else start
        console.say(f"train: starting from {start}: step 0 of {steps}, {params.runtime.distribution_strategy} "
                    f"strategy over {strategy.num_replicas_in_sync} replica(s)")
    else:
        console.say(f"train: resuming: restoring {model_dir}/ckpt-{last_step} (step {last_step} of {steps})")
    if not evaluation.evaluated:
        console.say(f"train: WARNING: training WITHOUT evaluation: {evaluation.reason}", error=True)

    labels = load_labels(run)
    progress = _Progress(steps, params.task.train_data.global_batch_size, labels, run,
                         write_metrics=strategy.extended.should_checkpoint, task=experiment.task, tracker=tracker)
    runner = None
    with _raise_on_sigterm():
        try:
            report = Report.find(run)
            decode_once, decoding = input_pipeline.decodes_once(report and report.decoded_bytes("train"),
                                                                available_memory())
            print(f"train: {decoding}", flush=True)  # logs/train.log: a detail, not for the console
            with strategy.scope():
                task = input_pipeline.get_task(params.task, decode_once=decode_once, logging_dir=str(model_dir))
            if init and not init["same_labels"]:
                task.initialize = _copying_head(task.initialize, init, labels, params, strategy)
            if evaluation.evaluated:
                mode = "train_and_eval" if (last_step or 0) < steps else "eval"
            else:
                mode = "train"
            with model_garden.worker_resumes(strategy, model_dir, last_step):
                runner = train_lib.OrbitExperimentRunner(
                    distribution_strategy=strategy, task=task, params=params, model_dir=str(model_dir), mode=mode,
                    train_actions=[progress.after_train], eval_actions=[progress.after_eval],
                    eval_summary_manager=summary_manager.maybe_build_eval_summary_manager(params, str(model_dir)))
            progress.start(runner.trainer.global_step)
            progress.confusion = lambda: _confusion_matrix(runner.trainer.model, task, params.task.validation_data,
                                                           len(labels))
            progress.save = lambda step: runner.checkpoint_manager.save(checkpoint_number=step, check_interval=False)
            progress.agree = lambda stop: _chief_decides(strategy, stop)
            if last_step is not None:
                console.say(f"train: restored ckpt-{last_step}: continuing at step {progress.step}")
            if mode == "train_and_eval":
                _train_and_evaluate(runner, strategy, params.trainer, progress)
            else:
                runner.run()
        except Terminated:
            if runner is None:
                console.say("train: SIGTERM before training started: nothing to save")
            else:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the save short
                step = int(runner.trainer.global_step.numpy())
                # check_interval=False: the interval rule would return None right after a periodic save
                saved = runner.checkpoint_manager.save(checkpoint_number=step, check_interval=False)
                console.say(f"train: SIGTERM: saved {saved} at step {step} of {steps}; rerun to resume")
            raise
    if not strategy.extended.should_checkpoint:
        console.say("train: done on this worker; the chief writes the checkpoints and metrics.json")
        return {}
    if not evaluation.evaluated:
        step = int(runner.trainer.global_step.numpy())
        Metrics({"step": step, "evaluated": False, "reason": evaluation.reason}).write(run)
    return _summary(run)


def _warm_start_words(init):
    """How a warm start begins, in a few words."""
    start = f"{init['run']}'s {init['checkpoint_name']} (a warm start"
    if init["same_labels"]:
        return f"{start}: same labels, everything restored)"
    return (f"{start}: {', '.join(init['modules'])} restored, the head rows of {', '.join(init['kept']) or 'no label'} "
            f"copied by name; new: {', '.join(init['added']) or 'none'}; removed: {', '.join(init['removed']) or 'none'})")


def _copying_head(initialize, init, labels, params, strategy):
    """TASK.initialize (Model Garden's restore of INIT's modules), then the kept labels' head rows copied."""
    from trainer import warm_start

    def run(model):
        initialize(model)
        warm_start.copy_head(model, init, labels, params, config.load_params(init["run"]), strategy)

    return run


def _train_and_evaluate(runner, strategy, settings, progress):
    """Orbit's Controller.train_and_evaluate (train to each evaluation, evaluate), ending early when an
    evaluation's action says so (progress.stop); then a checkpoint at the step reached, as Orbit saves."""
    controller, global_step = runner.controller, runner.trainer.global_step
    with strategy.scope():
        step = int(global_step.numpy())
        while step < settings.train_steps and not progress.stop:
            controller.train(steps=min(settings.train_steps, step + settings.validation_interval),
                             checkpoint_at_completion=False)
            controller.evaluate(steps=settings.validation_steps)
            step = int(global_step.numpy())
        runner.checkpoint_manager.save(checkpoint_number=step, check_interval=False)


def _chief_decides(strategy, flag):
    """The chief's FLAG on every replica: a multi-worker job's workers evaluate their own share of the
    validation split, so their metrics (and so their wish to stop) can differ, and a worker that stops
    alone would leave the others waiting in their collectives."""
    if not isinstance(strategy, _multi_worker_strategy()):
        return flag
    import tensorflow as tf

    value = 1.0 if flag and strategy.extended.should_checkpoint else 0.0
    local = strategy.experimental_distribute_values_from_function(lambda context: tf.constant(value))
    return bool(strategy.reduce(tf.distribute.ReduceOp.MAX, local, axis=None).numpy() > 0)


def _multi_worker_strategy():
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy


def _keep_best(model_dir, step):
    """Copy ckpt-STEP's files into model/best/ (plain file copies: FUSE-safe), then drop the previous best's."""
    best_dir = model_dir / BEST_FOLDER
    best_dir.mkdir(parents=True, exist_ok=True)
    files = list(model_dir.glob(f"ckpt-{step}.*"))
    for path in files:
        shutil.copyfile(path, best_dir / path.name)
    (best_dir / "checkpoint").write_text(f'model_checkpoint_path: "ckpt-{step}"\n'
                                         f'all_model_checkpoint_paths: "ckpt-{step}"\n')
    for path in best_dir.glob("ckpt-*"):
        if path.name not in {kept.name for kept in files}:
            path.unlink()


def _distribution_strategy(params, hardware):
    """Model Garden's strategy for params.runtime; for simulated GPUs, mirrored over logical CPU devices.

    Model Garden's distribute_utils names GPU devices, so the simulation builds its own
    MirroredStrategy over N logical CPU devices (set up before TensorFlow starts its runtime).
    """
    import tensorflow as tf
    from official.common import distribute_utils

    if not (hardware.kind == "gpu" and hardware.simulated):
        return distribute_utils.get_distribution_strategy(
            distribution_strategy=params.runtime.distribution_strategy, all_reduce_alg=params.runtime.all_reduce_alg,
            num_gpus=params.runtime.num_gpus, tpu_address=params.runtime.tpu)
    try:
        tf.config.set_visible_devices([], "GPU")
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * hardware.num_gpus)
    except RuntimeError:  # the runtime already started (a second train in one process): use what it has
        pass
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    if len(devices) != hardware.num_gpus:
        raise UserError(f"{SIMULATE_GPUS_ENV}={hardware.num_gpus} needs a fresh process: TensorFlow already "
                        f"started with {len(devices)} CPU device(s)")
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def _check_dataset(run, experiment, last_step):
    """Refuse to resume checkpoints trained on other labels; record the labels beside new checkpoints.

    model/dataset.json holds the labels and their ids the checkpoints were trained on;
    the chief writes it before the first checkpoint.
    """
    labels = load_labels(run)
    first_id = tasks.get(experiment.task).FIRST_LABEL_ID  # as prepare numbers them
    current = {"labels": [{"id": label_id, "name": name} for label_id, name in enumerate(labels, start=first_id)]}
    record_path = run.dataset_json
    if last_step is not None and record_path.is_file():
        trained = json.loads(record_path.read_text())
        if trained != current:
            raise UserError(f"{run.model} holds checkpoints trained on other labels "
                            f"({_label_change(trained, current)}); "
                            f"resuming would train the wrong classes: use a new RESULT_DIR for this dataset")
        return
    if is_chief(os.environ):
        run.model.mkdir(parents=True, exist_ok=True)
        write_json(record_path, current)


def _label_change(trained, current):
    """What changed between two dataset.json records, in a few words."""
    before = [label["name"] for label in trained["labels"]]
    after = [label["name"] for label in current["labels"]]
    changes = [f"added {', '.join(sorted(set(after) - set(before)))}" if set(after) - set(before) else "",
               f"removed {', '.join(sorted(set(before) - set(after)))}" if set(before) - set(after) else ""]
    return "; ".join(change for change in changes if change) or f"reordered: was {before}, now {after}"


def _summary(run):
    """Print where the run's outputs are, its final AP and its best evaluation; return metrics.json's contents."""
    model_dir, metrics_path = run.model, run.metrics_json
    record = Metrics.load(run)
    metrics, best = record.evaluation, record.best
    console.say(f"train: checkpoints: {model_dir}/ckpt-{metrics['step']}" + (
        f"; best: {model_dir}/{best['checkpoint']} (step {best['step']}: {best['metric']} {_shown(best['value'])}), "
        f"which export exports" if best else ""))
    if "accuracy" in metrics:
        console.say(f"train: metrics:     {metrics_path} (step {metrics['step']}: accuracy "
                    f"{_shown(metrics['accuracy'])})")
    elif metrics.get("evaluated", True):
        console.say(f"train: metrics:     {metrics_path} (step {metrics['step']}: AP {_shown(metrics['AP'])}, "
                    f"AP50 {_shown(metrics['AP50'])})")
    else:
        console.say(f"train: metrics:     {metrics_path} (step {metrics['step']}: NOT EVALUATED: {metrics['reason']})")
    console.say(f"train: TensorBoard: tensorboard --logdir {model_dir}")
    return record.as_dict()




@contextlib.contextmanager
def _raise_on_sigterm():
    """Turn SIGTERM into Terminated in the main thread, between TensorFlow calls, so the caller can save."""

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Progress:
    """Orbit actions: a progress line after each training loop, metrics.json after each evaluation."""

    def __init__(self, steps, batch_size, labels, run, write_metrics, task, tracker):
        self.steps = steps
        self.batch_size = batch_size
        self.labels = labels
        self.run = run
        self.model_dir = run.model
        self.write_metrics = write_metrics
        self.task = task
        self.confusion = None  # for classifiers: () -> the val split's confusion matrix (set once training starts)
        self.tracker = tracker  # the best evaluation and the early-stopping count (trainer/best.py)
        self.save = None  # step -> save ckpt-STEP (every replica takes part, as in Orbit's saves)
        self.agree = None  # flag -> the chief's flag, on every replica
        self.stop = False  # set by an evaluation: early stopping ends the run

    def start(self, global_step):
        """Count from GLOBAL_STEP (the trainer's step variable) from now on."""
        self.global_step = global_step
        self.restart()

    def restart(self):
        self.step = int(self.global_step.numpy())
        self.since = time.monotonic()

    def after_train(self, output):
        step = int(self.global_step.numpy())
        per_step = (time.monotonic() - self.since) / max(step - self.step, 1)
        loss = float(output.get("total_loss", output.get("training_loss")))
        eta = _duration((self.steps - step) * per_step)
        saved = selection.last_checkpoint_step(self.model_dir)
        console.progress(step, self.steps,
                         f"progress: step {step}/{self.steps} | loss {loss:.4f} | {self.batch_size / per_step:.1f} "
                         f"images/s | lr {float(output['learning_rate']):.3g} | ETA {eta} | last checkpoint "
                         f"{'none' if saved is None else f'ckpt-{saved}'}",
                         # cacli's progress bar reads `tensorflow:loss = [\d.]*, step = (\d*)` from the job log
                         f"INFO:tensorflow:loss = {loss:.4f}, step = {step}")
        self.restart()

    def after_eval(self, output):
        step = int(self.global_step.numpy())
        task = tasks.get(self.task)
        metrics = task.evaluation_metrics(output, self.labels, step, self.confusion)
        names = task.SHOWN_METRICS
        self.save(step)  # the evaluated weights, kept whatever the checkpoint interval
        improved = self.tracker.update(metrics, f"{BEST_FOLDER}/ckpt-{step}")
        self.stop = step < self.steps and self.agree(self.tracker.should_stop())  # the same test on every replica
        stopping = self.tracker.stop(step) if self.stop else None
        if self.write_metrics:
            if improved:
                _keep_best(self.model_dir, step)
            self.tracker.record(metrics, f"ckpt-{step}").write(self.run)  # after best/ is complete
            write_report(self.run.root, best_effort=True)  # the run report follows each evaluation
        shown = " ".join(f"{name} {_shown(metrics[name])}" for name in names if name in metrics)
        best = self.tracker.best
        console.say(f"evaluation: step {metrics['step']}: {shown} | "
                    + ("new best" if improved else f"best {best['metric']} {_shown(best['value'])} at step "
                                                   f"{best['step']}"))
        if stopping:
            console.say(stopping)
        self.restart()  # evaluation time is not training speed


def _duration(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _shown(value):
    return "n/a" if value is None else f"{value:.3f}"


def _confusion_matrix(model, task, data_config, num_classes):
    """[[count]] of the validation split, rows the true label and columns the predicted one.

    Model Garden's classifier reports accuracy only; this is one more pass of the
    trained model over the same validation input (a few seconds for a small split).
    """
    import numpy as np
    import tensorflow as tf

    matrix = np.zeros([num_classes, num_classes], np.int64)
    for images, truth in task.build_inputs(data_config):
        predicted = tf.argmax(model(images, training=False), axis=-1)
        matrix += class_confusion(truth.numpy(), predicted.numpy(), num_classes)
    return matrix.tolist()


def add_arguments(parser):
    parser.add_argument("--result-dir", required=True,
                        help="the run folder: reads params.yaml and data/, writes model/ and metrics.json")
    selection.add_arguments(parser)


def main(args):
    try:
        train(args.result_dir, args.select_metric, args.patience, args.min_delta)
    except Terminated:
        return TERMINATED_EXIT
    return 0
