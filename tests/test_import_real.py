"""`trainer import` on datasets in the shapes other tools write them: Roboflow, Ultralytics, VOCdevkit.

Each tree is generated here as that tool lays it out (small PIL JPEGs), and the
dataset's own train/val split is followed through prepare into the TFRecords.
"""
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image
from test_import import assert_boxes, boxes_of, fast_retries, make_image, read_bucket, voc_xml  # noqa: F401

from trainer.dataset import SPLIT_FILE, ListedSplit
from trainer.errors import UserError
from trainer.datasets.coco import ROBOFLOW_FILE
from trainer.datasets.import_dataset import import_dataset

REPO = Path(__file__).resolve().parent.parent


def shaded_image(path, number, size=(40, 20)):
    """A small JPEG of its own colour: distinct bytes, since prepare keeps copies of one image together."""
    return make_image(path, *size, (20 + 7 * number % 230, 128, 200 - 5 * number % 190))


def split_keys(out_dir):
    """The val keys of OUT_DIR/_split.json, or None when there is none."""
    path = out_dir / SPLIT_FILE
    return json.loads(path.read_text())["val"] if path.exists() else None


def bomb_png(path, width=20000, height=10000):
    """A 100-byte PNG whose header declares WIDTH x HEIGHT (200 Mpx): PIL refuses to open it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = struct.pack(">II", width, height) + data[24:29]  # width, height, then depth, colour, methods
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------- YOLO: Roboflow YOLOv8, Ultralytics

ROBOFLOW_YOLO = {  # split folder -> {image stem: label text}
    "train": {"t1": "0 0.5 0.5 0.5 0.5\n", "t2": "1 0.25 0.25 0.5 0.5\n", "t3": ""},
    "valid": {"v1": "1 0.5 0.5 1 1\n", "v2": "0 0.5 0.5 0.2 0.2\n"},
    "test": {"x1": "0 0.75 0.5 0.5 1\n"},
}


def roboflow_yolo(root, names="names: ['cat', 'dog']\n"):
    """A Roboflow YOLOv8 export: data.yaml in the root beside train/ valid/ test/, each images/ + labels/."""
    for number, (split, stem, text) in enumerate(
            (split, stem, text) for split, files in ROBOFLOW_YOLO.items() for stem, text in files.items()):
        shaded_image(root / split / "images" / f"{stem}.jpg", number)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        (root / split / "labels" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 2\n" + names +
        "\nroboflow:\n  workspace: demo\n  project: pets\n  version: 1\n  license: CC BY 4.0\n"
        "  url: https://universe.roboflow.com/demo/pets/dataset/1\n")
    return root / "data.yaml"


@pytest.mark.parametrize("names", ["names: ['cat', 'dog']\n", "names:\n  0: cat\n  1: dog\n",
                                   "names:\n  - cat\n  - dog\n"])
def test_roboflow_yolov8_export_imports_with_its_split(tmp_path, names, capsys):
    source = roboflow_yolo(tmp_path / "pets", names)
    report = import_dataset("yolo", source, tmp_path / "bucket")
    document, _ = read_bucket(tmp_path / "bucket")
    assert sorted(document["annotations"]) == [
        "test/images/x1.jpg", "train/images/t1.jpg", "train/images/t2.jpg", "train/images/t3.jpg",
        "valid/images/v1.jpg", "valid/images/v2.jpg"]
    assert document["labels"] == ["cat", "dog"]
    assert_boxes(document, "train/images/t1.jpg", [(0.25, 0.25, 0.75, 0.75, "cat")])
    assert_boxes(document, "test/images/x1.jpg", [(0.5, 0.0, 1.0, 1.0, "cat")])
    assert (report["skipped"], report["repaired"]) == ([], [])
    assert split_keys(tmp_path / "bucket") == ["test/images/x1.jpg", "valid/images/v1.jpg", "valid/images/v2.jpg"]
    assert report["split"] == {"train": 3, "val": 3}
    assert "; the dataset's split kept in _split.json: 3 train, 3 val; see " in capsys.readouterr().err


def test_ultralytics_yaml_with_path_and_dict_names_keeps_its_split(tmp_path):
    root = tmp_path / "datasets" / "shapes"
    for number, name in enumerate(("train/a", "train/b", "val/c")):
        shaded_image(root / "images" / f"{name}.jpg", number)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "val" / "c.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (tmp_path / "shapes.yaml").write_text("path: datasets/shapes\ntrain: images/train\nval: images/val\n"
                                          "names:\n  0: a\n  1: b\n")
    import_dataset("yolo", tmp_path / "shapes.yaml", tmp_path / "bucket")
    document, _ = read_bucket(tmp_path / "bucket")
    assert sorted(document["annotations"]) == ["images/train/a.jpg", "images/train/b.jpg", "images/val/c.jpg"]
    assert document["labels"] == ["b"]
    assert split_keys(tmp_path / "bucket") == ["images/val/c.jpg"]


def test_yolo_folder_outside_the_yaml_folder_is_imported_as_ultralytics_does(tmp_path):
    """An absolute `train:` elsewhere: Ultralytics joins it as is; keys are relative to the folder holding both."""
    shaded_image(tmp_path / "elsewhere" / "images" / "a.jpg", 1)
    (tmp_path / "elsewhere" / "labels").mkdir()
    (tmp_path / "elsewhere" / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    shaded_image(tmp_path / "project" / "val" / "images" / "b.jpg", 2)
    (tmp_path / "project" / "data.yaml").write_text(
        f"train: {tmp_path / 'elsewhere' / 'images'}\nval: val/images\nnames: [cat]\n")
    import_dataset("yolo", tmp_path / "project" / "data.yaml", tmp_path / "bucket")
    document, _ = read_bucket(tmp_path / "bucket")
    assert sorted(document["annotations"]) == ["elsewhere/images/a.jpg", "project/val/images/b.jpg"]
    assert_boxes(document, "elsewhere/images/a.jpg", [(0.25, 0.25, 0.75, 0.75, "cat")])
    assert split_keys(tmp_path / "bucket") == ["project/val/images/b.jpg"]


@pytest.mark.parametrize("yaml_text, message", [
    ("train: images\nnames:\n  cat: 0\n  dog: 1\n",
     r"'names' maps names to ids \('cat': 0\); YOLO's map is id to name \(0: 'cat'\), or a list in id order$"),
    ("train: images\nnames:\n  0: cat\n  2: dog\n", r"a 2-class 'names' needs ids 0-1, not 0-2$"),
    ("train: images\nnc: 3\nnames: [cat, dog]\n", r"'names' has 2 classes and 'nc' says 3: they must match$"),
    ("train: images\nnames: []\n", r"has no 'names' list of classes$"),
    ("train: 7\nnames: [cat]\n", r"train must be a folder or a list of folders, not 7$"),
    ("train: images\nval: nowhere\nnames: [cat]\npath: [1]\n", r"'path' must be a folder, not \[1\]$"),
    ("train: ../nowhere/images\nnames: [cat]\n", r"^no image folder found for .*: missing folder: .*nowhere/images "
                                                 r"does not exist$"),
])
def test_yolo_bad_yaml_is_one_line(tmp_path, yaml_text, message):
    shaded_image(tmp_path / "images" / "a.jpg", 0)
    (tmp_path / "data.yaml").write_text(yaml_text)
    with pytest.raises(UserError, match=message):
        import_dataset("yolo", tmp_path / "data.yaml", tmp_path / "bucket")
    assert not (tmp_path / "bucket" / "_annotations.json").exists()


def test_yolo_nc_without_names_gives_class_numbers(tmp_path):
    shaded_image(tmp_path / "images" / "a.jpg", 0)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (tmp_path / "data.yaml").write_text("train: images\nval: images\nnc: 2\n")
    import_dataset("yolo", tmp_path / "data.yaml", tmp_path / "bucket")
    document, report = read_bucket(tmp_path / "bucket")
    assert list(document["annotations"]) == ["images/a.jpg"] and document["labels"] == ["class_1"]
    assert split_keys(tmp_path / "bucket") is None and report["split"] is None  # train and val are one folder


# ---------------------------------------------------------------- COCO: Roboflow COCO

def roboflow_coco(root):
    """A Roboflow COCO export: train/ valid/ test/, each with its images and _annotations.coco.json.

    Category 0 is the supercategory, used by no box; one export writes bbox numbers as strings.
    """
    categories = [{"id": 0, "name": "pets", "supercategory": "none"},
                  {"id": 1, "name": "cat", "supercategory": "pets"}, {"id": 2, "name": "dog", "supercategory": "pets"}]
    splits = {
        "train": [("t1_jpg.rf.0a1b.jpg", (1, [1150, 436, "996.0000", "1170.0000"])),
                  ("t2_jpg.rf.2c3d.jpg", (2, ["0", "0", "1000", "800.5"]))],
        "valid": [("v1_jpg.rf.4e5f.jpg", (2, [100, 200, 300, 400]))],
        "test": [("x1_jpg.rf.6a7b.jpg", (1, [0, 0, 2000, 1600]))],
    }
    number = 0
    for split, images in splits.items():
        document = {"info": {"year": "2024", "version": "1", "description": "Exported from roboflow.com"},
                    "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
                    "categories": categories, "images": [], "annotations": []}
        for image_id, (name, (category, bbox)) in enumerate(images):
            shaded_image(root / split / name, number, (2400, 1800))
            number += 1
            document["images"].append({"id": image_id, "license": 1, "file_name": name, "height": 1800,
                                       "width": 2400, "date_captured": "2024-01-01T00:00:00+00:00"})
            document["annotations"].append({"id": image_id, "image_id": image_id, "category_id": category,
                                            "bbox": bbox, "area": 1, "segmentation": [], "iscrowd": 0})
        (root / split / "_annotations.coco.json").write_text(json.dumps(document))
    (root / "README.roboflow.txt").write_text("exported from roboflow\n")
    return root


def test_roboflow_coco_export_with_string_numbers_imports_with_its_split(tmp_path):
    report = import_dataset("coco", roboflow_coco(tmp_path / "export"), tmp_path / "bucket")
    document, _ = read_bucket(tmp_path / "bucket")
    assert sorted(document["annotations"]) == ["test/x1_jpg.rf.6a7b.jpg", "train/t1_jpg.rf.0a1b.jpg",
                                               "train/t2_jpg.rf.2c3d.jpg", "valid/v1_jpg.rf.4e5f.jpg"]
    assert document["labels"] == ["cat", "dog"]  # the supercategory names no box
    assert_boxes(document, "train/t1_jpg.rf.0a1b.jpg", [(1150 / 2400, 436 / 1800, 2146 / 2400, 1606 / 1800, "cat")])
    assert_boxes(document, "train/t2_jpg.rf.2c3d.jpg", [(0, 0, 1000 / 2400, 800.5 / 1800, "dog")])
    assert report["skipped"] == [] and report["repaired"] == []
    assert split_keys(tmp_path / "bucket") == ["test/x1_jpg.rf.6a7b.jpg", "valid/v1_jpg.rf.4e5f.jpg"]
    single = import_dataset("coco", tmp_path / "export" / "valid" / "_annotations.coco.json", tmp_path / "one")
    assert (single["images"], single["split"]) == (1, None)
    assert list(read_bucket(tmp_path / "one")[0]["annotations"]) == ["v1_jpg.rf.4e5f.jpg"]


def test_roboflow_coco_split_folder_still_refuses_unsafe_paths_unopened(tmp_path):
    root = roboflow_coco(tmp_path / "export")
    outside = shaded_image(tmp_path / "outside.jpg", 9, (2400, 1800))
    document = json.loads((root / "valid" / ROBOFLOW_FILE).read_text())
    document["images"] += [{"id": 7, "file_name": str(outside), "width": 2400, "height": 1800},
                           {"id": 8, "file_name": "../train/t1_jpg.rf.0a1b.jpg", "width": 2400, "height": 1800}]
    (root / "valid" / ROBOFLOW_FILE).write_text(json.dumps(document))
    report = import_dataset("coco", root, tmp_path / "bucket")
    assert report["images"] == 4
    assert [(i["item"], i["reason"]) for i in report["skipped"]] == [
        (f"image valid/7 ({outside})", f"unsafe path {str(outside)!r}: absolute or outside the images folder, not opened"),
        ("image valid/8 (../train/t1_jpg.rf.0a1b.jpg)", "unsafe path '../train/t1_jpg.rf.0a1b.jpg': absolute or "
                                                        "outside the images folder, not opened")]


def test_coco_strings_for_sizes_and_ids_and_bad_values_per_image(tmp_path):
    for number, name in enumerate("abcdef"):
        shaded_image(tmp_path / f"{name}.jpg", number, (64, 48))
    document = {
        "categories": [{"id": "1", "name": "cat"}],
        "images": [{"id": "1", "file_name": "a.jpg", "width": "64", "height": "48.0"},
                   {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
                   {"id": [3], "file_name": "c.jpg", "width": 64, "height": 48},
                   {"id": 4, "file_name": "d.jpg", "width": 64, "height": 48},
                   {"id": 5, "file_name": "e.jpg", "width": "wide", "height": 48},
                   {"id": 6, "file_name": "f.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": ["6.4", "4.8", "32", "24"]},
                        {"id": 2, "image_id": "2", "category_id": 1, "bbox": [1, 1, "x", 2]},
                        {"id": 3, "image_id": 4, "category_id": 1, "bbox": [1, 1, "NaN", 2]},
                        {"id": 4, "image_id": 4.0, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": "1"},
                        {"id": 5, "image_id": {"x": 1}, "category_id": 1, "bbox": [1, 1, 2, 2]},
                        {"id": 6, "image_id": 6, "category_id": 1, "bbox": [0, 0, 32, 24]}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(document))
    report = import_dataset("coco", tmp_path / "instances.json", tmp_path / "bucket")
    result, _ = read_bucket(tmp_path / "bucket")
    assert sorted(result["annotations"]) == ["a.jpg", "f.jpg"]
    assert_boxes(result, "a.jpg", [(0.1, 0.1, 0.6, 0.6, "cat")])
    assert_boxes(result, "f.jpg", [(0, 0, 0.5, 0.5, "cat")])  # no declared size: the image's own
    assert [(i["item"], i["reason"]) for i in report["skipped"]] == [
        ("images[2]", "malformed image entry: needs an integer id and a file_name"),
        ("annotations[4]", "annotation of no listed image (image_id missing or unknown)"),
        ("image 2 (b.jpg)", "malformed box: annotation 2 has bbox [1, 1, 'x', 2], not [x, y, width, height]"),
        ("image 4 (d.jpg)", "malformed box: annotation 3 has bbox [1, 1, 'NaN', 2], not [x, y, width, height]"),
        ("image 5 (e.jpg)", "wrong size: the COCO file says widex48, the image is 64x48; boxes would land off "
                            "their objects"),
    ]
    assert [i["reason"] for i in report["repaired"]] == ["crowd region dropped: annotation 4 is a crowd (iscrowd 1)"]


def test_coco_folder_without_coco_files_is_one_line(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match=r"^no COCO file in .*: it needs split folders \(train/, valid/, test/\) "
                                        r"each with _annotations.coco.json, or pass the instances JSON itself$"):
        import_dataset("coco", tmp_path, tmp_path / "bucket")


# ---------------------------------------------------------------- VOC: VOCdevkit, images/ + annotations/

VOC_IMAGES = {"000001": "train", "000002": "train", "000003": "val", "000004": "test", "000005": None}


def vocdevkit(root):
    """VOCdevkit/VOC2007/{Annotations,JPEGImages,ImageSets/Main} as VOC's tarballs unpack."""
    voc = root / "VOCdevkit" / "VOC2007"
    for number, (stem, _) in enumerate(VOC_IMAGES.items()):
        shaded_image(voc / "JPEGImages" / f"{stem}.jpg", number, (100, 50))
        (voc / "Annotations").mkdir(parents=True, exist_ok=True)
        (voc / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", [("dog", 10, 5, 60, 45)]))
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    lists = {"train": ["000001", "000002"], "val": ["000003"], "test": ["000004"]}
    lists["trainval"] = lists["train"] + lists["val"]
    for name, stems in lists.items():
        (main / f"{name}.txt").write_text("".join(f"{stem}\n" for stem in stems))
    (main / "dog_train.txt").write_text("000001  1\n000002 -1\n")  # per-class lists are not split lists
    return voc


@pytest.mark.parametrize("where", ["VOCdevkit", "VOCdevkit/VOC2007", "VOCdevkit/VOC2007/Annotations"])
def test_vocdevkit_imports_from_any_of_its_folders_with_its_split(tmp_path, where):
    vocdevkit(tmp_path)
    report = import_dataset("voc", tmp_path / where, tmp_path / "bucket")
    document, _ = read_bucket(tmp_path / "bucket")
    assert sorted(document["annotations"]) == [f"{stem}.jpg" for stem in VOC_IMAGES]
    assert boxes_of(document, "000003.jpg") == [(0.1, 0.1, 0.6, 0.9, "dog")]
    assert report["skipped"] == [] and report["repaired"] == []
    assert split_keys(tmp_path / "bucket") == ["000003.jpg", "000004.jpg"]  # 000005 is in no list: train


def test_voc_images_and_annotations_side_by_side(tmp_path):
    for number, stem in enumerate(("a", "b")):
        shaded_image(tmp_path / "data" / "images" / f"{stem}.jpg", number, (100, 50))
        (tmp_path / "data" / "annotations").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", [("cat", 0, 0, 50, 25)]))
    for where in ("data/annotations", "data"):
        report = import_dataset("voc", tmp_path / where, tmp_path / "bucket")
        assert (report["images"], report["skipped"], report["split"]) == (2, [], None)
        assert sorted(read_bucket(tmp_path / "bucket")[0]["annotations"]) == ["a.jpg", "b.jpg"]


# ---------------------------------------------------------------- decompression bombs, empty imports

def test_a_decompression_bomb_is_skipped_in_one_line(tmp_path):
    bomb = bomb_png(tmp_path / "coco" / "bomb.png")
    assert bomb.stat().st_size < 100
    shaded_image(tmp_path / "coco" / "ok.jpg", 0, (64, 48))
    (tmp_path / "coco" / "instances.json").write_text(json.dumps({
        "categories": [{"id": 1, "name": "cat"}],
        "images": [{"id": 1, "file_name": "bomb.png", "width": 20000, "height": 10000},
                   {"id": 2, "file_name": "ok.jpg", "width": 64, "height": 48}], "annotations": []}))
    report = import_dataset("coco", tmp_path / "coco" / "instances.json", tmp_path / "b1")
    assert report["images"] == 1
    assert [(i["item"], i["reason"].split(":")[0]) for i in report["skipped"]] == [
        ("image 1 (bomb.png)", "image too large")]
    assert "200000000 pixels" in report["skipped"][0]["reason"]

    bomb_png(tmp_path / "voc" / "JPEGImages" / "bomb.png")
    shaded_image(tmp_path / "voc" / "JPEGImages" / "ok.jpg", 0, (100, 50))
    (tmp_path / "voc" / "Annotations").mkdir()
    (tmp_path / "voc" / "Annotations" / "bomb.xml").write_text(voc_xml("bomb.png", [], (20000, 10000)))
    (tmp_path / "voc" / "Annotations" / "ok.xml").write_text(voc_xml("ok.jpg", []))
    report = import_dataset("voc", tmp_path / "voc" / "Annotations", tmp_path / "b2")
    assert report["images"] == 1
    assert [(i["item"], i["reason"].split(":")[0]) for i in report["skipped"]] == [("bomb.xml", "image too large")]


def test_an_import_of_no_image_fails_in_one_line(tmp_path):
    (tmp_path / "instances.json").write_text(json.dumps({
        "categories": [{"id": 1, "name": "cat"}], "images": [{"id": 1, "file_name": "gone.jpg"}]}))
    with pytest.raises(UserError, match=r"^no image imported from .*instances.json: all 1 entry skipped \(first: "
                                        r"image 1 \(gone.jpg\): missing image: file not found\); all listed in "
                                        r".*import_report.json$"):
        import_dataset("coco", tmp_path / "instances.json", tmp_path / "b1")
    assert not (tmp_path / "b1" / "_annotations.json").exists()
    assert json.loads((tmp_path / "b1" / "import_report.json").read_text())["images"] == 0

    (tmp_path / "empty.json").write_text(json.dumps({"categories": [], "images": []}))
    with pytest.raises(UserError, match=r"^no image imported from .*empty.json: it lists no image$"):
        import_dataset("coco", tmp_path / "empty.json", tmp_path / "b2")

    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "a.xml").write_text(voc_xml("a.jpg", []))
    with pytest.raises(UserError, match=r"^no image imported from .*voc: all 1 entry skipped \(first: a.xml: "
                                        r"missing image: neither 'a.jpg' nor a.\* is in .*voc\)"):
        import_dataset("voc", tmp_path / "voc", tmp_path / "b3")

    (tmp_path / "yolo" / "images").mkdir(parents=True)
    (tmp_path / "yolo" / "data.yaml").write_text("train: images\nnames: [cat]\n")
    with pytest.raises(UserError, match=r"^no image imported from .*data.yaml: it lists no image$"):
        import_dataset("yolo", tmp_path / "yolo" / "data.yaml", tmp_path / "b4")

    shaded_image(tmp_path / "yolo" / "images" / "a.jpg", 0)
    with pytest.raises(UserError, match=r"^no image imported from .*data.yaml: --classes/--limit left out all 1$"):
        import_dataset("yolo", tmp_path / "yolo" / "data.yaml", tmp_path / "b5", classes="cat")


