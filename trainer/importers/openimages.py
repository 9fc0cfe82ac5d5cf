"""Open Images (v4 to v7 CSVs) -> a bucket of the chosen classes, images downloaded and verified.

SOURCE is a folder holding Open Images' CSVs, recognised by their columns:
the class descriptions (LabelName, DisplayName; v5/v6 files have no header),
the boxes (`*-annotations-bbox.csv`: ImageID, Source, LabelName, Confidence,
XMin, XMax, YMin, YMax, ...) and, for the default image source, the image list
(`*-images-*with-rotation.csv`: ImageID, Subset, OriginalURL, ..., OriginalSize,
OriginalMD5, ...). The CSVs are read row by row (the training boxes alone are
over 2 GB), keeping only the boxes of the chosen classes' images.

Images come from each image's OriginalURL (checked against OriginalMD5), or
with --images from a copy laid out as Open Images' bucket is
(`gs://open-images-dataset/SUBSET/IMAGEID.jpg`, or the same under an
http(s):// URL or a folder). Downloads run in parallel through
trainer.download (retries, resume on a rerun); an image that fails to
download or decode is listed in the report and skipped.
"""
import base64
import csv
import hashlib
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageFile
from tqdm import tqdm

from trainer import download
from trainer.errors import UserError
from trainer.importers.bucket import Issues, PerClassLimit, Record, resolve_classes, write_bucket

BOX_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
SUBSET = re.compile(r"(train|validation|test)")
DOWNLOAD_WORKERS = 16


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
        with open(path, newline="", encoding="utf-8") as file:
            header = next(csv.reader(file), [])
        if set(BOX_COLUMNS) <= set(header):
            tables["boxes"].append(path)
        elif "OriginalURL" in header:
            tables["images"].append(path)
        elif len(header) == 2 and "class-descriptions" in path.name:
            tables["classes"] = path
    if "classes" not in tables or not tables["boxes"]:
        raise UserError(f"{source} needs Open Images' class-descriptions CSV and at least one *-annotations-bbox.csv")
    return tables


def _read_class_names(path):
    """{LabelName: DisplayName} from the class-descriptions CSV, with or without its header row."""
    with open(path, newline="", encoding="utf-8") as file:
        return {row[0]: row[1].strip() for row in csv.reader(file) if len(row) == 2 and row[0].startswith("/")}


def _read_boxes(paths, wanted, limiter, issues):
    """({ImageID: [(x, y, x2, y2, display name)]}, {ImageID: subset}, images over the limit) of WANTED classes.

    Rows are streamed; Open Images lists an image's rows together, so an image is
    taken or left whole when its rows end, with all of its wanted boxes.
    """
    boxes, subsets, decided, left_out, bad = {}, {}, set(), 0, set()

    def close(image_id, rows, subset):
        nonlocal left_out
        decided.add(image_id)
        if image_id in bad:
            return
        if limiter.take(row[4] for row in rows):
            boxes[image_id], subsets[image_id] = rows, subset
        else:
            left_out += 1

    for path in paths:
        subset = (SUBSET.search(path.name) or [None])[0]
        current, rows = None, []
        with open(path, newline="", encoding="utf-8") as file:
            for number, row in enumerate(csv.DictReader(file), start=2):
                label = wanted.get(row["LabelName"])
                if label is None:
                    continue
                image_id = row["ImageID"]
                if image_id != current:
                    if current is not None:
                        close(current, rows, subset)
                    current, rows = image_id, []
                try:
                    box = (float(row["XMin"]), float(row["YMin"]), float(row["XMax"]), float(row["YMax"]), label)
                except (TypeError, ValueError):
                    issues.skip(image_id, f"malformed row: {path.name} line {number} has a non-numeric coordinate")
                    bad.add(image_id)
                    continue
                if image_id in decided:  # a file not grouped by image: join an image already taken
                    if image_id in boxes:
                        boxes[image_id].append(box)
                    continue
                rows.append(box)
            if current is not None and current not in decided:
                close(current, rows, subset)
    for image_id in bad:
        boxes.pop(image_id, None)
    return boxes, subsets, left_out


def _original_urls(paths, wanted_ids, issues):
    """{ImageID: (OriginalURL, OriginalMD5 as hex or None)} for WANTED_IDS, streamed from the image-list CSVs."""
    urls = {}
    for path in paths:
        with open(path, newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                if row["ImageID"] in wanted_ids and row.get("OriginalURL"):
                    md5 = row.get("OriginalMD5")
                    urls[row["ImageID"]] = (row["OriginalURL"], base64.b64decode(md5).hex() if md5 else None)
    for image_id in wanted_ids:
        if image_id not in urls:
            issues.skip(image_id, "no OriginalURL: the image is in no image-list CSV (or pass --images)")
    return urls


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
