"""Property-based tests of the COCO, VOC and YOLO importers on generated, often hostile, inputs.

Every case must end in a bucket that prepare's own parser accepts unchanged, or in
one line of UserError; nothing may be written outside OUT_DIR, and the source
tree must stay byte-identical.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from trainer.annotations import is_safe_key, parse_annotations
from trainer.errors import UserError
from trainer.datasets.import_dataset import import_dataset

def FUZZ_N(examples):  # noqa: N802 (a decorator, named as settings are)
    return settings(derandomize=True, max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
POOL = {"a.jpg": (40, 20), "b.png": (30, 30), "写真 $'q\".jpg": (20, 40)}  # the images a source may name
NAMES = st.sampled_from(["cat", "dog", "猫", "chien $1", "it's \"x\"", " ", "", "\\", "a/b", "\u00e9", "e\u0301"])
NUMBER_TEXT = st.sampled_from(["0", "1", "10", "0.5", "-3", "1e400", "nan", "NaN", "inf", "-inf", "", "abc", " 7 ",
                               "99999999999999999999", "0x10", "1_0", "٣"])
NUMBERS = st.one_of(st.integers(-10, 100), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-10**30, 10**30), NUMBER_TEXT, st.none(), st.booleans(), st.just([1]), st.just({}))
BAIT = "@BAIT@"  # replaced by the absolute path of an image outside the source, which must never be imported
PATHS = st.one_of(st.sampled_from(list(POOL)), st.sampled_from(list(POOL)), st.sampled_from(
    ["../a.jpg", "/etc/passwd", "sub/../a.jpg", "a.jpg/..", "..", ".", "", "missing.jpg", "A.JPG", "a.jpg\0",
     "C:\\a.jpg", "\\\\server\\a.jpg", "images/a.jpg", BAIT, "../bait.jpg", "../../bait.jpg"]), st.text(max_size=12))


def snapshot(root):
    """{relative path: sha256} of every file and folder under ROOT."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def check_import(fmt, make_source, bait=None):
    """Build a source with MAKE_SOURCE(src) in a fresh folder, import it, and check the outcome's contract.

    BAIT: an image put beside the source (as ../bait.jpg) that the import must not reach.
    """
    with tempfile.TemporaryDirectory() as scratch:
        top = Path(scratch)
        src, out = top / "src", top / "out"
        src.mkdir()
        if bait:
            os.link(bait, top / "bait.jpg")
        source = make_source(src)
        before = snapshot(src)
        try:
            report = import_dataset(fmt, source, out)
        except UserError as err:
            assert str(err) and "\n" not in str(err), repr(str(err))
            report = None
        assert snapshot(src) == before, "the source changed"
        written = sorted(p.name for p in top.iterdir())
        assert written == sorted(["src"] + ["out"] * out.exists() + ["bait.jpg"] * bool(bait))
        if bait:
            bait_bytes = Path(bait).read_bytes()
            assert not any(p.is_file() and p.read_bytes() == bait_bytes for p in out.rglob("*")), "reached the bait"
        if report is None:
            assert not (out / "_annotations.json").exists()
            return "error"
        checked = parse_annotations((out / "_annotations.json").read_bytes())
        assert checked.issues == [] and len(checked.images) == report["images"] > 0
        for image in checked.images:
            assert is_safe_key(image.key) and (out / image.key).resolve().is_relative_to(out.resolve())
            assert (out / image.key).is_file()
        split = out / "_split.json"
        if split.exists():
            val = json.loads(split.read_text())["val"]
            assert 0 < len(val) < len(checked.images) and set(val) <= {image.key for image in checked.images}
        return "bucket"


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    for number, (name, size) in enumerate(POOL.items()):
        Image.new("RGB", size, (30 * number, 90, 200)).save(folder / name)
    Image.new("RGB", (40, 20), (250, 0, 0)).save(folder / "bait.jpg")  # a.jpg's size: only its path keeps it out
    return folder


def with_bait(src, text):
    return text.replace(BAIT, str(src.parent / "bait.jpg"))


def put_images(pool, folder, names=POOL):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.link(pool / name, folder / name)


# ---------------------------------------------------------------- COCO

COCO_IMAGE = st.fixed_dictionaries({"id": st.one_of(st.integers(0, 4), NUMBERS), "file_name": PATHS},
                                   optional={"width": st.one_of(st.sampled_from([40, 30, 20, "40", 40.0]), NUMBERS),
                                             "height": st.one_of(st.sampled_from([20, 30, 40, "20"]), NUMBERS)})
