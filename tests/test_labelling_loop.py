"""The labelling loop: `predict --rank uncertainty --top K --exclude BUCKET`, then `merge-buckets`.

The ranking is checked on the shared classifier run (`trained_classifier_run`) over a freshly
generated bucket with hard images among it (two classes blended, labelled as either); the uncertainty of a
detector and the merge are checked on made-up inputs.
"""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from trainer.annotations import parse_annotations
from trainer.errors import UserError
from trainer.merge_buckets import merge
from trainer.predict import predict, uncertainty


HARD_IMAGES = 12  # each half one generated image of a class, half one of another: its label is either


def blend_hard_images(truth, folder, count, seed=5):
    """Write COUNT images that are two images of different classes blended half and half, labelled as one of the two
    at random: the model can tell them apart no better than a coin, and they are what a labeller should see first."""
    from PIL import ImageOps

    rng = np.random.default_rng(seed)
    names = sorted(truth)
    hard = {}
    while len(hard) < count:
        first, second = (names[i] for i in rng.choice(len(names), 2, replace=False))
        labels = [truth[first][0]["label"], truth[second][0]["label"]]
        if labels[0] == labels[1]:
            continue
        one, other = (ImageOps.exif_transpose(Image.open(folder / name)).convert("RGB") for name in (first, second))
        name = f"hard-{len(hard):02d}.jpg"
        Image.blend(one, other.resize(one.size), 0.5).save(folder / name, quality=90)
        hard[name] = [{"label": labels[rng.integers(2)]}]
    return hard


def test_wrongly_classified_images_rank_ahead_of_right_ones_and_the_training_bucket_is_left_out(
        trained_classifier_run, tmp_path):
    from trainer.sample import make_sample_bucket

    truth = make_sample_bucket(tmp_path / "new", 60, seed=11, kind="classification")["annotations"]
    training = trained_classifier_run.parent / "bucket"
    pool = tmp_path / "pool"
    shutil.copytree(tmp_path / "new", pool)
    (pool / "_annotations.json").unlink()
    truth.update(blend_hard_images(truth, pool, HARD_IMAGES))
    trained = sorted(json.loads((training / "_annotations.json").read_text())["annotations"])[:5]
    for name in trained:  # already labelled: in the training bucket
        shutil.copyfile(training / name, pool / f"train-{name}")

    ranked = predict(trained_classifier_run, [pool], tmp_path / "all", rank="uncertainty", top=1000,
                     exclude=[training])
    assert {entry["image"] for entry in ranked} == {str(pool / name) for name in truth}  # the copies left out
    uncertainties = [entry["uncertainty"] for entry in ranked]
    assert uncertainties == sorted(uncertainties, reverse=True)
    wrong = [entry["top_k"][0]["label"] != truth[entry["image"].rsplit("/", 1)[1]][0]["label"] for entry in ranked]
    assert 0 < sum(wrong) < len(wrong), wrong
    positions = np.arange(len(wrong))
    assert positions[np.array(wrong)].mean() < positions[~np.array(wrong)].mean()
    blended = np.array([entry["image"].rsplit("/", 1)[1].startswith("hard-") for entry in ranked])
    assert positions[blended].mean() < positions[~blended].mean()
    for entry in ranked:  # 1 - margin of its two best scores
        best, second = (label["score"] for label in entry["top_k"][:2])
        assert entry["uncertainty"] == pytest.approx(1 - (best - second), abs=2e-4)

    top = predict(trained_classifier_run, [pool], tmp_path / "top", rank="uncertainty", top=4, exclude=[training])
    assert [entry["image"] for entry in top] == [entry["image"] for entry in ranked[:4]]
    bucket = json.loads((tmp_path / "top" / "_annotations.json").read_text())
    assert bucket["type"] == "classification" and len(bucket["annotations"]) == 4  # pre-labelled, for review
    assert parse_annotations((tmp_path / "top" / "_annotations.json").read_bytes()).task == "classification"


def flipped_detector(boxes, scores, classes, flip_boxes=None, flip_scores=None):
    """A fake detector: its outputs for the image, and for the image flipped left to right (told apart by pixel 0)."""
    def detect(image):
        if image[0, 0, 0] == 1:  # the flipped image: pixel (0, -1) of the original
            return {"boxes": np.array(flip_boxes, float).reshape(-1, 4), "scores": np.array(flip_scores, float),
                    "classes": np.array(classes[:len(flip_scores)])}
        return {"boxes": np.array(boxes, float), "scores": np.array(scores, float), "classes": np.array(classes)}
    image = np.zeros([4, 4, 3], np.uint8)
    image[0, -1, 0] = 1
    return detect, image


