"""trainer/input_pipeline.py against Model Garden's own RetinaNet parser: the same pixels, boxes and anchor labels."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from official.vision.dataloaders import retinanet_input, tf_example_decoder  # noqa: E402
from official.vision.ops import preprocess_ops  # noqa: E402

from trainer import input_pipeline  # noqa: E402
from trainer.records import detection_features  # noqa: E402

SETTINGS = dict(output_size=[96, 128], min_level=3, max_level=5, num_scales=2, aspect_ratios=[0.5, 1.0, 2.0],
                anchor_size=3, max_num_instances=20, dtype="float32")


@pytest.mark.parametrize("crop_function", ["scaled_crop", "resized_crop", "sampled_crop"])
def test_the_crop_is_model_gardens_flip_normalise_resize_and_slice(crop_function):
    """Random images, output sizes and scales (0.3 to 3), flipped or not, aspect kept or not: Model Garden's
    resize_and_crop_image draws the offset; each of our crops at its scale and offset gives its shape exactly and its
    values within 1e-3 (normalised pixels: a twentieth of a grey level)."""
    rng = np.random.default_rng(5)
    crop_at = getattr(input_pipeline, crop_function)
    for case in range(40):
        height, width = (int(side) for side in rng.integers(20, 260, 2))
        image = tf.constant(rng.integers(0, 256, [height, width, 3]), tf.uint8)
        desired = [int(side) for side in rng.integers(16, 120, 2)]
        scale, flip = float(rng.uniform(0.3, 3.0)), bool(case % 2)
        source = preprocess_ops.normalize_image(tf.reverse(image, [1]) if flip else image)
        expected, info = preprocess_ops.resize_and_crop_image(source, desired, None, scale, scale,
                                                              keep_aspect_ratio=bool(case % 3))
        scaled = tf.round(info[0] * info[2])
        crop = tf.cast(tf.minimum(tf.constant(desired, tf.float32), scaled), tf.int32)
        got = crop_at(image, info[2], tf.cast(info[3], tf.int32), crop, tf.constant(flip))
        assert got.shape == expected.shape
        assert float(tf.reduce_max(tf.abs(got - expected))) < 1e-3, (height, width, desired, scale, flip)


def test_the_jitter_draws_what_model_garden_draws():
    """The same seeded ops: with the same global seed, Model Garden's scaled size and offset come out."""
    image = tf.zeros([300, 200, 3])
    for seed in range(5):
        tf.random.set_seed(seed)
        _, info = tf.function(lambda: preprocess_ops.resize_and_crop_image(
            image, [96, 128], None, 0.5, 2.0, keep_aspect_ratio=False))()
        tf.random.set_seed(seed)
        scaled, offset = tf.function(lambda: input_pipeline.jitter(
            tf.constant([300.0, 200.0]), tf.constant([96.0, 128.0]), 0.5, 2.0, False))()
        assert scaled.numpy().tolist() == (info[0] * info[2]).numpy().round().tolist()
        assert offset.numpy().tolist() == info[3].numpy().tolist()


