"""Model Garden's RetinaNet anchor labels at a fraction of their cost, for one model's fixed anchors.

`official.vision.ops.anchor.AnchorLabeler.label_anchors` takes the anchors as an argument, so for every image it
computes their areas, centres and sizes again. It lays the IoU out [anchors, boxes], where every operation runs along a
few boxes per anchor (ten times the cost of one along the anchors of a box, measured), and it gathers a target for
each of the default model's 27,621 anchors, though a few hundred are matched: gathers cost 8 ns an element here. On
kangaroo records that labelling was 5.6 ms of the default model's 18.9 ms of parser CPU per image.

`AnchorLabeler` computes what depends on the anchors alone once: their corners and areas, and the box targets of an
anchor matched to nothing (Model Garden's encoding of its mask value, a zero box). Per image it computes the IoU laid
out [boxes, anchors], matches as `BoxMatcher` does, and encodes only the matched anchors' boxes, with the same float
operations in the same order as Model Garden. Its class targets and both weights equal Model Garden's exactly, and
its box targets are equal except where a logarithm runs on a vector of another length (tests/test_anchor_labels.py).
"""
from typing import Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf
from official.vision.ops import anchor
from official.vision.utils.object_detection import faster_rcnn_box_coder

Levels = Dict[str, tf.Tensor]