COCO_ANNOTATION = st.fixed_dictionaries(
    {"image_id": st.one_of(st.integers(0, 4), NUMBERS),
     "bbox": st.one_of(st.lists(st.one_of(st.integers(0, 40), NUMBERS), min_size=4, max_size=4),
                       st.lists(NUMBERS, max_size=6), NUMBERS)},
    optional={"id": NUMBERS, "category_id": st.one_of(st.integers(0, 3), NUMBERS), "iscrowd": NUMBERS})
COCO_CATEGORY = st.fixed_dictionaries({"id": st.one_of(st.integers(0, 3), NUMBERS)},
                                      optional={"name": st.one_of(NAMES, NUMBERS), "supercategory": NAMES})
JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=8)
COCO_USUAL = st.fixed_dictionaries({"images": st.lists(COCO_IMAGE, max_size=5),
                                   "annotations": st.lists(COCO_ANNOTATION, max_size=6),
                                   "categories": st.lists(COCO_CATEGORY, max_size=4)})
COCO_DOCUMENT = st.one_of(
    COCO_USUAL, COCO_USUAL, COCO_USUAL,
    st.fixed_dictionaries({"images": st.lists(st.one_of(COCO_IMAGE, JSON_VALUES), max_size=3),
                           "categories": st.one_of(st.lists(JSON_VALUES, max_size=2), JSON_VALUES)},
                          optional={"annotations": JSON_VALUES}),
    JSON_VALUES)


@FUZZ_N(600)
@given(documents=st.lists(COCO_DOCUMENT, min_size=1, max_size=3), layout=st.sampled_from(["file", "roboflow"]),
       raw=st.one_of(st.none(), st.none(), st.none(), st.binary(max_size=30), st.text(max_size=30)))
def test_coco_fuzz(pool, documents, layout, raw):
    def make_source(src):
        put_images(pool, src / "images")
        if layout == "file":
            text = raw if raw is not None else with_bait(src, json.dumps(documents[0]))  # NaN, Infinity as Python
            (src / "images" / "instances.json").write_bytes(text if isinstance(text, bytes) else text.encode())
            return src / "images" / "instances.json"
        for split, document in zip(("train", "valid", "test"), documents):
            put_images(pool, src / split)
            (src / split / "_annotations.coco.json").write_text(with_bait(src, json.dumps(document)))
        return src

    OUTCOMES["coco"][check_import("coco", make_source, pool / "bait.jpg")] += 1


# ---------------------------------------------------------------- Pascal VOC

def xml_text(value):
    return escape(str(value)) if value is not None else ""


VOC_OBJECT = st.tuples(st.one_of(NAMES, NAMES, st.none()), st.lists(st.one_of(
    st.integers(-5, 50), st.integers(-5, 50), NUMBER_TEXT), min_size=4, max_size=4), st.booleans() | st.just(True))
VOC_SIZE = st.one_of(st.just("right"), st.just("right"), st.tuples(
    st.one_of(st.sampled_from([40, 30, 20]), NUMBER_TEXT), st.one_of(st.sampled_from([20, 30, 40]), NUMBER_TEXT)))
VOC_FILE = st.tuples(st.sampled_from(["a", "b", "写真 $'q\"", "zz"]), st.one_of(st.none(), st.none(), PATHS), VOC_SIZE,
                     st.lists(VOC_OBJECT, max_size=3),
                     st.one_of(st.none(), st.none(), st.none(), st.text(max_size=20)))  # mostly XML; sometimes not
SIZES = {Path(name).stem: size for name, size in POOL.items()}


def voc_document(filename, size, objects, garbage):
    if garbage is not None:
        return garbage  # unparsable, or something else entirely
    parts = "".join(
        f"<object><name>{xml_text(name)}</name><bndbox>"
        + "".join(f"<{corner}>{xml_text(value)}</{corner}>" for corner, value in
                  zip(("xmin", "ymin", "xmax", "ymax"), corners) if keep or corner != "ymax")
        + "</bndbox></object>" for name, corners, keep in objects)
    return (f"<annotation><filename>{xml_text(filename)}</filename><size><width>{xml_text(size[0])}</width>"
            f"<height>{xml_text(size[1])}</height></size>{parts}</annotation>")


@FUZZ_N(600)
@given(files=st.lists(VOC_FILE, min_size=1, max_size=4, unique_by=lambda f: f[0]),
       layout=st.sampled_from(["flat", "vocdevkit", "VOC2007", "Annotations", "side by side"]),
       lists=st.dictionaries(st.sampled_from(["train", "val", "test", "trainval"]),
                             st.lists(st.sampled_from(["a", "b", "zz", "写真 $'q\"", "", "../a"]), max_size=4),
                             max_size=4))