def test_a_detector_is_unsure_of_scores_near_the_threshold_and_of_what_the_flip_changes():
    box = [0.1, 0.1, 0.5, 0.3]  # ymin, xmin, ymax, xmax; flipped: xmin 0.7, xmax 0.9
    mirrored = [0.1, 0.7, 0.5, 0.9]
    detect, image = flipped_detector([box], [0.95], [1], [mirrored], [0.95])
    sure = uncertainty(detect(image), detect, image, 0.5)
    assert sure == pytest.approx(0.0)  # one confident box, found again on the flipped image
    detect, image = flipped_detector([box], [0.95], [1], [box], [0.95])  # the flip finds it elsewhere
    assert uncertainty(detect(image), detect, image, 0.5) == pytest.approx(1.0)
    detect, image = flipped_detector([box, box], [0.95, 0.5], [1, 2], [mirrored, mirrored], [0.95, 0.5])
    assert uncertainty(detect(image), detect, image, 0.5) == pytest.approx(1 - np.exp(-1))  # one box at 0.5
    detect, image = flipped_detector([box], [0.95], [1], [], [])  # lost on the flipped image
    assert uncertainty(detect(image), detect, image, 0.5) == pytest.approx(1.0)


def bucket(folder, kind, annotations, labels, colours):
    folder.mkdir(parents=True)
    for name, colour in colours.items():
        Image.new("RGB", (32, 24), colour).save(folder / name)
    (folder / "_annotations.json").write_text(json.dumps({"version": "1.0", "type": kind, "labels": labels,
                                                          "annotations": annotations}))
    return folder


def test_merge_buckets_takes_corrections_whatever_their_name_and_keeps_both_of_a_shared_name(tmp_path):
    box = {"x": 0.1, "y": 0.1, "x2": 0.5, "y2": 0.5}
    training = bucket(tmp_path / "training", "localization",
                      {"a.jpg": [{**box, "label": "cat"}], "b.jpg": [{**box, "label": "dog"}], "c.jpg": []},
                      ["cat", "dog"], {"a.jpg": (200, 0, 0), "b.jpg": (0, 200, 0), "c.jpg": (0, 0, 200)})
    corrected = bucket(tmp_path / "corrected", "localization",
                       {"a-1.jpg": [{**box, "label": "fox"}], "b.jpg": [{**box, "label": "cat"}],
                        "bad.jpg": [{"x": 0.1, "label": "cat"}]},
                       ["fox", "cat"], {"a-1.jpg": (200, 0, 0), "b.jpg": (9, 9, 9), "bad.jpg": (1, 1, 1)})
    before = {path: path.read_bytes() for path in [*training.iterdir(), *corrected.iterdir()]}
    report = merge([training, corrected], tmp_path / "merged")
    merged = json.loads((tmp_path / "merged" / "_annotations.json").read_text())
    assert merged["labels"] == ["cat", "dog", "fox"]
    assert merged["annotations"] == {"a.jpg": [{**box, "label": "fox"}],  # the same bytes as a-1.jpg: corrected
                                     "b.jpg": [{**box, "label": "dog"}], "c.jpg": [],
                                     "b-1.jpg": [{**box, "label": "cat"}]}  # other bytes, a free name
    assert (tmp_path / "merged" / "a.jpg").read_bytes() == (corrected / "a-1.jpg").read_bytes()
    assert (tmp_path / "merged" / "b-1.jpg").read_bytes() == (corrected / "b.jpg").read_bytes()
    assert [issue["item"] for issue in report["skipped"]] == [f"{corrected}/bad.jpg"]
    assert {path: path.read_bytes() for path in before} == before  # the buckets are never written
    assert len(parse_annotations((tmp_path / "merged" / "_annotations.json").read_bytes()).images) == 4


def test_merge_buckets_of_classification_buckets_and_what_it_refuses(tmp_path):
    first = bucket(tmp_path / "first", "classification", {"a.jpg": [{"label": "cat"}]}, ["cat"], {"a.jpg": (1, 2, 3)})
    second = bucket(tmp_path / "second", "classification", {"b.jpg": [{"label": "dog"}], "c.jpg": []}, ["dog"],
                    {"b.jpg": (4, 5, 6), "c.jpg": (7, 8, 9)})
    report = merge([first, second], tmp_path / "merged")
    merged = json.loads((tmp_path / "merged" / "_annotations.json").read_text())
    assert merged["type"] == "classification" and merged["labels"] == ["cat", "dog"]
    assert merged["annotations"] == {"a.jpg": [{"label": "cat"}], "b.jpg": [{"label": "dog"}]}
    assert [issue["item"] for issue in report["skipped"]] == [f"{second}/c.jpg"]  # left unlabelled: skipped
    (tmp_path / "empty").mkdir()
    boxes = bucket(tmp_path / "boxes", "localization", {"d.jpg": []}, [], {"d.jpg": (1, 1, 1)})
    with pytest.raises(UserError, match="mix localization and classification buckets"):
        merge([first, boxes], tmp_path / "mixed")
    with pytest.raises(UserError, match="has no _annotations.json"):
        merge([first, tmp_path / "empty"], tmp_path / "none")
    with pytest.raises(UserError, match="overlap"):
        merge([first, second], first / "inside")
