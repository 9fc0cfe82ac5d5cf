"""`trainer import` and `export-annotations` on datasets the tests write, bad entries included."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from trainer.errors import UserError
from trainer.datasets.export_annotations import export_annotations
from trainer.datasets.import_dataset import import_dataset

REPO = Path(__file__).resolve().parent.parent


def make_image(path, width, height, color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), color).save(path)
    return path


def read_bucket(out_dir):
    return (json.loads((out_dir / "_annotations.json").read_text()),
            json.loads((out_dir / "import_report.json").read_text()))


def boxes_of(document, key):
    return [(b["x"], b["y"], b["x2"], b["y2"], b["label"]) for b in document["annotations"][key]]


def assert_boxes(document, key, expected):
    """KEY's boxes are EXPECTED: the same labels in order, corners within 1e-12."""
    got = boxes_of(document, key)
    assert [box[4] for box in got] == [box[4] for box in expected]
    for box, want in zip(got, expected):
        assert box[:4] == pytest.approx(want[:4], abs=1e-12)


# ---------------------------------------------------------------- COCO

COCO_IMAGES = [  # id, file_name, declared width, height, real size (None: no file)
    (1, "a.jpg", 64, 48, (64, 48)),
    (2, "sub/b.png", 80, 60, (80, 60)),
    (3, "c.jpg", 50, 50, (50, 50)),          # no annotations: a negative
    (4, "d.jpg", 10, 10, (64, 48)),          # declared size is wrong
    (5, "e.jpg", 40, 40, None),              # missing file
    (6, "../escape.jpg", 40, 40, None),      # escapes the images folder
    (7, "f.jpg", 40, 40, (40, 40)),          # unknown category
    (8, "g.jpg", 40, 40, (40, 40)),          # malformed bbox
    (9, "h.jpg", 40, 40, (40, 40)),          # a box reaching outside
]
COCO_ANNOTATIONS = [  # id, image_id, category_id, bbox, iscrowd
    (10, 1, 1, [6.4, 4.8, 32.0, 24.0], 0),
    (11, 1, 2, [0.5, 1.25, 10.5, 20.75], 0),
    (12, 1, 1, [0, 0, 64, 48], 1),
    (13, 2, 2, [8.0, 6.0, 16.0, 12.0], 0),
    (14, 4, 1, [1, 1, 2, 2], 0),
    (15, 7, 99, [1, 1, 2, 2], 0),
    (16, 8, 1, [1, 1, "x", 2], 0),
    (17, 9, 1, [20, 20, 40, 10], 0),
    (18, 999, 1, [1, 1, 2, 2], 0),
]


@pytest.fixture
def coco_dataset(tmp_path):
    images = tmp_path / "coco" / "images"
    for _, name, _, _, real in COCO_IMAGES:
        if real and ".." not in name:
            make_image(images / name, *real)
    make_image(tmp_path / "coco" / "escape.jpg", 40, 40)  # exists, but must not be reached
    document = {
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h, _ in COCO_IMAGES],
        "annotations": [{"id": i, "image_id": im, "category_id": c, "bbox": b, "iscrowd": crowd, "area": 1}
                        for i, im, c, b, crowd in COCO_ANNOTATIONS],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    source = tmp_path / "coco" / "instances.json"
    source.write_text(json.dumps(document))
    return source, images


def test_coco_import_writes_a_bucket_and_reports_each_bad_entry(coco_dataset, tmp_path):
    source, images = coco_dataset
    out = tmp_path / "bucket"
    import_dataset("coco", source, out, images=images)
    document, report = read_bucket(out)
    assert document["version"] == "1.0" and document["type"] == "localization"
    assert document["labels"] == ["cat", "dog"]
    assert sorted(document["annotations"]) == ["a.jpg", "c.jpg", "h.jpg", "sub/b.png"]
    assert_boxes(document, "a.jpg", [(0.1, 0.1, 0.6, 0.6, "cat"), (0.5 / 64, 1.25 / 48, 11 / 64, 22 / 48, "dog")])
    assert boxes_of(document, "sub/b.png") == [(0.1, 0.1, 0.3, 0.3, "dog")]
    assert boxes_of(document, "c.jpg") == []
    assert boxes_of(document, "h.jpg") == [(0.5, 0.5, 1.0, 0.75, "cat")]
    assert {(i["item"], i["reason"].split(":")[0]) for i in report["skipped"]} == {
        ("image 4 (d.jpg)", "wrong size"), ("image 5 (e.jpg)", "missing image"),
        ("image 6 (../escape.jpg)", "unsafe path '../escape.jpg'"), ("image 7 (f.jpg)", "unknown class id"),
        ("image 8 (g.jpg)", "malformed box"),
        ("annotations[8]", "annotation of no listed image (image_id missing or unknown)"),
    }
    assert len(report["skipped"]) == 6
    assert [(i["item"], i["reason"]) for i in report["repaired"]] == [
        ("image 1 (a.jpg)", "crowd region dropped: annotation 12 is a crowd (iscrowd 1)"),
        ("image 9 (h.jpg)", "box clipped: box 1 reached outside the image"),
    ]
    assert (report["images"], report["boxes"], report["negatives"]) == (4, 4, 1)
    assert report["per_class"] == {"cat": 2, "dog": 2}
    assert (out / "a.jpg").samefile(images / "a.jpg")  # hard-linked
    assert not (tmp_path / "escape.jpg").exists() and not (out.parent / "escape.jpg").exists()