def _record(rng, size=(180, 240)):
    """A serialized record as prepare writes it: a JPEG of noise with three boxes of labels 1 and 2."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, [*size, 3], dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    boxes = [(0.1, 0.2, 0.5, 0.6, 1, "cat"), (0.4, 0.05, 0.9, 0.45, 2, "dog"), (0.6, 0.6, 0.95, 0.97, 1, "cat")]
    features = {key: tf.train.Feature(**{f"{kind}_list": getattr(tf.train, f"{kind.capitalize()}List")(value=values)})
                for key, (kind, values) in detection_features("a.jpg", buffer.getvalue(), size[::-1], boxes,
                                                              1).items()}
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


@pytest.mark.parametrize("seed", range(6))
def test_the_parser_gives_model_gardens_image_and_labels(seed):
    """The default model's jitter (0.5 to 2) and flip, drawn by both from one global seed: the same normalised
    image within 1e-3, the same image_info, the same anchor class targets and weights, box targets within 1e-3."""
    rng = np.random.default_rng(3)
    data = tf_example_decoder.TfExampleDecoder().decode(tf.constant(_record(rng)))
    settings = dict(SETTINGS, aug_rand_hflip=True, aug_scale_min=0.5, aug_scale_max=2.0, keep_aspect_ratio=False)
    outputs = []
    for parser_class in (retinanet_input.Parser, input_pipeline.Parser):
        tf.random.set_seed(seed)
        outputs.append(tf.function(parser_class(**settings).parse_fn(is_training=True))(data))
    (mg_image, mg_labels), (image, labels) = outputs
    assert image.shape == mg_image.shape == (96, 128, 3)
    np.testing.assert_allclose(image, mg_image, atol=1e-3)
    np.testing.assert_array_equal(labels["image_info"], mg_labels["image_info"])
    for key in ("cls_targets", "cls_weights", "box_weights", "anchor_boxes", "box_targets"):
        ours, theirs = (value if isinstance(value, dict) else {"": value} for value in (labels[key], mg_labels[key]))
        assert ours.keys() == theirs.keys(), key
        for level, value in theirs.items():
            if key == "box_targets":
                np.testing.assert_allclose(ours[level], value, atol=1e-3, err_msg=key)
            else:
                np.testing.assert_array_equal(ours[level], value, err_msg=f"{key} {level}")
    assert int(tf.reduce_sum(tf.cast(labels["box_weights"] > 0, tf.int32))) > 0  # some anchors match a box


def test_train_gets_the_fast_parser_for_a_retinanet_only():
    from official.core import exp_factory

    retinanet = exp_factory.get_exp_config("retinanet_mobile_coco").task
    assert isinstance(input_pipeline.get_task(retinanet), input_pipeline.RetinaNetTask)
    classifier = exp_factory.get_exp_config("mobilenet_imagenet").task
    assert not isinstance(input_pipeline.get_task(classifier), input_pipeline.RetinaNetTask)


def test_the_parser_tests_seeds_draw_both_flips():
    """The seeds of test_the_parser_gives_model_gardens_image_and_labels flip some images and not others (the
    flip is the first draw, an op seeded 1 as Model Garden's)."""
    draws = set()
    for seed in range(6):
        tf.random.set_seed(seed)
        draws.add(bool(tf.function(lambda: tf.random.uniform([], seed=1) < 0.5)()))
    assert draws == {True, False}


def params_input_size(experiment):
    from official.core import exp_factory

    return tuple(exp_factory.get_exp_config(experiment).task.model.input_size[:2])


def _records_file(path, encoded, size, task):
    """PATH: a TFRecord file of one record as prepare writes it for TASK, its image ENCODED (SIZE: width, height)."""
    from trainer.records import classification_features

    features = (detection_features("a.jpg", encoded, size, [(0.1, 0.2, 0.5, 0.6, 1, "cat")], 1)
                if task == "detection" else classification_features("a.jpg", encoded, size, 0, "cat", 1))
    example = tf.train.Example(features=tf.train.Features(feature={
        key: tf.train.Feature(**{f"{kind}_list": getattr(tf.train, f"{kind.capitalize()}List")(value=values)})
        for key, (kind, values) in features.items()}))
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(example.SerializeToString())
    return str(path)


@pytest.mark.parametrize("experiment, task", [("retinanet_mobile_coco", "detection"),
                                              ("mobilenet_imagenet", "classification")])
def test_validation_decodes_jpegs_as_pillow_and_apps_do(tmp_path, experiment, task):
    """The validation image through train's task equals Model Garden's own validation input of a lossless PNG of
    Pillow's decode (what the export evaluation, predict and apps feed); Model Garden's own decode of the JPEG
    (TF's fast integer IDCT) differs, so the evaluation that picks the best checkpoint would score other pixels."""
    import io

    from official.core import exp_factory, task_factory
    from PIL import Image

    rng = np.random.default_rng(11)
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(rng.integers(0, 256, [90, 120, 3], dtype=np.uint8)).save(jpeg, "JPEG", quality=90)
    Image.open(jpeg).convert("RGB").save(png, "PNG")

    def validation_image(get_task, encoded, name):
        params = exp_factory.get_exp_config(experiment).task
        data = params.validation_data
        data.input_path, data.global_batch_size = _records_file(tmp_path / name, encoded, (120, 90), task), 1
        if task == "classification":
            data.aug_crop = False  # as config writes a classifier's validation (tasks/classification.py)
        images, _ = next(iter(get_task(params).build_inputs(data)))
        return images.numpy()

    expected = validation_image(task_factory.get_task, png.getvalue(), "png")
    assert expected.shape == (1, *params_input_size(experiment), 3)
    np.testing.assert_allclose(validation_image(input_pipeline.get_task, jpeg.getvalue(), "ours"), expected,
                               atol=1e-6)
    fast = validation_image(task_factory.get_task, jpeg.getvalue(), "model-garden")
    assert np.abs(fast - expected).max() > 0.05  # normalised: over a grey level


def _training_batches(tmp_path, decode_once):
    """An iterator over batches of 2 of the default model's training input (train's task, one record file of two
    records of different sizes, shuffled within 2) and the record file."""
    import io

    from official.core import exp_factory
    from PIL import Image

    rng = np.random.default_rng(2)
    path = tmp_path / f"train-{decode_once}.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for size in ((180, 240), (200, 160)):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, [*size, 3], dtype=np.uint8)).save(buffer, "JPEG")
            features = detection_features("a.jpg", buffer.getvalue(), size[::-1], [(0.1, 0.2, 0.5, 0.6, 1, "cat")], 1)
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                key: tf.train.Feature(**{f"{kind}_list": getattr(tf.train, f"{kind.capitalize()}List")(value=values)})
                for key, (kind, values) in features.items()})).SerializeToString())
    params = exp_factory.get_exp_config("retinanet_mobile_coco").task
    data = params.train_data
    data.input_path, data.global_batch_size, data.shuffle_buffer_size = str(path), 2, 2
    return iter(input_pipeline.get_task(params, decode_once=decode_once).build_inputs(data)), path


