"""The report's training section: losses, learning rate and the evaluations over steps, from TensorBoard events."""
from trainer.metrics import TOP_K_ACCURACY
from trainer.report.page import new_figure
from trainer.run_dir import RunDir


def section(page, result_dir):
    """The loss, learning-rate and evaluation curves from model/train/ and model/validation/."""
    page.heading("Training")
    model = RunDir(result_dir).model
    train, validation = _scalars(model / "train"), _scalars(model / "validation")
    if not train:
        page.text(f"No training events yet in {model / 'train'}.", "missing")
        return
    fig = new_figure()[0]
    fig.clear()
    left, right = fig.subplots(1, 2)
    for tag in ("total_loss", "cls_loss", "box_loss", "training_loss"):  # detectors' losses; a classifier's
        if tag in train:
            left.plot(*zip(*train[tag]), label=tag)
    for tag in ("total_loss", "validation_loss"):
        if tag in validation:
            left.plot(*zip(*validation[tag]), "o-", label=f"validation {tag.replace('validation_', '')}")
    left.set_xlabel("step")
    left.set_yscale("log")
    left.legend(fontsize=7)
    if "learning_rate" in train:
        right.plot(*zip(*train["learning_rate"]))
    right.set_xlabel("step")
    right.set_ylabel("learning rate")
    page.figure(fig, "training_loss", "Loss (log scale) and learning rate over steps")
    tags = [tag for tag in ("AP", "AP50", "accuracy", TOP_K_ACCURACY) if tag in validation]
    if not tags:
        page.text("No evaluation yet (or training runs without evaluation).", "missing")
        return
    fig, ax = new_figure()
    for tag in tags:
        ax.plot(*zip(*validation[tag]), "o-", label=tag)
    ax.set_xlabel("step")
    ax.set_ylim(0, 1)
    ax.legend()
    page.figure(fig, "training_ap", f"{' and '.join(tags)} on the validation split at each evaluation")


def _scalars(events_dir):
    """{tag: [(step, value)]} of the scalar summaries in EVENTS_DIR's event files."""
    import tensorflow as tf

    values = {}
    for path in sorted(events_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                    number = float(tf.make_ndarray(value.tensor))
                elif value.HasField("simple_value"):
                    number = value.simple_value
                else:
                    continue  # images and histograms
                values.setdefault(value.tag, []).append((event.step, number))
    return {tag: sorted(dict(points).items()) for tag, points in values.items()}
