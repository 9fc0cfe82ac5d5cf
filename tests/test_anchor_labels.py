"""trainer/anchor_labels.py against Model Garden's own AnchorLabeler, on the same anchors and boxes: class targets and
weights equal, box targets equal but for a logarithm's last bit."""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from official.vision.ops import anchor  # noqa: E402

from trainer import anchor_labels  # noqa: E402

# Small anchors (levels 3 to 5 of a 96 x 128 input) keep a case fast; the default model's are tested once below.
ANCHORS = dict(min_level=3, max_level=5, num_scales=2, aspect_ratios=[0.5, 1.0, 2.0], anchor_size=3)
SIZE = (96, 128)


def _anchor_values(size=SIZE, **settings):
    generator = anchor.build_anchor_generator(**(settings or ANCHORS))
    return {level: boxes.numpy() for level, boxes in generator(image_size=size).items()}


def _labels(labeler, values, boxes, classes):
    """Both labelers' outputs, traced as a dataset's map traces them, as numpy."""
    anchor_boxes = {level: tf.constant(value) for level, value in values.items()}

    @tf.function
    def label(boxes, classes):
        return labeler.label_anchors(anchor_boxes, boxes, classes)

    cls_targets, box_targets, attributes, cls_weights, box_weights = label(
        tf.constant(boxes, tf.float32, shape=[len(boxes), 4]), tf.constant(classes, tf.int64, shape=[len(boxes), 1]))
    assert attributes == {}
    return ({level: value.numpy() for level, value in cls_targets.items()},
            {level: value.numpy() for level, value in box_targets.items()}, cls_weights.numpy(), box_weights.numpy())


def assert_model_gardens_labels(boxes, classes, values=None, **thresholds):
    values = values or _anchor_values()
    ours = _labels(anchor_labels.AnchorLabeler(values, **thresholds), values, boxes, classes)
    theirs = _labels(anchor.AnchorLabeler(**thresholds), values, boxes, classes)
    for key, mine, expected in zip(("cls_targets", "box_targets"), ours[:2], theirs[:2]):
        assert mine.keys() == expected.keys()
        for level in expected:
            assert mine[level].shape == expected[level].shape, (key, level)
            if key == "box_targets":  # a logarithm on a vector of another length may round its last bit otherwise
                np.testing.assert_allclose(mine[level], expected[level], rtol=1e-6, atol=1e-6, err_msg=level)
            else:
                np.testing.assert_array_equal(mine[level], expected[level], err_msg=level)
    np.testing.assert_array_equal(ours[2], theirs[2], err_msg="cls_weights")
    np.testing.assert_array_equal(ours[3], theirs[3], err_msg="box_weights")
    return theirs


def test_boxes_of_every_kind_get_model_gardens_labels():
    """Three boxes: a large one matched by many anchors, a small one no anchor overlaps by half (force matched to its
    best), one outside every anchor but the corner's; the same box twice (the first wins its anchors); no box."""
    large, small, corner = [10, 10, 80, 110], [40.0, 40.0, 43.0, 42.5], [95.5, 127.5, 96, 128]
    labels = assert_model_gardens_labels([large, small, corner], [1, 2, 3])
    cls_targets = np.concatenate([value.reshape(-1) for value in labels[0].values()])
    assert (cls_targets == 1).sum() > 10 and (cls_targets == 2).sum() >= 1 and (cls_targets == 3).sum() >= 1
    duplicated = assert_model_gardens_labels([large, large, small], [4, 5, 6])
    cls_targets = np.concatenate([value.reshape(-1) for value in duplicated[0].values()])
    assert (cls_targets == 4).sum() > 10 and (cls_targets == 5).sum() == 0
    empty = assert_model_gardens_labels([], [])
    assert (empty[3] == 0).all() and (empty[2] == 1).all()


def test_an_ignored_band_and_box_coder_weights_get_model_gardens_labels():
    """Thresholds 0.5 and 0.4 (anchors between are ignored: class weight 0) and RetinaNet's coder weights."""
    labels = assert_model_gardens_labels([[10, 10, 80, 110], [50, 0, 95, 40]], [1, 2], match_threshold=0.5,
                                         unmatched_threshold=0.4, box_coder_weights=[10.0, 10.0, 5.0, 5.0])
    assert (labels[2] == 0).sum() > 0


def test_the_default_models_anchors_get_model_gardens_labels():
    """The default model's 27,621 anchors (levels 3 to 7, 3 scales, 3 ratios, 384 px): the last few anchors, whose
    logarithms a vector's tail computes, are matched by a box in the corner."""
    values = _anchor_values((384, 384), min_level=3, max_level=7, num_scales=3, aspect_ratios=[0.5, 1.0, 2.0],
                            anchor_size=4.0)
    assert sum(value.size // 4 for value in values.values()) == 27621
    labels = assert_model_gardens_labels([[20, 30, 200, 160], [100, 100, 384, 384], [300, 350, 310, 384]],
                                         [1, 2, 3], values)
    assert (labels[1]["7"] != 0).any() and (labels[3] > 0).sum() > 20


box = st.tuples(*[st.floats(-20, 140, width=32)] * 2, *[st.floats(0.5, 120, width=32)] * 2).map(
    lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(box, max_size=8), st.sampled_from([(0.5, 0.5), (0.5, 0.4), (0.7, 0.3)]))
def test_random_boxes_get_model_gardens_labels(boxes, thresholds):
    """Fuzzed: up to 8 boxes anywhere, partly outside the image too, of any size, repeated at will; three threshold
    pairs."""
    match, unmatched = thresholds
    assert_model_gardens_labels(boxes, list(range(1, len(boxes) + 1)), match_threshold=match,
                                unmatched_threshold=unmatched)


def test_thresholds_out_of_order_are_refused():
    with pytest.raises(ValueError, match="above match_threshold"):
        anchor_labels.AnchorLabeler(_anchor_values(), match_threshold=0.4, unmatched_threshold=0.5)