def test_decode_once_reads_the_records_once_and_augments_every_epoch(tmp_path):
    """Decoded once: the record file can go after the first epochs and training goes on, each record's scale drawn
    anew every epoch (Model Garden's own `cache` would repeat the first epoch's); decoded every epoch, the next read
    of the file fails."""
    batches, path = _training_batches(tmp_path, decode_once=True)
    infos = [next(batches)[1]["image_info"].numpy() for _ in range(3)]  # 3 epochs: the cache is complete
    path.unlink()
    infos += [next(batches)[1]["image_info"].numpy() for _ in range(20)]
    scales = {}
    for info in np.concatenate(infos):
        scales.setdefault(tuple(info[0]), set()).add(tuple(info[2]))
    assert sorted(scales) == [(180.0, 240.0), (200.0, 160.0)]
    assert all(len(drawn) > 10 for drawn in scales.values())

    batches, path = _training_batches(tmp_path, decode_once=False)
    for _ in range(3):
        next(batches)
    path.unlink()
    with pytest.raises(tf.errors.NotFoundError):
        for _ in range(50):
            next(batches)


def test_decoded_images_are_kept_in_memory_when_they_take_a_quarter_of_it_at_most():
    gib = 2 ** 30
    assert input_pipeline.decodes_once(gib, 4 * gib) == (
        True, "decoding the training images once and keeping them in memory (1.00 GiB of the 4.00 GiB available)")
    assert input_pipeline.decodes_once(gib + 1, 4 * gib) == (
        False, "decoding the training images every epoch: decoded they take 1.00 GiB, over 25% of the 4.00 GiB "
               "available")
    assert input_pipeline.decodes_once(None, 4 * gib) == (
        False, "decoding the training images every epoch: this prepare counted no stored pixels (prepare again to "
               "keep them in memory)")
