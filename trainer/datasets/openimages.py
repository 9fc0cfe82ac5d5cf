"""Open Images (v4 to v7 CSVs) -> a bucket of the chosen classes, images downloaded and verified.

SOURCE is a folder holding Open Images' CSVs, recognised by their columns:
the class descriptions (LabelName, DisplayName; v5/v6 files have no header),
the boxes (`*-annotations-bbox.csv`: ImageID, Source, LabelName, Confidence,
XMin, XMax, YMin, YMax, ...) and, for the default image source, the image list
(`*-images-*with-rotation.csv`: ImageID, Subset, OriginalURL, ..., OriginalSize,
OriginalMD5, ...). The CSVs are read row by row (the training boxes alone are
over 2 GB), keeping only the chosen classes' boxes, keyed by image. A BOM is
dropped; blank rows, rows with more or fewer fields than the header and rows
that are not UTF-8 are passed over and counted, in one line per file.

An ImageID becomes a file name, so only ids of letters, digits, `-` and `_`
(Open Images' own are 16 hex digits) are imported; others are skipped before
anything is fetched. Images come from each image's OriginalURL (http(s):// or
gs:// only: a CSV must not make the importer read local files), checked against
OriginalMD5, or with --images from a copy laid out as Open Images' bucket is
(`gs://open-images-dataset/SUBSET/IMAGEID.jpg`, or the same under an
http(s):// URL or a folder). Downloads run in parallel through
trainer.download (retries, resume on a rerun, a deadline); an image that fails
to download or decode is listed in the report and skipped.
"""
import base64
import binascii
import csv
import hashlib
import math
import re
import sys
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageFile
from tqdm import tqdm

from trainer import download
from trainer.annotations import SKIPPED
from trainer.errors import UserError
from trainer.datasets.bucket import Issues, PerClassLimit, Record, resolve_classes, write_bucket

BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
IMAGE_LIST_COLUMNS = ("ImageID", "OriginalURL")
SUBSET = re.compile(r"(train|validation|test)")
IMAGE_ID = re.compile(r"[0-9A-Za-z_][0-9A-Za-z_-]{0,63}")  # a safe file name; Open Images' are [0-9a-f]{16}
URL_SCHEMES = ("http", "https", "gs")  # what an OriginalURL may be fetched from
DOWNLOAD_WORKERS = 16
BLANK, COLUMNS, NOT_UTF8 = "blank", "with more or fewer fields than the header", "not UTF-8"  # rows passed over


def import_openimages(source, out_dir, images=None, classes=None, limit=None):
    """Write the Open Images boxes of CLASSES (display names, comma-separated) as a bucket in OUT_DIR.

    images: where the images are, laid out as SUBSET/IMAGEID.jpg (gs://, http(s):// or a folder);
    default: each image's OriginalURL. limit: at most this many images per class.
    Returns the import report.
    """
    source, out_dir = Path(source), Path(out_dir)
    if not classes:
        raise UserError("import openimages needs --classes (Open Images has 600 box classes)")
    tables = _find_tables(source)
    names = _read_class_names(tables["classes"])
    chosen = resolve_classes(classes, list(dict.fromkeys(names.values())))
    wanted = {label_name: display for label_name, display in names.items() if display in chosen}
    issues = Issues()
    boxes, subsets, left_out = _read_boxes(tables["boxes"], wanted, PerClassLimit(limit), issues)
    if images:
        if None in subsets.values():
            raise UserError("with --images, each boxes CSV's name must say its subset (train, validation or test), "
                            "as Open Images' own names do")
        urls = {image_id: (f"{images.rstrip('/')}/{subsets[image_id]}/{image_id}.jpg", None) for image_id in boxes}
    else:
        urls = _original_urls(tables.get("images", []), boxes, issues)
    done = _download_all(urls, out_dir, issues)
    records = [Record(f"{image_id}.jpg", out_dir / f"{image_id}.jpg", boxes[image_id], image_id) for image_id in done]
    return write_bucket(out_dir, "openimages", source, chosen, records, issues,
                        left_out=left_out)