def test_coco_round_trip_keeps_every_box(coco_dataset, tmp_path):
    from pycocotools.coco import COCO

    source, images = coco_dataset
    import_dataset("coco", source, tmp_path / "bucket", images=images, copy=True)
    assert not (tmp_path / "bucket" / "a.jpg").samefile(images / "a.jpg")
    assert export_annotations("coco", tmp_path / "bucket", tmp_path / "out.json") == (4, 0)
    exported = COCO(str(tmp_path / "out.json"))  # the reference loader takes it
    original = json.loads(source.read_text())
    names = {c["id"]: c["name"] for c in original["categories"]}
    by_file = {}
    for a in original["annotations"]:
        if a["id"] in (10, 11, 13):  # the boxes imported unchanged
            file_name = next(i["file_name"] for i in original["images"] if i["id"] == a["image_id"])
            by_file.setdefault(file_name, []).append((names[a["category_id"]], a["bbox"]))
    exported_names = {c["id"]: c["name"] for c in exported.loadCats(exported.getCatIds())}
    assert sorted(exported_names.values()) == ["cat", "dog"]
    for image in exported.loadImgs(exported.getImgIds()):
        anns = exported.loadAnns(exported.getAnnIds(image["id"]))
        got = [(exported_names[a["category_id"]], a["bbox"]) for a in anns]
        if image["file_name"] == "h.jpg":
            assert got[0][1] == pytest.approx([20, 20, 20, 10], abs=1e-6)  # clipped at the right edge
            continue
        expected = by_file.get(image["file_name"], [])
        assert [name for name, _ in got] == [name for name, _ in expected]
        for (_, box), (_, want) in zip(got, expected):
            assert box == pytest.approx(want, abs=1e-6)


def test_coco_classes_and_limit(coco_dataset, tmp_path):
    source, images = coco_dataset
    report = import_dataset("coco", source, tmp_path / "dogs", images=images, classes="DOG")
    document, _ = read_bucket(tmp_path / "dogs")
    assert sorted(document["annotations"]) == ["a.jpg", "sub/b.png"]
    assert_boxes(document, "a.jpg", [(0.5 / 64, 1.25 / 48, 11 / 64, 22 / 48, "dog")])
    assert document["labels"] == ["dog"]
    assert report["left_out"] == 3  # c.jpg (no dog), h.jpg (a cat only), ../escape.jpg (nothing)
    report = import_dataset("coco", source, tmp_path / "one", images=images, limit=1)
    assert sorted(read_bucket(tmp_path / "one")[0]["annotations"]) == ["a.jpg", "c.jpg"]  # a: cat and dog; c: negative
    with pytest.raises(UserError, match="^unknown class 'dgo'; close matches: dog$"):
        import_dataset("coco", source, tmp_path / "x", images=images, classes="dgo")


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"), ('{"images": []}', "is not a COCO instances file"),
])
def test_coco_malformed_file_is_one_line(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(UserError, match=message):
        import_dataset("coco", tmp_path / "bad.json", tmp_path / "out")


# ---------------------------------------------------------------- Pascal VOC

def voc_xml(filename, objects, size=(100, 50)):
    parts = "".join(f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x}</xmin><ymin>{y}</ymin>"
                    f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for name, x, y, x2, y2 in objects)
    return (f"<annotation><folder>VOC</folder><filename>{filename}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{parts}</annotation>")


