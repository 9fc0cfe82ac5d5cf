"""RetinaNet's training input at the cost of its output, so the CPUs keep a GPU fed.

Model Garden's parser (official/vision/dataloaders/retinanet_input.py, `_parse_train_data`)
normalises the whole decoded image in float, flips it, resizes all of it to the jittered
size (up to aug_scale_max times the input on each side) and only then crops the input out
of it, and builds the anchors again for every image. Measured on kangaroo records for the
default model: 17 to 19 ms of CPU per image, against 3.7 ms to decode and resize.

`Parser` keeps Model Garden's augmentation and labelling: the same random draws (flip,
scale, offset: its seeded ops in its order), the same sample positions (bilinear with
half-pixel centres, edges clamped, as `tf.image.resize`), the same box arithmetic and its
AnchorLabeler; its outputs equal Model Garden's (tests/test_input_pipeline.py). What
changes is where the work is done. Where the jittered image is much larger than the crop,
only the crop's pixels are computed, from the source rows they sample; the flip mirrors
the sampling instead of copying the image, and the normalisation runs on whichever pass
has fewer pixels (normalising is affine and bilinear weights sum to one). Elsewhere
Model Garden's own resize runs, on the uint8 image, normalising only the crop. The anchors are built once, not for every image, and labelled by `anchor_labels.AnchorLabeler`.

Every task's validation input decodes its JPEGs as apps do (`get_task`), so training's evaluation scores the exports' pixels.
"""
import contextlib
import math

import tensorflow as tf
from official.core import task_factory
from official.vision.dataloaders import retinanet_input
from official.vision.ops import anchor, box_ops, preprocess_ops
from official.vision.tasks import retinanet

from trainer import anchor_labels, model_garden

# Model Garden's resize of the whole image, then a slice, costs least while the resized image is at most this many
# times the crop; above it sampling only the crop's pixels does (measured: benchmarks/input_pipeline.py).
RESIZE_WASTE = 2.0
# Decoded training images are kept in memory when they take at most this share of the memory available at the start.
MEMORY_SHARE = 0.25


def get_task(task_config, decode_once=False, **kwargs):
    """Model Garden's task for TASK_CONFIG (as `task_factory.get_task`), with `Parser` for a RetinaNet's training,
    its training records decoded once and kept in memory when DECODE_ONCE (`model_garden.training_records_decoded_once`;
    see `decodes_once`), and every task's validation images decoded as apps decode them
    (`model_garden.accurate_jpeg_decoding`): the evaluation that picks the best checkpoint and stops early scores what
    the exports get."""
    if task_factory.get_task_cls(type(task_config)) is retinanet.RetinaNetTask:
        task = RetinaNetTask(task_config, **kwargs)
    else:
        task = task_factory.get_task(task_config, **kwargs)
    build_inputs = task.build_inputs

    def build_inputs_as_train_reads_them(params, input_context=None):
        if not params.is_training:
            decoding = model_garden.accurate_jpeg_decoding()
        else:
            decoding = model_garden.training_records_decoded_once() if decode_once else contextlib.nullcontext()
        with decoding:
            return build_inputs(params, input_context)

    task.build_inputs = build_inputs_as_train_reads_them
    return task


def decodes_once(decoded, available_bytes):
    """(whether to keep the decoded training images in memory, the line that says so and why): yes when DECODED,
    the bytes they take decoded (`Report.decoded_bytes`; None where prepare counted none), is at most MEMORY_SHARE
    of AVAILABLE_BYTES. The whole split is counted, though each of several workers keeps only its shard."""
    if decoded is None:
        return False, ("decoding the training images every epoch: this prepare counted no stored pixels (prepare "
                       "again to keep them in memory)")
    if decoded <= MEMORY_SHARE * available_bytes:
        return True, (f"decoding the training images once and keeping them in memory "
                      f"({_gib(decoded)} of the {_gib(available_bytes)} available)")
    return False, (f"decoding the training images every epoch: decoded they take {_gib(decoded)}, over "
                   f"{MEMORY_SHARE:.0%} of the {_gib(available_bytes)} available")


def _gib(size):
    return f"{size / 2 ** 30:.2f} GiB"