def _find_tables(source):
    """{"classes": path, "boxes": [paths], "images": [paths]}: SOURCE's CSVs, told apart by their columns."""
    if not source.is_dir():
        raise UserError(f"no such Open Images folder: {source}")
    tables = {"boxes": [], "images": []}
    for path in sorted(source.glob("*.csv")):
        if not path.is_file():
            continue
        with _open_csv(path) as file:
            try:
                header = _header(csv.reader(file))
            except csv.Error as err:
                raise UserError(f"{path} is not CSV: {err}") from None
        if set(BOX_COLUMNS) <= set(header):
            tables["boxes"].append(path)
        elif set(IMAGE_LIST_COLUMNS) <= set(header):
            tables["images"].append(path)
        elif len(header) == 2 and "class-descriptions" in path.name:
            tables["classes"] = path
    if "classes" not in tables or not tables["boxes"]:
        raise UserError(f"{source} needs Open Images' class-descriptions CSV and at least one *-annotations-bbox.csv")
    return tables


def _open_csv(path):
    """PATH opened for csv: UTF-8, a BOM dropped; bytes that are not UTF-8 read as U+FFFD, which _rows passes over."""
    try:
        return open(path, newline="", encoding="utf-8-sig", errors="replace")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None


def _read_class_names(path):
    """{LabelName: DisplayName} from the class-descriptions CSV, with or without its header row."""
    with _open_csv(path) as file:
        try:
            return {row[0].strip(): row[1].strip() for row in csv.reader(file)
                    if len(row) == 2 and row[0].strip().startswith("/") and row[1].strip() and not _row_problem(row, 2)}
        except csv.Error as err:
            raise UserError(f"{path.name} is not CSV: {err}") from None


def _rows(path, issues):
    """(line number, {column: value}) for each usable row of the CSV at PATH, whose first row names the columns.

    Blank rows, rows with more or fewer fields than the header (empty trailing ones
    aside) and rows that are not UTF-8 are passed over, and counted in one line of ISSUES.
    """
    passed = Counter()
    with _open_csv(path) as file:
        reader = csv.reader(file)
        try:
            header = _header(reader)
            for fields in reader:
                problem = _row_problem(fields, len(header))
                if problem:
                    passed[problem] += 1
                else:
                    yield reader.line_num, dict(zip(header, fields))
        except csv.Error as err:
            raise UserError(f"{path.name} line {reader.line_num} is not CSV: {err}") from None
    if passed:
        counts = ", ".join(f"{passed[why]} {why}" for why in (BLANK, COLUMNS, NOT_UTF8) if passed[why])
        # first, so that the summary on stderr, which prints the first lines only, says it
        issues.insert(0, {"item": path.name, "reason": f"{sum(passed.values())} rows passed over: {counts}",
                          "action": SKIPPED})


def _header(reader):
    """The column names: the first row of READER that is not blank."""
    return next(([name.strip() for name in row] for row in reader if any(field.strip() for field in row)), [])


def _row_problem(fields, columns):
    """Why a CSV row of FIELDS (the header has COLUMNS) is passed over, or None when it is usable."""
    if not any(field.strip() for field in fields):
        return BLANK
    if len(fields) < columns or any(field.strip() for field in fields[columns:]):
        return COLUMNS
    if any("\ufffd" in field for field in fields):
        return NOT_UTF8
    return None


def _read_boxes(paths, wanted, limiter, issues):
    """({ImageID: [(x, y, x2, y2, display name)]}, {ImageID: subset}, images over the limit) of WANTED classes.

    Rows are streamed and only WANTED classes' boxes are kept, keyed by image. An image is
    taken or left out (--limit) when its first run of rows ends (Open Images lists an
    image's rows together); rows of it that come later join it when it was taken.
    """
    taken, subsets, bad = {}, {}, set()  # taken: ImageID -> its boxes, or None when left out

    def decide(image_id, run, subset):
        if image_id is not None and image_id not in bad:
            taken[image_id] = run if limiter.take(box[4] for box in run) else None
            subsets[image_id] = subset

    for path in paths:
        subset = (SUBSET.search(path.name) or [None])[0]
        run_id, run = None, []
        for number, row in _rows(path, issues):
            label, image_id = wanted.get(row["LabelName"].strip()), row["ImageID"].strip()
            if label is None or image_id in bad:
                continue
            box, unsafe = _box(row, label), _id_problem(image_id)
            malformed = box is None and f"malformed row: {path.name} line {number} has a non-numeric coordinate"
            problem = unsafe or malformed
            if problem:
                bad.add(image_id)
                issues.skip(_shown(image_id) if unsafe else image_id, problem)
            elif image_id in taken:  # a file not grouped by image: a later run joins the image if it was taken
                if taken[image_id] is not None:
                    taken[image_id].append(box)
            else:
                if image_id != run_id:
                    decide(run_id, run, subset)
                    run_id, run = image_id, []
                run.append(box)
        decide(run_id, run, subset)
    boxes = {image_id: run for image_id, run in taken.items() if run is not None and image_id not in bad}
    left_out = sum(run is None for image_id, run in taken.items() if image_id not in bad)
    return boxes, {image_id: subsets[image_id] for image_id in boxes}, left_out