def test_an_openimages_import_of_no_image_fails(tmp_path, fast_retries):
    from test_import import CAT, OI_BOX_HEADER

    (tmp_path / "oi").mkdir()
    (tmp_path / "oi" / "oidv7-class-descriptions-boxable.csv").write_text(f"LabelName,DisplayName\n{CAT},Cat\n")
    (tmp_path / "oi" / "validation-annotations-bbox.csv").write_text(
        OI_BOX_HEADER + f"\n0001a,xclick,{CAT},1,0.1,0.5,0.2,0.6,0,0,0,0,0\n")
    (tmp_path / "mirror").mkdir()
    with pytest.raises(UserError, match=r"^no image imported from .*oi: all 1 entry skipped \(first: 0001a: "
                                        r"download failed: "):
        import_dataset("openimages", tmp_path / "oi", tmp_path / "b", images=str(tmp_path / "mirror"), classes="Cat")


def test_cli_import_of_no_image_exits_1_in_one_line(tmp_path):
    (tmp_path / "empty.json").write_text(json.dumps({"categories": [], "images": []}))
    result = subprocess.run([sys.executable, "-m", "trainer", "import", "coco", str(tmp_path / "empty.json"),
                             str(tmp_path / "b")], cwd=REPO, capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (
        1, f"error: no image imported from {tmp_path / 'empty.json'}: it lists no image\n")


# ---------------------------------------------------------------- the dataset's split through prepare

@pytest.mark.parametrize("fmt", ["yolo", "coco", "voc"])
def test_prepare_keeps_the_imported_split(tmp_path, fmt, capsys):
    from test_prepare import read_records

    from trainer.prepare import prepare

    source = {"yolo": lambda: roboflow_yolo(tmp_path / "pets"), "coco": lambda: roboflow_coco(tmp_path / "export"),
              "voc": lambda: vocdevkit(tmp_path) / "Annotations"}[fmt]()
    import_dataset(fmt, source, tmp_path / "bucket")
    val = split_keys(tmp_path / "bucket")
    report = prepare(tmp_path / "bucket", tmp_path / "result", val_fraction=0.5)
    records = read_records(tmp_path / "result", report)
    assert sorted(key for key, record in records.items() if record["split"] == "val") == val
    assert len(records) == len(read_bucket(tmp_path / "bucket")[0]["annotations"])
    assert report["split_from"] == SPLIT_FILE
    assert report["splits"]["val"]["images"] == len(val)
    assert "prepare: train/val split from _split.json (the dataset's own, kept by import)" in capsys.readouterr().err
    (tmp_path / "bucket" / SPLIT_FILE).unlink()  # without it: the content-hash split, and a rerun does the work
    report = prepare(tmp_path / "bucket", tmp_path / "result", val_fraction=0.5)
    assert report["split_from"] == "content hash"


def test_listed_split_keeps_copies_together_and_warns():
    splitter = ListedSplit(["b", "c"], ["a", "b", "c", "d"])
    assert splitter.val_fraction == 0.5
    placed = [splitter.place(digest, key)[0] for digest, key in [("x", "a"), ("x", "b"), ("y", "c"), ("y", "d")]]
    assert placed == ["train", "train", "val", "val"]  # each copy follows the first of its content placed
    (warning,) = splitter.warnings()
    assert (warning["code"], warning["numbers"]) == ("split_copies", {"images": 2, "examples": ["b", "d"]})


@pytest.mark.parametrize("content", ['{"version": 2, "val": []}', '{"val": ["a.jpg"]}', '{"version": 1, "val": [1]}',
                                     "[", '"x"'])
def test_a_malformed_split_file_is_one_line(tmp_path, content):
    from trainer.dataset import read_split_file

    (tmp_path / SPLIT_FILE).write_text(content)
    with pytest.raises(UserError, match=r"_split.json is not a (readable )?split file"):
        read_split_file(tmp_path)
    assert read_split_file(tmp_path / "none") is None
