"""Property-based tests of the Open Images importer: generated CSV folders (BOMs, blank rows, missing and extra
columns, bytes that are not UTF-8, weird ImageIDs and URLs, garbage numbers) against a `--images` folder or a local
HTTP server. Every case must end in a bucket or a one-line UserError, write nothing outside OUT_DIR and change
nothing in the source."""
import base64
import hashlib
import io
import json
import math
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from http_server import FileServer
from trainer import download
from trainer.errors import UserError
from trainer.datasets.import_dataset import import_dataset
from trainer.datasets import openimages
from trainer.datasets.bucket import Issues, PerClassLimit
from trainer.datasets.openimages import IMAGE_ID

BOX_COLUMNS = ["ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsOccluded",
               "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside"]
IMAGE_COLUMNS = ["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL", "Author",
                 "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation"]
VALID_IDS = ["000a1b2c3d4e5f60", "0001a", "F00D_ok-1"]  # the mirror and the server have the first two
WEIRD_IDS = ["../../escaped", "../escaped", "/tmp/abs", "..", ".", "a/b", "a\\b", "", " 0001a", "x" * 70, "c:x",
             "\u00e9t\u00e9", "-", "id\x00", "0001a\n"]
LABELS = ["/m/dog", "/m/cat", "/m/other", "", "dog", " /m/dog", "/m/dog\ufeff"]
NUMBERS = ["0", "1", "0.5", "0.25", "abc", "", "1e400", "-1", " 0.2 ", "0x10", "\u00bd", "nan", "inf", "1,5", '"0.3"']
OUTCOMES = Counter()


def jpeg(seed, size=(24, 16)):
    buffer = io.BytesIO()
    Image.effect_noise(size, 30 + seed).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


IMAGES = {image_id: jpeg(number) for number, image_id in enumerate(VALID_IDS[:2])}
SECRET = jpeg(9, (20, 20))  # outside SOURCE and OUT_DIR: a case that imports it read a file it must not


@pytest.fixture(scope="module", autouse=True)
def fast_retries():
    saved = download.RETRY_BASE_SECONDS
    download.RETRY_BASE_SECONDS = 0.0001
    yield
    download.RETRY_BASE_SECONDS = saved
    print(f"\nOpen Images fuzz outcomes: {dict(sorted(OUTCOMES.items()))}")


@pytest.fixture(scope="module")
def server():
    with FileServer() as file_server:
        for number, image_id in enumerate(VALID_IDS[:2]):
            file_server.files[f"/img/{number}.jpg"] = IMAGES[image_id]
        file_server.files["/img/truncated.jpg"] = IMAGES[VALID_IDS[0]][:200]
        yield file_server


text = st.text(st.characters(codec="utf-8"), max_size=12)


def mostly(usual, unusual, odds=3):
    """USUAL about ODDS times in ODDS + 1, else UNUSUAL (Hypothesis favours small integers: 0 is USUAL)."""
    return st.integers(0, odds).flatmap(lambda number: unusual if number == odds else usual)


image_ids = mostly(st.sampled_from(VALID_IDS), st.one_of(st.sampled_from(WEIRD_IDS), text))
labels = mostly(st.sampled_from(LABELS[:2]), st.sampled_from(LABELS[2:]))
numbers = mostly(st.floats(0, 1).map(str), st.one_of(st.sampled_from(NUMBERS), st.floats().map(repr), text), 12)
# How a row is written: as is, blank, a field short, a field over, a byte that is not UTF-8, CRLF.
shapes = mostly(st.just("ok"), st.sampled_from(["blank", "short", "long", "latin-1", "crlf", "spaces"]))


def encode(fields, shape):
    """One CSV line of FIELDS (joined raw: a comma or quote in a field makes its own CSV) in SHAPE."""
    if shape == "blank":
        return b"\n"
    if shape == "spaces":
        return b" , ,\n"
    fields = list(fields)
    if shape == "short":
        fields = fields[:-1]
    elif shape == "long":
        fields.append("extra")
    line = ",".join(fields).encode("utf-8", "surrogatepass")
    if shape == "latin-1":
        line = line.replace(b",", b",\xe9", 1)
    return line + (b"\r\n" if shape == "crlf" else b"\n")