def _box(row, label):
    """(x, y, x2, y2, LABEL) from a boxes row, or None when a coordinate is not a finite number."""
    try:
        corners = [float(row[name]) for name in ("XMin", "YMin", "XMax", "YMax")]
    except ValueError:
        return None
    return (*corners, label) if all(math.isfinite(value) for value in corners) else None


def _id_problem(image_id):
    """Why IMAGE_ID (it becomes a file name and a URL path) is not imported, or None."""
    if IMAGE_ID.fullmatch(image_id):
        return None
    return ("ImageID is not an Open Images id (letters, digits, - and _ only; Open Images' are 16 hex digits): "
            "nothing fetched")


def _shown(text, limit=80):
    """TEXT from a CSV as one short line for the report: quoted, escaped, cut at LIMIT characters."""
    return ascii(text[:limit])


def _original_urls(paths, wanted_ids, issues):
    """{ImageID: (OriginalURL, OriginalMD5 as hex or None)} for WANTED_IDS, streamed from the image-list CSVs.

    An image without a usable URL or MD5 is skipped with one line.
    """
    listed = {}
    for path in paths:
        for _, row in _rows(path, issues):
            image_id = row["ImageID"].strip()
            if image_id in wanted_ids and row["OriginalURL"].strip():
                listed[image_id] = (row["OriginalURL"].strip(), (row.get("OriginalMD5") or "").strip())
    urls = {}
    for image_id in wanted_ids:
        if image_id not in listed:
            issues.skip(image_id, "no OriginalURL: the image is in no image-list CSV (or pass --images)")
            continue
        url, md5 = listed[image_id]
        problem = _url_problem(url)
        try:
            md5 = _md5_hex(md5)
        except ValueError:
            problem = problem or f"OriginalMD5 {_shown(md5, 40)} is not the base64 of an MD5: nothing fetched"
        if problem:
            issues.skip(image_id, problem)
        else:
            urls[image_id] = (url, md5)
    return urls


def _url_problem(url):
    """Why the OriginalURL URL is not fetched (only http(s):// and gs:// URLs are), or None."""
    try:
        parsed = urllib.parse.urlparse(url)
    except ValueError:  # a malformed host, such as "http://[x"
        parsed = None
    if parsed is not None and parsed.scheme not in URL_SCHEMES:
        return (f"OriginalURL {_shown(url)} is not http(s):// or gs://: refused "
                "(only those are fetched for an image list)")
    if parsed is None or not parsed.netloc or not (url.isascii() and url.isprintable()) or " " in url:
        return f"OriginalURL {_shown(url)} is not a URL: nothing fetched"
    return None


def _md5_hex(text):
    """OriginalMD5 (base64 of the 16 bytes) as hex; None when empty; ValueError when it is no MD5."""
    if not text:
        return None
    digest = base64.b64decode(text, validate=True)  # binascii.Error is a ValueError
    if len(digest) != 16:
        raise binascii.Error(f"{len(digest)} bytes")
    return digest.hex()


def _download_all(urls, out_dir, issues):
    """The ImageIDs in URLS whose image is now in OUT_DIR, verified; each failure is one skipped line."""
    done = []

    def fetch(item):
        image_id, (url, md5) = item
        try:
            download.download(url, out_dir / f"{image_id}.jpg", lambda path: _check_image(path, md5), progress=False)
            return image_id, None
        except UserError as err:
            return image_id, str(err)

    with ThreadPoolExecutor(DOWNLOAD_WORKERS) as pool, \
            tqdm(total=len(urls), desc="downloading images", unit="image", file=sys.stderr, mininterval=1.0) as bar:
        for image_id, error in pool.map(fetch, sorted(urls.items())):
            bar.update()
            if error:
                issues.skip(image_id, f"download failed: {error}")
            else:
                done.append(image_id)
    return done


def _check_image(path, md5):
    """Refuse a file that does not fully decode as an image, or whose MD5 is not the listed one."""
    if md5:
        with open(path, "rb") as file:
            actual = hashlib.file_digest(file, "md5").hexdigest()
        if actual != md5:
            raise UserError(f"MD5 is {actual}, Open Images lists {md5}")
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # tensorflow_datasets turns it on process-wide
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"truncated or corrupt image ({err or type(err).__name__})") from None