def test_voc_fuzz(pool, files, layout, lists):
    def make_source(src):
        voc = src if layout == "flat" else src / "VOCdevkit" / "VOC2007"
        xml_folder = voc if layout == "flat" else voc / ("annotations" if layout == "side by side" else "Annotations")
        put_images(pool, voc / ("images" if layout == "side by side" else "JPEGImages"))
        xml_folder.mkdir(parents=True, exist_ok=True)
        for stem, filename, size, objects, garbage in files:
            size = SIZES.get(stem, (1, 1)) if size == "right" else size
            (xml_folder / f"{stem}.xml").write_text(with_bait(src, voc_document(filename, size, objects, garbage)))
        for name, stems in lists.items():
            (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
            (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{stem}\n" for stem in stems))
        return {"flat": src, "vocdevkit": src / "VOCdevkit", "VOC2007": voc}.get(layout, xml_folder)

    OUTCOMES["voc"][check_import("voc", make_source, pool / "bait.jpg")] += 1


# ---------------------------------------------------------------- YOLO

FOLDER_ENTRIES = st.sampled_from(["images/train", "images/val", "../train/images", "../valid/images", "train/images",
                                  ".", "", "../../x", "/nonexistent", "images", "missing", "a.txt"])
YAML_NAMES = st.one_of(st.lists(NAMES, max_size=3), st.dictionaries(st.integers(-1, 3), NAMES, max_size=3),
                       st.dictionaries(NAMES, st.integers(0, 3), max_size=3), NUMBERS)
USABLE_YAML = st.fixed_dictionaries(
    {"train": st.sampled_from(["images/train", "../train/images", "train/images"]),
     "val": st.sampled_from(["images/val", "../valid/images", "valid/images", "missing"]),
     "names": st.one_of(st.lists(NAMES, min_size=1, max_size=4),
                        st.lists(NAMES, min_size=1, max_size=4).map(lambda names: dict(enumerate(names))))},
    optional={"path": st.sampled_from([".", ""]), "test": FOLDER_ENTRIES})
LABEL_LINE = st.one_of(
    st.tuples(st.integers(-1, 3), *[st.floats(-0.5, 1.5)] * 4).map(lambda t: " ".join(map(str, t))),
    st.lists(st.one_of(NUMBER_TEXT, st.integers(-2, 4).map(str)), max_size=7).map(" ".join), st.text(max_size=10))


@FUZZ_N(600)
@given(config=st.one_of(USABLE_YAML, USABLE_YAML, st.fixed_dictionaries({}, optional={
           "path": st.one_of(st.sampled_from([".", "..", "", "data"]), NUMBERS), "train": st.one_of(
               FOLDER_ENTRIES, st.lists(FOLDER_ENTRIES, max_size=2), NUMBERS), "val": FOLDER_ENTRIES,
           "validation": FOLDER_ENTRIES, "test": FOLDER_ENTRIES, "names": YAML_NAMES, "nc": NUMBERS})),
       layout=st.sampled_from(["roboflow", "ultralytics"]),
       labels=st.dictionaries(st.sampled_from(list(POOL)), st.lists(LABEL_LINE, max_size=3), max_size=3),
       raw=st.one_of(st.none(), st.none(), st.none(), st.text(max_size=30)))
def test_yolo_fuzz(pool, config, layout, labels, raw):
    def make_source(src):
        folders = ["train/images", "valid/images"] if layout == "roboflow" else ["images/train", "images/val"]
        for folder in folders:
            put_images(pool, src / folder)
            for name, lines in labels.items():
                label = src / folder.replace("images", "labels") / Path(name).with_suffix(".txt")
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text("\n".join(lines) + "\n")
        text = raw if raw is not None else yaml.safe_dump(config, allow_unicode=True)
        (src / "data.yaml").write_text(text)
        return src / "data.yaml"

    OUTCOMES["yolo"][check_import("yolo", make_source)] += 1


OUTCOMES = {fmt: {"bucket": 0, "error": 0} for fmt in ("coco", "voc", "yolo")}


@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_fuzz_reached_both_outcomes(fmt):
    """Runs after the fuzz tests above (file order): the inputs made buckets and errors, not only one of them."""
    if not sum(OUTCOMES[fmt].values()):
        pytest.skip("run with the fuzz tests")
    print(fmt, OUTCOMES[fmt])
    assert OUTCOMES[fmt]["bucket"] > 0 and OUTCOMES[fmt]["error"] > 0, OUTCOMES[fmt]
