"""report.html: the model-section maths on known cases, exact dataset counts, the trained run's page, a browser."""
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from trainer.report import IOU, MIN_SCORE, confusion, pr_curves, write_report
from trainer.export.formats import EXPORT_DIR


def _table(page, name):
    """The rows of the table with id NAME, as lists of cell texts."""
    body = re.search(rf'<table id="{name}">(.*?)</table>', page, re.S).group(1)
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


# Two images, classes a (1) and b (2). Image 1: a at (0,0), b at (20,20); image 2: a at (0,0).
TRUTH = {"images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 64},
                    {"id": 2, "file_name": "2.jpg", "width": 64, "height": 64}],
         "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
                         {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20, 20, 10, 10], "area": 100,
                          "iscrowd": 0},
                         {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}],
         "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},    # a found
    {"image_id": 1, "category_id": 1, "bbox": [21, 20, 10, 10], "score": 0.8},  # b called a (IoU 0.82)
    {"image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10], "score": 0.7},  # b where nothing is
    {"image_id": 2, "category_id": 1, "bbox": [0, 1, 10, 10], "score": 0.3},    # a found, below MIN_SCORE
]


def test_confusion_matrix_counts_hits_confusions_misses_and_false_detections():
    assert IOU == 0.5 and MIN_SCORE == 0.5
    matrix, per_image = confusion(TRUTH, DETECTIONS, [1, 2])
    assert matrix.tolist() == [[1, 0, 1],   # a: found once, missed once (image 2's detection scores 0.3)
                               [1, 0, 0],   # b: called a
                               [0, 1, 0]]   # background: one false b
    assert per_image == {1: (1, 2), 2: (1, 0)}  # (missed, false) per image


def test_pr_curves_are_pycocotools_interpolated_precision_at_iou_half():
    curves = pr_curves(TRUTH, DETECTIONS)
    # a: detections by score TP, FP, TP over 2 boxes: (recall, precision) = (.5, 1), (.5, .5), (1, 2/3);
    # COCO's interpolated precision is 1 up to recall 0.5 and 2/3 up to recall 1.
    recall, precision = curves[1]
    assert len(recall) == 101 and recall[0] == 0 and recall[-1] == 1
    assert all(p == pytest.approx(1) for r, p in zip(recall, precision) if r <= 0.5)
    assert all(p == pytest.approx(2 / 3) for r, p in zip(recall, precision) if r > 0.5)
    assert len(curves[2][0]) == 0  # b: its only detection is false: no point with precision > 0


@pytest.fixture(scope="module")
def small_bucket_run(tmp_path_factory):
    """A hand-made bucket prepared into a RESULT_DIR: 5 usable images, one truncated, one PNG, one negative."""
    from trainer.prepare import prepare

    bucket = tmp_path_factory.mktemp("bucket")
    boxes = {"a1.jpg": ["cat", "cat"], "a2.jpg": ["cat", "dog"], "a3.png": ["dog"], "a4.jpg": [], "a5.jpg": ["cat"],
             "bad.jpg": ["cat"]}
    annotations = {}
    for index, (name, labels) in enumerate(boxes.items()):
        Image.new("RGB", (80, 60), (40 * index, 100, 200)).save(bucket / name)
        annotations[name] = [{"x": 0.1 + 0.4 * i, "y": 0.2, "x2": 0.4 + 0.4 * i, "y2": 0.6, "label": label}
                             for i, label in enumerate(labels)]
    (bucket / "bad.jpg").write_bytes((bucket / "bad.jpg").read_bytes()[:200])  # truncated
    (bucket / "_annotations.json").write_text(json.dumps(
        {"version": "1.0", "type": "localization", "labels": ["cat", "dog"], "annotations": annotations}))
    result_dir = tmp_path_factory.mktemp("result")
    prepare(bucket, result_dir, val_fraction=0.4)
    return result_dir