class RetinaNetTask(retinanet.RetinaNetTask):
    """Model Garden's RetinaNet task, its training input parsed by `Parser`."""

    def build_inputs(self, params, input_context=None):
        if not params.is_training:
            return super().build_inputs(params, input_context)
        with model_garden.retinanet_training_parser(Parser):
            return super().build_inputs(params, input_context)


class Parser(retinanet_input.Parser):
    """Model Garden's RetinaNet parser whose training parse costs what its output does (see the module)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._padded_size = (preprocess_ops.compute_padded_size(self._output_size, 2 ** self._max_level)
                             if self._pad else list(self._output_size))
        generator = anchor.build_anchor_generator(
            min_level=self._min_level, max_level=self._max_level, num_scales=self._num_scales,
            aspect_ratios=self._aspect_ratios, anchor_size=self._anchor_size)
        # Built once, here (eager), as constants; Model Garden builds them for every image.
        self._anchor_values = {level: boxes.numpy()
                               for level, boxes in generator(image_size=tuple(self._padded_size)).items()}
        self._anchor_labeler = anchor_labels.AnchorLabeler(
            self._anchor_values, match_threshold=self._match_threshold,
            unmatched_threshold=self._unmatched_threshold, box_coder_weights=self._box_coder_weights)

    def _parse_train_data(self, data, anchor_labeler=None, input_anchor=None):
        if self._augmenter is not None or self._aug_rand_jpeg is not None or data.get("groundtruth_attributes"):
            return super()._parse_train_data(data, anchor_labeler, input_anchor)
        classes, boxes = data["groundtruth_classes"], data["groundtruth_boxes"]
        if self._skip_crowd_during_training:
            crowd = data["groundtruth_is_crowd"]
            keep = tf.cond(tf.size(crowd) > 0, lambda: tf.where(tf.logical_not(crowd))[:, 0],
                           lambda: tf.range(tf.shape(classes, out_type=tf.int64)[0]))
            classes, boxes = tf.gather(classes, keep), tf.gather(boxes, keep)
        image = data["image"]
        image_size = tf.cast(tf.shape(image)[0:2], tf.float32)
        flip = tf.constant(False)
        if self._aug_rand_hflip:  # drawn first, as Model Garden draws it
            flip = tf.random.uniform([], seed=1) < 0.5
            boxes = tf.cond(flip, lambda: preprocess_ops.horizontal_flip_boxes(boxes), lambda: boxes)
        desired = tf.constant(self._output_size, tf.float32)
        scaled_size, offset = jitter(image_size, desired, self._aug_scale_min, self._aug_scale_max,
                                     self._keep_aspect_ratio)
        image_scale = scaled_size / image_size
        crop = tf.cast(tf.minimum(desired, scaled_size), tf.int32)
        image = scaled_crop(image, image_scale, offset, crop, flip)
        boxes = preprocess_ops.resize_and_crop_boxes(box_ops.denormalize_boxes(boxes, image_size), image_scale,
                                                     desired, tf.cast(offset, tf.float32))
        height, width = self._padded_size
        image = tf.ensure_shape(tf.image.pad_to_bounding_box(image, 0, 0, height, width), [height, width, 3])
        keep = box_ops.get_non_empty_box_indices(boxes)
        boxes, classes = tf.gather(boxes, keep), tf.gather(classes, keep)
        anchor_boxes = {level: tf.constant(values) for level, values in self._anchor_values.items()}
        anchor_labeler = anchor_labeler or self._anchor_labeler
        cls_targets, box_targets, _, cls_weights, box_weights = anchor_labeler.label_anchors(
            anchor_boxes, boxes, tf.expand_dims(classes, axis=1))
        image_info = tf.stack([image_size, desired, image_scale, tf.cast(offset, tf.float32)])
        return tf.cast(image, self._dtype), {
            "cls_targets": cls_targets, "box_targets": box_targets, "anchor_boxes": anchor_boxes,
            "cls_weights": cls_weights, "box_weights": box_weights, "image_info": image_info}


def jitter(image_size, desired, scale_min, scale_max, keep_aspect_ratio):
    """(scaled size, crop offset [y, x] as int32) drawn as `preprocess_ops.resize_and_crop_image` draws them."""
    jittering = not (math.isclose(scale_min, 1.0) and math.isclose(scale_max, 1.0))
    scaled_size = tf.round(tf.random.uniform([], scale_min, scale_max, seed=1) * desired) if jittering else desired
    if keep_aspect_ratio:
        scaled_size = tf.round(image_size * tf.minimum(scaled_size[0] / image_size[0],
                                                       scaled_size[1] / image_size[1]))
    if not jittering:
        return scaled_size, tf.zeros([2], tf.int32)
    max_offset = tf.maximum(scaled_size - desired, 0.0)
    return scaled_size, tf.cast(max_offset * tf.random.uniform([2], 0, 1, seed=1), tf.int32)


def scaled_crop(image, image_scale, offset, crop, flip=False):
    """IMAGE [h, w, c] uint8, flipped left-right when FLIP, normalised as Model Garden normalises, resized by
    IMAGE_SCALE [y, x] and cropped to CROP [height, width] at OFFSET [y, x], as Model Garden's
    `resize_and_crop_image` gives it (bilinear, half-pixel centres, edges clamped): by its own resize where the
    crop keeps most of the resized image, else by sampling only the crop's pixels (`sampled_crop`)."""
    scaled_pixels = tf.reduce_prod(tf.round(tf.cast(tf.shape(image)[0:2], tf.float32) * image_scale))
    return tf.cond(scaled_pixels <= RESIZE_WASTE * tf.cast(tf.reduce_prod(crop), tf.float32),
                   lambda: resized_crop(image, image_scale, offset, crop, flip),
                   lambda: sampled_crop(image, image_scale, offset, crop, flip))