def test_voc_import(tmp_path):
    root = tmp_path / "VOC"
    for stem in ("one", "two", "three", "four", "five"):
        make_image(root / "JPEGImages" / f"{stem}.jpg", 100, 50)
    xmls = {
        "one": voc_xml("one.jpg", [("person", 10, 5, 60, 45), ("dog", 0, 0, 100, 50)]),
        "two": voc_xml("IMG_0042.JPG", [("dog", 20, 10, 120, 40)]),  # wrong filename; a box past the edge
        "three": "<annotation><filename>three.jpg</filename><object>",  # malformed XML
        "four": voc_xml("four.jpg", [("dog", 1, 2, 3, 4)]).replace("<xmax>3</xmax>", ""),  # no xmax
        "five": voc_xml("five.jpg", [], size=(50, 100)),  # size disagrees with the image
        "six": voc_xml("six.jpg", [("dog", 1, 1, 5, 5)]),  # no image
        "seven": voc_xml("seven.jpg", []),
        "eight": '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY a "aaaaaaaaaa">' + "".join(  # an entity bomb
            f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
                 + "]><annotation><filename>&i;</filename></annotation>",
    }
    make_image(root / "JPEGImages" / "seven.jpg", 100, 50)
    for stem, text in xmls.items():
        (root / "Annotations").mkdir(exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(text)
    report = import_dataset("voc", root, tmp_path / "bucket")
    document, _ = read_bucket(tmp_path / "bucket")
    assert sorted(document["annotations"]) == ["one.jpg", "seven.jpg", "two.jpg"]
    assert boxes_of(document, "one.jpg") == [(0.1, 0.1, 0.6, 0.9, "person"), (0.0, 0.0, 1.0, 1.0, "dog")]
    assert boxes_of(document, "two.jpg") == [(0.2, 0.2, 1.0, 0.8, "dog")]
    assert boxes_of(document, "seven.jpg") == []
    assert document["labels"] == ["person", "dog"]
    assert [(i["item"], i["reason"].split(":")[0]) for i in report["skipped"]] == [
        ("Annotations/eight.xml", "malformed file"), ("Annotations/five.xml", "wrong size"),
        ("Annotations/four.xml", "malformed file"),
        ("Annotations/six.xml", "missing image"), ("Annotations/three.xml", "malformed file"),
    ]
    assert [(i["item"], i["reason"]) for i in report["repaired"]] == [
        ("Annotations/two.xml", "filename 'IMG_0042.JPG' names no file; used two.jpg, the XML's own name"),
        ("Annotations/two.xml", "box clipped: box 1 reached outside the image"),
    ]


# ---------------------------------------------------------------- YOLO

@pytest.fixture
def yolo_dataset(tmp_path):
    root = tmp_path / "yolo"
    labels = {
        "train/a": "0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.5 0.5\n",
        "val/a": "1 0.5 0.5 1.0 1.0\n",          # same name as train/a, another split
        "train/neg": None,                        # no label file: no objects
        "train/empty": "",
        "train/bad": "0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n",  # unknown class id
        "train/mal": "0 0.5 zero 0.2 0.2\n",
        "train/edge": "0 0.95 0.5 0.2 0.2\n",    # reaches past the right edge
    }
    for shade, (name, text) in enumerate(labels.items()):  # distinct bytes: prepare refuses copies of one image
        make_image(root / "images" / f"{name}.jpg", 40, 20, (200, 30, 30 + 20 * shade))
        if text is not None:
            (root / "labels" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "labels" / f"{name}.txt").write_text(text)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    return root / "data.yaml"


def test_yolo_import(yolo_dataset, tmp_path):
    report = import_dataset("yolo", yolo_dataset, tmp_path / "bucket")
    document, _ = read_bucket(tmp_path / "bucket")
    assert sorted(document["annotations"]) == ["images/train/a.jpg", "images/train/edge.jpg", "images/train/empty.jpg",
                                               "images/train/neg.jpg", "images/val/a.jpg"]
    assert_boxes(document, "images/train/a.jpg", [(0.4, 0.3, 0.6, 0.7, "cat"), (0.0, 0.5, 0.5, 1.0, "dog")])
    assert boxes_of(document, "images/val/a.jpg") == [(0.0, 0.0, 1.0, 1.0, "dog")]
    assert_boxes(document, "images/train/edge.jpg", [(0.85, 0.4, 1.0, 0.6, "cat")])
    assert [(i["item"], i["reason"]) for i in report["skipped"]] == [
        ("images/train/bad.jpg", "unknown class id: bad.txt line 2 has class 7, data.yaml names 0..1"),
        ("images/train/mal.jpg", "malformed file: mal.txt line 1 is not 'class cx cy w h'"),
    ]
    assert [(i["item"], i["reason"]) for i in report["repaired"]] == [
        ("images/train/edge.jpg", "box clipped: box 1 reached outside the image")]
    assert report["negatives"] == 2


def test_yolo_bucket_is_prepared_and_round_trips(yolo_dataset, tmp_path):
    from trainer.prepare import prepare

    import_dataset("yolo", yolo_dataset, tmp_path / "bucket")
    report = prepare(tmp_path / "bucket", tmp_path / "result", val_fraction=0.2)
    assert report["labels"] == ["cat", "dog"]
    assert report["splits"]["train"]["images"] + report["splits"]["val"]["images"] == 5
    assert report["skipped"] == [] and report["repaired"] == []  # the importer already clipped
    export_annotations("coco", tmp_path / "bucket", tmp_path / "out.json")
    exported = json.loads((tmp_path / "out.json").read_text())
    a = next(i["id"] for i in exported["images"] if i["file_name"] == "images/train/a.jpg")
    boxes = [x["bbox"] for x in exported["annotations"] if x["image_id"] == a]
    assert boxes == [pytest.approx([16, 6, 8, 8], abs=1e-6), pytest.approx([0, 10, 20, 10], abs=1e-6)]


def test_cli_import_and_export_and_help_without_tensorflow(yolo_dataset, tmp_path):
    env_python = [sys.executable, "-m", "trainer"]
    result = subprocess.run([*env_python, "import", "yolo", str(yolo_dataset), str(tmp_path / "b"), "--limit", "1"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"import: wrote 2 images (2 boxes, 2 classes, 1 without boxes) "
                                                     f"to {tmp_path / 'b'}; skipped 2, repaired 0, 3 left out")
    result = subprocess.run([*env_python, "export-annotations", "coco", str(tmp_path / "b"), str(tmp_path / "o.json")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    exported = json.loads((tmp_path / "o.json").read_text())
    assert [image["file_name"] for image in exported["images"]] == ["images/train/a.jpg", "images/train/empty.jpg"]
    result = subprocess.run([*env_python, "import", "coco", str(tmp_path / "none.json"), str(tmp_path / "c")],
                            cwd=REPO, capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (1, f"error: no such COCO file: {tmp_path / 'none.json'}\n")
    code = ("import sys; from trainer.__main__ import main\ntry: main(['import', '--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('tensorflow')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.endswith("[]\n")


# ---------------------------------------------------------------- Open Images

OI_BOX_HEADER = ("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,"
                 "IsDepiction,IsInside")
OI_IMAGE_HEADER = ("ImageID,Subset,OriginalURL,OriginalLandingURL,License,AuthorProfileURL,Author,Title,OriginalSize,"
                   "OriginalMD5,Thumbnail300KURL,Rotation")
DOG, CAT, CAR, PERSON = "/m/0bt9lr", "/m/01yrx", "/m/0k4j", "/m/01g317"
OI_BOXES = [  # ImageID, LabelName, XMin, XMax, YMin, YMax; grouped by image as Open Images lists them
    ("0001a", DOG, "0.1", "0.5", "0.2", "0.6"), ("0001a", PERSON, "0", "1", "0", "1"),
    ("0001a", CAT, "0.5", "0.9", "0.25", "0.75"),
    ("0002b", DOG, "0.0", "1.0", "0.0", "1.0"),
    ("0003c", CAT, "0.125", "0.375", "0.5", "0.625"),
    ("0004d", CAR, "0.1", "0.2", "0.1", "0.2"),
    ("0005e", DOG, "0.1", "0.2", "0.1", "0.2"),   # always served cut short, without a length
    ("0006f", DOG, "0.1", "0.2", "0.1", "0.2"),   # 404
    ("0007g", CAT, "abc", "0.2", "0.1", "0.2"),   # malformed row
    ("0008h", DOG, "0.3", "0.4", "0.3", "0.4"),   # cut once, then resumed
    ("0009i", DOG, "0.1", "0.2", "0.1", "0.2"),   # its bytes are not the listed MD5
]


def jpeg_bytes(seed):
    import io

    buffer = io.BytesIO()
    Image.effect_noise((48, 32), 40 + seed).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def fast_retries(monkeypatch):
    from trainer import download

    monkeypatch.setattr(download, "RETRY_BASE_SECONDS", 0.001)


@pytest.fixture
def open_images(tmp_path, fast_retries):
    """(CSV folder, {ImageID: JPEG bytes}, FileServer serving them as each row's OriginalURL)."""
    import base64
    import hashlib

    from http_server import FileServer

    folder = tmp_path / "oi"
    folder.mkdir()
    (folder / "oidv7-class-descriptions-boxable.csv").write_text(
        f"LabelName,DisplayName\n{DOG},Dog\n{CAT},Cat\n{CAR},Car\n{PERSON},Person\n")
    (folder / "validation-annotations-bbox.csv").write_text(OI_BOX_HEADER + "\n" + "".join(
        f"{image_id},xclick,{label},1,{x},{x2},{y},{y2},0,0,0,0,0\n" for image_id, label, x, x2, y, y2 in OI_BOXES))
    ids = sorted({row[0] for row in OI_BOXES})
    data = {image_id: jpeg_bytes(number) for number, image_id in enumerate(ids)}
    with FileServer() as server:
        rows = []
        for image_id in ids:
            md5 = base64.b64encode(hashlib.md5(data[image_id] + (b"x" if image_id == "0009i" else b"")).digest())
            url = server.url(f"/photos/{image_id}_o.jpg")
            rows.append(f"{image_id},validation,{url},,CC BY 2.0,,,,{len(data[image_id])},{md5.decode()},,0\n")
            if image_id != "0006f":
                server.files[f"/photos/{image_id}_o.jpg"] = data[image_id]
        server.faults["/photos/0005e_o.jpg"] = [("no-length", len(data["0005e"]) // 2)] * 10
        server.faults["/photos/0008h_o.jpg"] = ["cut"]
        (folder / "validation-images-with-rotation.csv").write_text(OI_IMAGE_HEADER + "\n" + "".join(rows))
        yield folder, data, server


def test_openimages_from_original_urls(open_images, tmp_path):
    folder, data, server = open_images
    out = tmp_path / "bucket"
    report = import_dataset("openimages", folder, out, classes="dog,Cat")
    document, _ = read_bucket(out)
    assert document["labels"] == ["Dog", "Cat"]
    assert sorted(document["annotations"]) == ["0001a.jpg", "0002b.jpg", "0003c.jpg", "0008h.jpg"]
    assert_boxes(document, "0001a.jpg", [(0.1, 0.2, 0.5, 0.6, "Dog"), (0.5, 0.25, 0.9, 0.75, "Cat")])
    assert_boxes(document, "0003c.jpg", [(0.125, 0.5, 0.375, 0.625, "Cat")])
    for key in document["annotations"]:
        assert (out / key).read_bytes() == data[key.removesuffix(".jpg")]
    reasons = {issue["item"]: issue["reason"] for issue in report["skipped"]}
    assert sorted(reasons) == ["0005e", "0006f", "0007g", "0009i"]
    assert reasons["0005e"].startswith("download failed: cannot download http://127.0.0.1:")
    assert "incomplete or corrupt body (the server sent no length): MD5 is" in reasons["0005e"]
    assert reasons["0005e"].endswith("(gave up after 5 attempts; a rerun resumes)")
    assert reasons["0006f"].endswith("HTTP 404 Not Found")
    assert reasons["0007g"] == "malformed row: validation-annotations-bbox.csv line 10 has a non-numeric coordinate"
    assert "MD5 is" in reasons["0009i"] and "Open Images lists" in reasons["0009i"]
    assert [r for p, r in server.requests if p == "/photos/0008h_o.jpg"] == [None, f"bytes={len(data['0008h']) // 2}-"]
    assert not list(out.glob("*.part"))
    assert sorted(path.name for path in out.iterdir()) == sorted(
        ["_annotations.json", "import_report.json", "0001a.jpg", "0002b.jpg", "0003c.jpg", "0008h.jpg"])

    server.requests.clear()
    server.files["/photos/0006f_o.jpg"] = data["0006f"]  # it is back
    import_dataset("openimages", folder, out, classes="dog,Cat")
    fetched = sorted({path for path, _ in server.requests})
    assert fetched == ["/photos/0005e_o.jpg", "/photos/0006f_o.jpg", "/photos/0009i_o.jpg"]  # the rest is reused
    assert "0006f.jpg" in read_bucket(out)[0]["annotations"]


def test_openimages_limit_from_a_folder_in_the_bucket_layout(open_images, tmp_path):
    folder, data, _ = open_images
    for image_id, content in data.items():
        (tmp_path / "mirror" / "validation").mkdir(parents=True, exist_ok=True)
        (tmp_path / "mirror" / "validation" / f"{image_id}.jpg").write_bytes(content)
    report = import_dataset("openimages", folder, tmp_path / "b", images=str(tmp_path / "mirror"), classes="Dog",
                            limit=2)
    assert sorted(read_bucket(tmp_path / "b")[0]["annotations"]) == ["0001a.jpg", "0002b.jpg"]
    assert report["left_out"] == 4  # 0005e, 0006f, 0008h, 0009i
    assert boxes_of(read_bucket(tmp_path / "b")[0], "0001a.jpg") == [(0.1, 0.2, 0.5, 0.6, "Dog")]


def test_openimages_from_the_open_images_bucket(open_images, gcs_client, tmp_path):
    folder, data, _ = open_images
    bucket = gcs_client.create_bucket("open-images-dataset")
    bucket.blob("validation/0001a.jpg").upload_from_string(data["0001a"])
    bucket.blob("validation/0003c.jpg").upload_from_string(data["0003c"][:300])  # stored truncated
    report = import_dataset("openimages", folder, tmp_path / "b", images="gs://open-images-dataset", classes="Cat,car")
    document, _ = read_bucket(tmp_path / "b")
    assert sorted(document["annotations"]) == ["0001a.jpg"]
    assert (tmp_path / "b" / "0001a.jpg").read_bytes() == data["0001a"]
    assert {(i["item"], i["reason"]) for i in report["skipped"]} == {
        ("0003c", "download failed: truncated or corrupt image (Truncated File Read)"),
        ("0004d", "download failed: cannot download gs://open-images-dataset/validation/0004d.jpg: no such object"),
        ("0007g", "malformed row: validation-annotations-bbox.csv line 10 has a non-numeric coordinate"),
    }


def test_openimages_unknown_class_lists_close_matches(open_images, tmp_path):
    folder, _, server = open_images
    with pytest.raises(UserError, match="^unknown class 'Dgo'; close matches: Dog$"):
        import_dataset("openimages", folder, tmp_path / "b", classes="Cat,Dgo")
    with pytest.raises(UserError, match="needs --classes"):
        import_dataset("openimages", folder, tmp_path / "b")
    assert server.requests == []


def test_openimages_boxes_csv_is_streamed(open_images, tmp_path):
    """A boxes CSV of 100,000 rows (5 MB) is read in well under its size of memory; a late row still counts."""
    import tracemalloc

    folder, data, _ = open_images
    for image_id, content in data.items():
        (tmp_path / "mirror" / "validation").mkdir(parents=True, exist_ok=True)
        (tmp_path / "mirror" / "validation" / f"{image_id}.jpg").write_bytes(content)
    import_dataset("openimages", folder, tmp_path / "warm", images=str(tmp_path / "mirror"), classes="Dog")  # imports
    boxes_csv = folder / "validation-annotations-bbox.csv"
    with open(boxes_csv, "a") as file:
        filler = "".join(f"f{number:07d},xclick,{CAR},1,0.1,0.2,0.1,0.2,0,0,0,0,0\n" for number in range(100_000))
        file.write(filler + "0002b,xclick,/m/01yrx,1,0.25,0.75,0.25,0.75,0,0,0,0,0\n")  # a Cat row, ungrouped
    del filler
    tracemalloc.start()
    try:
        import_dataset("openimages", folder, tmp_path / "b", images=str(tmp_path / "mirror"), classes="Dog,Cat")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert boxes_csv.stat().st_size > 5e6
    # measured 1.1 MB alone (the same with 200,000 rows); reading the rows in would take tens of MB
    assert peak < boxes_csv.stat().st_size / 2, peak
    assert_boxes(read_bucket(tmp_path / "b")[0], "0002b.jpg", [(0, 0, 1, 1, "Dog"), (0.25, 0.25, 0.75, 0.75, "Cat")])


def test_a_classification_bucket_does_not_export_to_coco_instances(tmp_path):
    (tmp_path / "bucket").mkdir()
    (tmp_path / "bucket" / "_annotations.json").write_text(json.dumps(
        {"version": "1.0", "type": "classification", "labels": ["cat"], "annotations": {"a.jpg": [{"label": "cat"}]}}))
    with pytest.raises(UserError, match="is a classification bucket: COCO instances hold boxes, so only "
                                        "localization buckets export to it"):
        export_annotations("coco", tmp_path / "bucket", tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def add_rows(folder, boxes=(), images=(), boxes_text="", images_text=""):
    """Append rows to the open_images fixture's CSVs: boxes (ImageID, LabelName, XMin, XMax, YMin, YMax) and
    image-list rows (ImageID, OriginalURL, OriginalMD5), or raw text."""
    with open(folder / "validation-annotations-bbox.csv", "a", newline="") as file:
        file.write("".join(f"{i},xclick,{label},1,{x},{x2},{y},{y2},0,0,0,0,0\n" for i, label, x, x2, y, y2 in boxes)
                   + boxes_text)
    with open(folder / "validation-images-with-rotation.csv", "a", newline="") as file:
        file.write("".join(f"{i},validation,{url},,CC BY 2.0,,,,1,{md5},,0\n" for i, url, md5 in images) + images_text)


def tree(folder):
    """{relative path: bytes} of every file under FOLDER."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def skipped(report):
    return {issue["item"]: issue["reason"] for issue in report["skipped"]}


UNSAFE_IDS = ["../../escaped", "/tmp/absolute", "sub/dir", "..", "a b", "-", "x" * 65, "c:evil", ""]


def test_openimages_unsafe_image_ids_are_skipped_before_any_download(open_images, tmp_path):
    folder, data, server = open_images
    for number, image_id in enumerate(UNSAFE_IDS):
        server.files[f"/unsafe/{number}.jpg"] = data["0002b"]
    add_rows(folder, boxes=[(image_id, DOG, "0.1", "0.2", "0.1", "0.2") for image_id in UNSAFE_IDS],
             images=[(image_id, server.url(f"/unsafe/{number}.jpg"), "") for number, image_id in enumerate(UNSAFE_IDS)])
    before = tree(tmp_path)
    report = import_dataset("openimages", folder, tmp_path / "out" / "bucket", classes="Dog")
    reason = ("ImageID is not an Open Images id (letters, digits, - and _ only; Open Images' are 16 hex digits): "
              "nothing fetched")
    assert {item: why for item, why in skipped(report).items() if why == reason} == {
        ascii(image_id[:80]): reason for image_id in UNSAFE_IDS}
    assert not [path for path, _ in server.requests if path.startswith("/unsafe/")]
    assert sorted(read_bucket(tmp_path / "out" / "bucket")[0]["annotations"]) == [
        "0001a.jpg", "0002b.jpg", "0008h.jpg"]
    after = tree(tmp_path)
    assert {path: content for path, content in after.items() if not path.startswith("out/bucket/")} == before


def test_openimages_rows_of_an_image_apart_keep_every_box(open_images, tmp_path):
    """Rows of one image that are not together (a file sorted by class, say) all count, whatever comes after."""
    folder, data, _ = open_images
    add_rows(folder, boxes=[("0002b", CAT, "0.25", "0.75", "0.25", "0.75"), ("0003c", DOG, "0.5", "0.6", "0.5", "0.6"),
                            ("0001a", CAT, "0.0", "0.1", "0.0", "0.1")])
    import_dataset("openimages", folder, tmp_path / "b", classes="Dog,Cat")
    document, _ = read_bucket(tmp_path / "b")
    assert_boxes(document, "0001a.jpg", [(0.1, 0.2, 0.5, 0.6, "Dog"), (0.5, 0.25, 0.9, 0.75, "Cat"),
                                         (0.0, 0.0, 0.1, 0.1, "Cat")])
    assert_boxes(document, "0002b.jpg", [(0, 0, 1, 1, "Dog"), (0.25, 0.25, 0.75, 0.75, "Cat")])
    assert_boxes(document, "0003c.jpg", [(0.125, 0.5, 0.375, 0.625, "Cat"), (0.5, 0.5, 0.6, 0.6, "Dog")])


def test_openimages_limit_decides_an_image_when_its_first_rows_end(open_images, tmp_path):
    """--limit takes or leaves an image when its first run of rows ends; a later row joins it only if it was
    taken, so memory holds the taken images' boxes, not all of them."""
    folder, _, _ = open_images
    add_rows(folder, boxes=[("0002b", CAT, "0.25", "0.75", "0.25", "0.75"), ("0005e", CAT, "0.1", "0.2", "0.1", "0.2")])
    report = import_dataset("openimages", folder, tmp_path / "b", classes="Dog,Cat", limit=2)
    document, _ = read_bucket(tmp_path / "b")
    assert sorted(document["annotations"]) == ["0001a.jpg", "0002b.jpg", "0003c.jpg"]
    assert_boxes(document, "0002b.jpg", [(0, 0, 1, 1, "Dog"), (0.25, 0.25, 0.75, 0.75, "Cat")])
    assert report["left_out"] == 4  # 0005e, 0006f, 0008h, 0009i: Dog had 2 images by then


def test_openimages_bom_and_bytes_that_are_not_utf8_are_per_row(open_images, tmp_path):
    """CSVs with a BOM (Excel's "CSV UTF-8") read as without; a row with a byte that is not UTF-8 is passed over."""
    folder, data, server = open_images
    for path in folder.glob("*.csv"):
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    listing = folder / "validation-images-with-rotation.csv"
    listing.write_bytes(listing.read_bytes().replace(b"0001a,validation,", b"0001a,valid\xe9tion,"))  # Latin-1
    with open(folder / "validation-annotations-bbox.csv", "ab") as file:
        file.write(f"0002b\xff,xclick,{DOG},1,0.1,0.2,0.1,0.2,0,0,0,0,0\n".encode("latin-1"))
        file.write(f"0003c,xclick,{CAT},1,0.1,0.2,0.1,0.2,\xe9,0,0,0,0\n".encode("latin-1"))
    report = import_dataset("openimages", folder, tmp_path / "b", classes="Dog,Cat")
    document, _ = read_bucket(tmp_path / "b")
    assert document["labels"] == ["Dog", "Cat"]  # the first class-descriptions row, after the BOM, is read
    assert sorted(document["annotations"]) == ["0002b.jpg", "0003c.jpg", "0008h.jpg"]
    assert_boxes(document, "0003c.jpg", [(0.125, 0.5, 0.375, 0.625, "Cat")])
    reasons = skipped(report)
    assert reasons["validation-images-with-rotation.csv"] == "1 rows passed over: 1 not UTF-8"
    assert reasons["validation-annotations-bbox.csv"] == "2 rows passed over: 2 not UTF-8"
    assert reasons["0001a"] == "no OriginalURL: the image is in no image-list CSV (or pass --images)"


def test_openimages_md5_that_is_not_base64_skips_its_image(open_images, tmp_path):
    folder, data, server = open_images
    add_rows(folder, boxes=[("00aaa", DOG, "0.1", "0.2", "0.1", "0.2"), ("00bbb", DOG, "0.1", "0.2", "0.1", "0.2")],
             images=[("00aaa", server.url("/photos/0002b_o.jpg"), "not*base64!"),
                     ("00bbb", server.url("/photos/0002b_o.jpg"), "AAAA")])  # base64, but 3 bytes
    report = import_dataset("openimages", folder, tmp_path / "b", classes="Dog")
    reasons = skipped(report)
    assert reasons["00aaa"] == "OriginalMD5 'not*base64!' is not the base64 of an MD5: nothing fetched"
    assert reasons["00bbb"] == "OriginalMD5 'AAAA' is not the base64 of an MD5: nothing fetched"
    assert "0002b.jpg" in read_bucket(tmp_path / "b")[0]["annotations"]


def test_openimages_malformed_content_length_skips_its_image(open_images, tmp_path):
    folder, _, server = open_images
    server.faults["/photos/0002b_o.jpg"] = [("length", "12abc")]
    report = import_dataset("openimages", folder, tmp_path / "b", classes="Dog")
    assert skipped(report)["0002b"] == (f"download failed: cannot download {server.url('/photos/0002b_o.jpg')}: "
                                        "the server sent an invalid Content-Length '12abc'")
    assert "0001a.jpg" in read_bucket(tmp_path / "b")[0]["annotations"]


def test_openimages_original_urls_other_than_http_and_gs_are_refused(open_images, tmp_path):
    folder, data, server = open_images
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(data["0002b"])
    urls = {"00aaa": secret.as_uri(), "00bbb": str(secret), "00ccc": "ftp://127.0.0.1/x.jpg",
            "00ddd": "http://[::1/x.jpg", "00eee": "http:///x.jpg"}
    add_rows(folder, boxes=[(image_id, DOG, "0.1", "0.2", "0.1", "0.2") for image_id in urls],
             images=[(image_id, url, "") for image_id, url in urls.items()])
    report = import_dataset("openimages", folder, tmp_path / "b", classes="Dog")
    reasons = skipped(report)
    for image_id in ("00aaa", "00bbb", "00ccc"):
        assert reasons[image_id] == (f"OriginalURL {ascii(urls[image_id])} is not http(s):// or gs://: refused "
                                     "(only those are fetched for an image list)")
    for image_id in ("00ddd", "00eee"):
        assert reasons[image_id] == f"OriginalURL {ascii(urls[image_id])} is not a URL: nothing fetched"
    assert not [image_id for image_id in urls if (tmp_path / "b" / f"{image_id}.jpg").exists()]


def test_openimages_blank_and_malformed_rows_are_counted_once(open_images, tmp_path, capsys):
    folder, _, _ = open_images
    add_rows(folder, boxes_text="\n" * 117 + ",,,,,,,,,,,,\n" + f"0002b,xclick,{DOG},1,0.1\n" * 2
             + f"0002b,xclick,{DOG},1,0.1,0.2,0.1,0.2,0,0,0,0,0,extra\n"
             + f"0002b,xclick,{DOG},1,0.3,0.4,0.3,0.4,0,0,0,0,0,,\n",  # empty trailing fields are fine
             images_text="\r\n\r\n")
    report = import_dataset("openimages", folder, tmp_path / "b", classes="Dog")
    line = "121 rows passed over: 118 blank, 3 with more or fewer fields than the header"
    assert skipped(report)["validation-annotations-bbox.csv"] == line
    assert skipped(report)["validation-images-with-rotation.csv"] == "2 rows passed over: 2 blank"
    assert capsys.readouterr().err.count(line) == 1
    assert_boxes(read_bucket(tmp_path / "b")[0], "0002b.jpg", [(0, 0, 1, 1, "Dog"), (0.3, 0.3, 0.4, 0.4, "Dog")])


def test_openimages_suggestions_match_words_and_parts_of_names(tmp_path):
    folder = tmp_path / "oi"
    folder.mkdir()
    names = ["Ball", "Football", "Tennis ball", "Golf ball", "Rugby ball", "Cricket ball", "Volleyball (Ball)",
             "Sports equipment", "Sports uniform", "Basketball", "Balloon", "Dog", "Bat (Animal)", "Baseball bat"]
    (folder / "class-descriptions-boxable.csv").write_text(  # v6: no header
        "".join(f"/m/{number:04x},{name}\n" for number, name in enumerate(names)))
    (folder / "validation-annotations-bbox.csv").write_text(OI_BOX_HEADER + "\n")
    with pytest.raises(UserError) as raised:
        import_dataset("openimages", folder, tmp_path / "b", classes="sports_Ball")
    assert str(raised.value) == ("unknown class 'sports_Ball'; close matches: Ball, Football, Cricket ball, Golf ball, "
                                 "Rugby ball, Sports equipment, Sports uniform, Tennis ball")
    with pytest.raises(UserError, match="^unknown class 'baseballBat'; close matches: Baseball bat, Basketball, "
                                        "Bat \\(Animal\\)$"):
        import_dataset("openimages", folder, tmp_path / "b", classes="baseballBat")
    with pytest.raises(UserError, match="^unknown class 'Dgo'; close matches: Dog$"):
        import_dataset("openimages", folder, tmp_path / "b", classes="Dgo")