def test_dataset_section_has_exact_counts(small_bucket_run):
    page = write_report(small_bucket_run).read_text()
    counts = {row[0]: [int(cell) for cell in row[1:]] for row in _table(page, "dataset-counts")[1:]}
    assert set(counts) == {"train", "val"}
    totals = [sum(column) for column in zip(*counts.values())]
    # images, boxes, negatives, images with cat, images with dog
    assert totals == [5, 6, 1, 3, 2]
    assert [sum(int(row[i]) for row in _table(page, "dataset-boxes")[1:]) for i in (1, 2)] == [4, 2]
    assert [row[0] for row in _table(page, "dataset-skipped")[1:]] == ["bad.jpg"]
    assert [row[0] for row in _table(page, "dataset-repaired")[1:]] == ["a3.png"]
    assert "No training events yet" in page and "No evaluation yet" in page and "No exports yet" in page
    for name in re.findall(r'<img src="([^"]+)"', page):
        assert (small_bucket_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trained_run_report_sections(trained_run):
    page = (trained_run / "report.html").read_text()
    labels = json.loads((trained_run / "data" / "labels.json").read_text())
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert {"report/dataset_classes.png", "report/dataset_samples.png", "report/training_loss.png",
            "report/training_ap.png"} <= set(sources)
    assert not re.search(r'(src|href)="(https?:|/)', page)  # relative links only: readable from a bucket
    for name in sources:
        assert (trained_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [row[0] for row in _table(page, "model-per-class")[1:]] == labels
    best = json.loads((trained_run / "metrics.json").read_text())["best"]
    assert f"Exported: the best evaluation by AP, step {best['step']} " in page
    manifest = json.loads((trained_run / EXPORT_DIR / "export.json").read_text())
    assert [row[0] for row in _table(page, "exports")[1:]] == list(manifest["results"])
    details = trained_run / EXPORT_DIR / "evaluation"
    if (details / "saved_model_detections.json").is_file():
        truth = json.loads((details / "groundtruth.json").read_text())
        rows = _table(page, "model-confusion")[1:]
        assert [row[0] for row in rows] == [*labels, "background"]
        for row, label_id in zip(rows, range(1, len(labels) + 1)):  # each true box lands in exactly one cell
            boxes = sum(1 for a in truth["annotations"] if a["category_id"] == label_id)
            assert sum(int(cell) for cell in row[1:]) == boxes
        assert "report/model_pr.png" in sources and "report/model_samples.png" in sources
    else:
        assert "No detections to analyse yet" in page


def test_report_loads_in_chromium(trained_run, tmp_path):
    """Headless Chromium opens the report from disk: every image decodes; a screenshot is written."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (`make browser` installs Debian's package)")
    shutil.copytree(trained_run / "report", tmp_path / "report")
    page = (trained_run / "report.html").read_text()
    probe = ("<script>addEventListener('load', () => document.body.setAttribute('data-images', JSON.stringify("
             "[...document.images].map(i => [i.getAttribute('src'), i.naturalWidth]))));</script>")
    (tmp_path / "report.html").write_text(page.replace("</body>", probe + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*flags, "--virtual-time-budget=10000", "--dump-dom", (tmp_path / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    images = json.loads(re.search(r"data-images=\"([^\"]*)\"", dom).group(1).replace("&quot;", '"'))
    assert len(images) == page.count("<img ") and len(images) >= 4
    assert [src for src, width in images if width == 0] == []
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1100,2400", f"--screenshot={shot}", (trained_run / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert Image.open(shot).size == (1100, 2400)


def test_no_detections_means_every_box_missed_and_no_curve():
    matrix, per_image = confusion(TRUTH, [], [1, 2])
    assert matrix.tolist() == [[0, 0, 2], [0, 0, 1], [0, 0, 0]]
    assert per_image == {1: (2, 0), 2: (1, 0)}
    assert {category: len(recall) for category, (recall, _) in pr_curves(TRUTH, []).items()} == {1: 0, 2: 0}
