"""The tf-models-official workarounds (trainer/model_garden.py) without training: what each patch changes, that
it changes nothing else, and that applying it twice is applying it once."""
import numpy as np
import yaml

from trainer import model_garden


def test_rank5_upsampling_gives_model_gardens_values_and_is_undone_after_the_block():
    import tensorflow as tf
    from official.vision.ops import spatial_transform_ops

    original = spatial_transform_ops.nearest_upsampling
    data = tf.reshape(tf.range(2 * 3 * 4 * 5, dtype=tf.float32), [2, 3, 4, 5])
    with model_garden.rank5_upsampling():
        assert spatial_transform_ops.nearest_upsampling is not original
        upsampled = spatial_transform_ops.nearest_upsampling(data, 2)
    assert spatial_transform_ops.nearest_upsampling is original
    assert upsampled.shape == (2, 6, 8, 5)
    np.testing.assert_array_equal(upsampled.numpy(), original(data, 2).numpy())


def test_coco_evaluation_patch_is_applied_once():
    from official.vision.evaluation import coco_evaluator, coco_utils

    model_garden.patch_coco_evaluation()
    patched, evaluator = coco_utils.convert_groundtruths_to_coco_dataset, coco_evaluator.cocoeval.COCOeval
    model_garden.patch_coco_evaluation()
    assert coco_utils.convert_groundtruths_to_coco_dataset is patched and patched.flattens_num_detections
    assert coco_evaluator.cocoeval.COCOeval is evaluator and evaluator.__name__ == "COCOevalWithCategoryStats"


def test_tuples_become_lists_that_a_safe_yaml_loader_reads():
    settings = {"train_data": {"aug_crop": True, "crop_area_range": (0.08, 1.0)}, "steps": 5, "sizes": (1, 2)}
    override = model_garden.tuples_as_lists(settings)
    assert override == {"train_data": {"crop_area_range": [0.08, 1.0]}, "sizes": [1, 2]}
    assert yaml.safe_load(yaml.dump(override)) == override