class AnchorLabeler:
    """`label_anchors` of Model Garden's `AnchorLabeler(match_threshold, unmatched_threshold, box_coder_weights)` for
    the anchors ANCHOR_BOXES (level -> [height, width, anchors per location * 4]); built eagerly, used in graphs.
    What it keeps are arrays, made constants where they are used: the dataset's graph holds them, as tf.data service
    needs when it serializes the graph."""

    def __init__(self, anchor_boxes: Dict[str, np.ndarray], match_threshold: float = 0.5,
                 unmatched_threshold: float = 0.5, box_coder_weights: Sequence[float] = None):
        if unmatched_threshold > match_threshold:
            raise ValueError(f"unmatched_threshold {unmatched_threshold} is above match_threshold {match_threshold}")
        self._thresholds = (unmatched_threshold, match_threshold)
        self._scale_factors = box_coder_weights
        flat = tf.concat([tf.reshape(boxes, [-1, 4]) for boxes in anchor_boxes.values()], axis=0)
        self._count = int(flat.shape[0])
        ymin, xmin, ymax, xmax = corners = [tf.reshape(side, [1, -1]) for side in tf.unstack(flat, axis=-1)]
        self._corners = [side.numpy() for side in corners]  # [1, anchors] each
        self._areas = ((ymax - ymin) * (xmax - xmin)).numpy()
        self._centres_and_sizes = [side.numpy() for side in _centres_and_sizes(flat)]  # [anchors] each
        unmatched = self._codes(_centres_and_sizes(tf.zeros_like(flat)),
                                [tf.constant(side) for side in self._centres_and_sizes])
        self._unmatched_box_targets = unmatched.numpy()

    def label_anchors(self, anchor_boxes: Levels, gt_boxes: tf.Tensor, gt_labels: tf.Tensor
                      ) -> Tuple[Levels, Levels, Dict[str, Levels], tf.Tensor, tf.Tensor]:
        """Model Garden's `label_anchors(ANCHOR_BOXES, GT_BOXES [n, 4], GT_LABELS [n, 1])` (no attributes, no
        weights), ANCHOR_BOXES the constants of this labeler's anchors: (class targets, box targets, {}, class
        weights, box weights)."""
        gt_boxes = tf.cast(gt_boxes, tf.float32)
        matched, box, indicators = self._match(gt_boxes)
        rows = matched[:, None]
        cls_targets = tf.tensor_scatter_nd_update(tf.fill([self._count, 1], tf.cast(-1, gt_labels.dtype)), rows,
                                                  tf.gather(gt_labels, box))
        anchors = [tf.gather(tf.constant(side), matched) for side in self._centres_and_sizes]
        boxes = [tf.gather(side, box) for side in _centres_and_sizes(gt_boxes)]
        box_targets = tf.tensor_scatter_nd_update(tf.constant(self._unmatched_box_targets), rows,
                                                  self._codes(boxes, anchors))
        cls_weights = tf.cast(tf.not_equal(indicators, -2), tf.float32)
        box_weights = tf.cast(indicators > 0, tf.float32)
        return (anchor.unpack_targets(cls_targets, anchor_boxes), anchor.unpack_targets(box_targets, anchor_boxes), {},
                cls_weights, box_weights)

    def _match(self, gt_boxes):
        """(matched anchors [m] int64, the box each is matched to [m], indicator [anchors]: 1 matched, -2 ignored, -1
        negative) as Model Garden's IouSimilarity and BoxMatcher(thresholds=[unmatched, match], indicators=[-1, -2,
        1], force_match_for_each_col=True) give them."""
        ymin, xmin, ymax, xmax = (tf.constant(side) for side in self._corners)
        gt_ymin, gt_xmin, gt_ymax, gt_xmax = tf.split(gt_boxes, 4, axis=-1)  # [boxes, 1] each
        heights = tf.maximum(0.0, tf.minimum(ymax, gt_ymax) - tf.maximum(ymin, gt_ymin))
        widths = tf.maximum(0.0, tf.minimum(xmax, gt_xmax) - tf.maximum(xmin, gt_xmin))
        intersections = heights * widths
        unions = (tf.constant(self._areas) + (gt_ymax - gt_ymin) * (gt_xmax - gt_xmin)) - intersections
        # Every anchor has an area, so no union is 0 and this is Model Garden's where(intersections == 0, 0, ...).
        similarity = intersections / unions  # [boxes, anchors]
        best = tf.reduce_max(similarity, axis=0)  # the lowest float where there is no box
        unmatched_threshold, match_threshold = (tf.constant(threshold, tf.float32) for threshold in self._thresholds)
        indicators = tf.where(best >= match_threshold, 1, tf.where(best >= unmatched_threshold, -2, -1))
        # Each box's best anchor is matched to it; of several boxes choosing one anchor, the first.
        count = tf.shape(gt_boxes)[0]
        chosen = tf.math.unsorted_segment_min(tf.range(count), tf.argmax(similarity, axis=1, output_type=tf.int32),
                                              self._count)
        forced = chosen < count
        indicators = tf.where(forced, 1, indicators)
        matched = tf.where(indicators > 0)[:, 0]
        # The argmax over boxes runs on the matched anchors alone; a last row below any IoU lets it run where there
        # is no box, as an argmax along an empty axis cannot.
        candidates = tf.gather(similarity, matched, axis=1)
        best_box = tf.argmax(tf.concat([candidates, tf.fill([1, tf.size(matched)], -1.0)], axis=0), axis=0,
                             output_type=tf.int32)
        box = tf.where(tf.gather(forced, matched), tf.gather(chosen, matched), best_box)
        return matched, box, indicators

    def _codes(self, boxes, anchors):
        """[n, 4] FasterRcnnBoxCoder._encode of BOXES against ANCHORS, both `_centres_and_sizes`."""
        (ycenter, xcenter, height, width), (ycenter_a, xcenter_a, height_a, width_a) = boxes, anchors
        codes = [(ycenter - ycenter_a) / height_a, (xcenter - xcenter_a) / width_a,
                 tf.math.log(height / height_a), tf.math.log(width / width_a)]
        if self._scale_factors:
            codes = [code * factor for code, factor in zip(codes, self._scale_factors)]
        return tf.transpose(tf.stack(codes))


def _centres_and_sizes(boxes):
    """[ycenter, xcenter, height + EPSILON, width + EPSILON] of BOXES [n, 4], each [n], as FasterRcnnBoxCoder._encode
    computes them."""
    ymin, xmin, ymax, xmax = tf.unstack(tf.transpose(boxes))
    width, height = xmax - xmin, ymax - ymin
    epsilon = faster_rcnn_box_coder.EPSILON
    return [ymin + height / 2.0, xmin + width / 2.0, height + epsilon, width + epsilon]
