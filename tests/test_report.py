"""report.html: exact dataset counts, the trained run's page, a browser (its maths: test_metrics.py)."""
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from trainer.report import write_report
from trainer.run_dir import EXPORT_DIR


def _table(page, name):
    """The rows of the table with id NAME, as lists of cell texts."""
    body = re.search(rf'<table id="{name}">(.*?)</table>', page, re.S).group(1)
    return [re.findall(r"<t[dh]>(.*?)</t[dh]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


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