@st.composite
def box_csv(draw):
    """(file name, bytes) of a boxes CSV: some header variant, then rows."""
    header = list(BOX_COLUMNS)
    variant = draw(mostly(st.just("v7"), st.sampled_from(["reordered", "extra column", "no YMax", "empty"])))
    if variant == "reordered":
        header = header[2:] + header[:2]
    elif variant == "extra column":
        header.append("XClick1X")
    elif variant == "no YMax":
        header.remove("YMax")
    if variant == "empty":
        return "validation-annotations-bbox.csv", b""
    lines = [encode(header, "ok")]
    for _ in range(draw(st.integers(0, 8))):
        values = {"ImageID": draw(image_ids), "Source": "xclick", "LabelName": draw(labels),
                  "Confidence": "1", "XMin": draw(numbers), "XMax": draw(numbers), "YMin": draw(numbers),
                  "YMax": draw(numbers)}
        lines.append(encode([values.get(column, "0") for column in header], draw(shapes)))
    name = draw(mostly(st.just("validation-annotations-bbox.csv"), st.just("oidv6-annotations-bbox.csv")))
    return name, b"".join(lines)


@st.composite
def class_csv(draw):
    rows = [["/m/dog", "Dog"], ["/m/cat", "Cat"]]
    if draw(st.booleans()):
        rows.insert(0, ["LabelName", "DisplayName"])
    rows += draw(st.lists(st.lists(text, min_size=1, max_size=3), max_size=2))
    lines = [encode(row, draw(shapes)) for row in rows]
    return b"".join(lines)


@st.composite
def image_list_csv(draw, server_url, secret_uri):
    """An image list naming the mirror's images, the server's, local files and garbage as OriginalURL."""
    lines = [encode(IMAGE_COLUMNS, "ok")]
    for image_id in VALID_IDS + draw(st.lists(image_ids, max_size=4)):
        number = draw(mostly(st.sampled_from(["0", "1"]), st.sampled_from(["truncated", "missing"])))
        url = draw(mostly(st.just(server_url(f"/img/{number}.jpg")), st.one_of(st.sampled_from(
            [secret_uri, secret_uri.removeprefix("file://"), "ftp://127.0.0.1/x.jpg", "http:///x", "http://[::1/x",
             "gs://", "", server_url("/img/0.jpg") + " x"]), text)))
        content = IMAGES[VALID_IDS[int(number)]] if number in ("0", "1") else b"?"
        md5 = draw(mostly(st.just(base64.b64encode(hashlib.md5(content).digest()).decode()),
                             st.one_of(st.sampled_from(["", "AAAA", "not*base64!", "=" * 24]), text)))
        values = {"ImageID": image_id, "Subset": "validation", "OriginalURL": url, "OriginalMD5": md5,
                  "OriginalSize": "1", "Title": draw(text)}
        lines.append(encode([values.get(column, "") for column in IMAGE_COLUMNS], draw(shapes)))
    return b"".join(lines)


def tree(folder):
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def run_case(root, images, classes, limit):
    """Import ROOT/src into ROOT/a/b/out; check the outcome and that only OUT_DIR changed."""
    out = root / "a" / "b" / "out"
    before = tree(root)
    try:
        report = import_dataset("openimages", root / "src", out, images=images, classes=classes, limit=limit)
    except UserError as err:
        assert "\n" not in str(err) and str(err), repr(str(err))
        OUTCOMES["one-line UserError"] += 1
    else:
        OUTCOMES["bucket with images" if report["images"] else "empty bucket"] += 1
        document = json.loads((out / "_annotations.json").read_text())
        assert json.loads((out / "import_report.json").read_text()) == report
        for key in document["annotations"]:
            assert key.endswith(".jpg") and IMAGE_ID.fullmatch(key.removesuffix(".jpg")), key
            assert (out / key).read_bytes() in IMAGES.values()
        for issue in report["skipped"] + report["repaired"]:
            assert "\n" not in issue["item"] + issue["reason"], issue
        left = {path.name for path in out.iterdir()} - set(document["annotations"])
        assert left <= {"_annotations.json", "import_report.json"} | {f"{i}.jpg.part" for i in VALID_IDS}, left
    assert {path: data for path, data in tree(root).items() if not path.startswith("a/b/out/")} == before