def resized_crop(image, image_scale, offset, crop, flip):
    """`scaled_crop` by Model Garden's resize of the whole (flipped) image and a slice, normalised after the slice."""
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    size = tf.cast(tf.round(tf.cast(tf.shape(image)[0:2], tf.float32) * image_scale), tf.int32)
    resized = tf.image.resize(image, size)
    return _normalized(resized[offset[0]:offset[0] + crop[0], offset[1]:offset[1] + crop[1]])


def sampled_crop(image, image_scale, offset, crop, flip):
    """`scaled_crop` computing only the crop: the source rows it samples are taken, two taps per output column
    blended, then two per output row; the flip mirrors the column taps, and the normalisation (affine, so it
    commutes with the blending) runs on the smaller of the two passes' results."""
    size = tf.shape(image)[0:2]
    first = (tf.cast(offset, tf.float32) + 0.5) / image_scale - 0.5  # the source position of the crop's pixel 0
    rows, row_weight = _taps(first[0], image_scale[0], crop[0], size[0], tf.constant(False))
    columns, column_weight = _taps(first[1], image_scale[1], crop[1], size[1], flip)
    start = rows[0][0]
    window = image[start:rows[1][-1] + 1]  # the rows the crop samples, uint8
    left, right = (tf.cast(tf.gather(window, index, axis=1), tf.float32) for index in columns)
    blended = left + (right - left) * column_weight[None, :, None]
    early = tf.shape(window)[0] < crop[0]
    blended = tf.cond(early, lambda: _normalized(blended), lambda: blended)
    top, bottom = (tf.gather(blended, index - start) for index in rows)
    cropped = top + (bottom - top) * row_weight[:, None, None]
    return tf.cond(early, lambda: cropped, lambda: _normalized(cropped))


def _taps(first, scale, count, size, mirrored):
    """((lower, upper) source indices, upper's weight) of COUNT samples stepping 1 / SCALE from FIRST along an axis of
    SIZE pixels (of the axis MIRRORED, when it is); positions are clamped to the axis, as `tf.image.resize` clamps
    its taps."""
    last = tf.cast(size - 1, tf.float32)
    position = tf.clip_by_value(first + tf.range(count, dtype=tf.float32) / scale, 0.0, last)
    lower = tf.floor(position)
    lower_index = tf.cast(lower, tf.int32)
    upper_index, weight = tf.minimum(lower_index + 1, size - 1), position - lower
    # Position p of the mirrored axis is last - p of this one: the taps swap, the weights complement.
    return tf.cond(mirrored, lambda: ((size - 1 - upper_index, size - 1 - lower_index), 1.0 - weight),
                   lambda: ((lower_index, upper_index), weight))


def _normalized(pixels):
    """Float 0..255 PIXELS normalised as `preprocess_ops.normalize_image` normalises uint8 ones."""
    return preprocess_ops.normalize_scaled_float_image(pixels / 255.0)