def write_source(root, boxes, classes_bytes, bom):
    """ROOT/src with the CSVs, ROOT/mirror in Open Images' bucket layout, and the secret files a case must not read."""
    (root / "src").mkdir()
    prefix = b"\xef\xbb\xbf" if bom else b""
    (root / "src" / "oidv7-class-descriptions-boxable.csv").write_bytes(prefix + classes_bytes)
    (root / "src" / boxes[0]).write_bytes(prefix + boxes[1])
    for image_id, content in IMAGES.items():
        (root / "mirror" / "validation").mkdir(parents=True, exist_ok=True)
        (root / "mirror" / "validation" / f"{image_id}.jpg").write_bytes(content)
    for name in ("escaped.jpg", "a/escaped.jpg", "secret.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(SECRET)


@settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(boxes=box_csv(), classes_bytes=class_csv(), bom=st.booleans(),
       classes=mostly(st.sampled_from(["Dog", "Dog,Cat", "cat"]), st.just("Dgo")),
       limit=st.sampled_from([None, None, 1, 2]))
def test_fuzzed_csvs_against_an_images_folder(boxes, classes_bytes, bom, classes, limit):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_source(root, boxes, classes_bytes, bom)
        run_case(root, str(root / "mirror"), classes, limit)


@settings(derandomize=True, max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), boxes=box_csv(), bom=st.booleans(), limit=st.sampled_from([None, 1]))
def test_fuzzed_csvs_against_original_urls_on_a_local_server(server, data, boxes, bom, limit):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_source(root, boxes, b"/m/dog,Dog\n/m/cat,Cat\n", bom)
        listing = data.draw(image_list_csv(server.url, (root / "secret.jpg").as_uri()))
        (root / "src" / "validation-images-with-rotation.csv").write_bytes((b"\xef\xbb\xbf" if bom else b"") + listing)
        run_case(root, None, "Dog,Cat", limit)


WANTED = {"/m/dog": "Dog", "/m/cat": "Cat"}


@pytest.fixture(scope="module")
def scratch_csv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv")
    (folder / "class-descriptions-boxable.csv").write_text("/m/dog,Dog\n/m/cat,Cat\n")
    return folder / "validation-annotations-bbox.csv"


@settings(derandomize=True, max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(boxes=box_csv(), bom=st.booleans())
def test_fuzzed_boxes_csvs_keep_safe_ids_and_finite_boxes_only(scratch_csv, boxes, bom):
    scratch_csv.write_bytes((b"\xef\xbb\xbf" if bom else b"") + boxes[1])
    issues = Issues()
    try:
        tables = openimages._find_tables(scratch_csv.parent)  # as the importer reads them
        found, subsets, _ = openimages._read_boxes(tables["boxes"], WANTED, PerClassLimit(None), issues)
    except UserError as err:
        assert "\n" not in str(err), str(err)
        OUTCOMES["boxes CSV: one-line UserError"] += 1
        return
    OUTCOMES["boxes CSV: read"] += 1
    assert set(subsets) == set(found) and set(subsets.values()) <= {"validation"}
    for image_id, image_boxes in found.items():
        assert IMAGE_ID.fullmatch(image_id) and image_boxes, image_id
        for box in image_boxes:
            assert all(math.isfinite(value) for value in box[:4]) and box[4] in WANTED.values(), box
    for issue in issues:
        assert "\n" not in issue["item"] + issue["reason"] and issue["item"] not in found, issue


rows_of_two_classes = st.lists(st.tuples(st.sampled_from(["0a", "1b", "2c", "3d"]),
                                         st.sampled_from(["/m/dog", "/m/cat", "/m/other"]),
                                         *[st.floats(0, 1)] * 4), max_size=12)


@settings(derandomize=True, max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), rows=rows_of_two_classes)
def test_the_boxes_read_do_not_depend_on_the_row_order(scratch_csv, data, rows):
    """Every wanted box of an image counts, however its rows are spread over the file."""
    shuffled = data.draw(st.permutations(rows))
    scratch_csv.write_text(",".join(BOX_COLUMNS) + "\n" + "".join(
        f"{i},xclick,{label},1,{x!r},{x2!r},{y!r},{y2!r},0,0,0,0,0\n" for i, label, x, x2, y, y2 in shuffled))
    found, _, left_out = openimages._read_boxes([scratch_csv], WANTED, PerClassLimit(None), Issues())
    expected = {}
    for image_id, label, x, x2, y, y2 in rows:
        if label in WANTED:
            expected.setdefault(image_id, []).append((x, y, x2, y2, WANTED[label]))
    assert {key: sorted(value) for key, value in found.items()} == {
        key: sorted(value) for key, value in expected.items()}
    assert left_out == 0
