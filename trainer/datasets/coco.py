"""COCO instances JSON (+ its images folder), or a Roboflow COCO export's split folders -> records.

Parsed with the standard library's json rather than pycocotools' COCO loader:
that loader stops at the first annotation missing a key, and each bad entry
must instead become one line in the import report. Numbers written as strings
(some Roboflow exports write `"bbox": [1150, 436, "996.0000", "1170.0000"]`)
are read as the numbers they spell; anything else non-numeric skips its image.
"""
import json
from pathlib import Path

from trainer.annotations import is_safe_key
from trainer.errors import UserError
from trainer.datasets.bucket import Issues, Record, image_size, number

ROBOFLOW_FILE = "_annotations.coco.json"  # one per split folder in a Roboflow COCO export
SPLIT_FOLDERS = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "val"}


def read_coco(source, images_dir=None):
    """(labels, records, issues) from the COCO instances JSON SOURCE; images in IMAGES_DIR (default: its folder).

    SOURCE may instead be a folder of split folders (Roboflow's train/, valid/, test/), each with its own
    _annotations.coco.json and images: keys are then SPLIT/file_name, and valid/ and test/ images are val.
    Boxes are normalised by each image's declared width and height, which must be the image's own.
    Crowd regions are dropped: a bucket has no crowd flag.
    """
    source = Path(source)
    if not source.is_dir():
        return _read_file(source, Path(images_dir) if images_dir else source.parent, "", "", Issues())
    if images_dir:
        raise UserError("--images applies to a COCO JSON; a folder of split folders holds its own images")
    if (source / ROBOFLOW_FILE).is_file():  # one split exported alone
        return _read_file(source / ROBOFLOW_FILE, source, "", "", Issues())
    splits = sorted(folder for folder in source.iterdir() if (folder / ROBOFLOW_FILE).is_file())
    if not splits:
        raise UserError(f"no COCO file in {source}: it needs split folders (train/, valid/, test/) each with "
                        f"{ROBOFLOW_FILE}, or pass the instances JSON itself")
    labels, records, issues = [], [], Issues()
    for folder in splits:
        more_labels, more, issues = _read_file(folder / ROBOFLOW_FILE, folder, f"{folder.name}/",
                                               SPLIT_FOLDERS.get(folder.name.lower(), ""), issues)
        labels.extend(label for label in more_labels if label not in labels)
        records.extend(more)
    return labels, records, issues


def _read_file(source, images_dir, prefix, split, issues):
    """(labels, records, issues) of one COCO JSON; keys PREFIX + file_name, each record's split SPLIT."""
    document = _load(source)
    categories = {}
    for index, category in enumerate(document["categories"]):
        key = _id(category.get("id")) if isinstance(category, dict) else None
        name = category.get("name") if isinstance(category, dict) else None
        if key is None or not isinstance(name, (str, int, float)) or isinstance(name, bool) or name == "":
            issues.skip(f"{prefix}categories[{index}]", "malformed category: needs an integer id and a name")
            continue
        categories[key] = str(name)
    labels = list(dict.fromkeys(categories[key] for key in sorted(categories, key=lambda k: (isinstance(k, str), k))))

    records, sizes = {}, {}
    for index, image in enumerate(document["images"]):
        image_id = _id(image.get("id")) if isinstance(image, dict) else None
        if image_id is None or not isinstance(image.get("file_name"), str):
            issues.skip(f"{prefix}images[{index}]", "malformed image entry: needs an integer id and a file_name")
            continue
        item = f"image {prefix}{image_id} ({image['file_name']})"
        if image_id in records:
            issues.skip(item, f"duplicate image id {image_id}")
            continue
        key = prefix + image["file_name"] if is_safe_key(image["file_name"]) else image["file_name"]  # unsafe: refused
        records[image_id] = Record(key, images_dir / image["file_name"], [], item, split)
        sizes[image_id] = (image.get("width"), image.get("height"))

    bad = _read_boxes(document["annotations"], records, categories, issues, prefix)
    kept = []
    for image_id, record in records.items():
        if image_id in bad:
            issues.skip(record.item, bad[image_id])
            continue
        size = _checked_size(record, sizes[image_id], issues)
        if size:
            width, height = size
            record.boxes = [(x / width, y / height, (x + w) / width, (y + h) / height, label)
                            for x, y, w, h, label in record.boxes]
            kept.append(record)
    return labels, kept, issues


def _load(source):
    try:
        document = json.loads(source.read_bytes())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UserError(f"no such COCO file: {source}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{source} is not valid JSON: {err}") from None
    except RecursionError:
        raise UserError(f"{source} is not valid JSON: nested too deeply") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list) for k in ("images", "categories")):
        raise UserError(f"{source} is not a COCO instances file: it needs 'images' and 'categories' lists")
    document["annotations"] = document.get("annotations") or []
    if not isinstance(document["annotations"], list):
        raise UserError(f"{source} is not a COCO instances file: its 'annotations' is not a list")
    return document


def _read_boxes(annotations, records, categories, issues, prefix):
    """Add each annotation's (x, y, w, h, label) to its record; return {image id: why it is skipped}."""
    bad = {}
    for index, annotation in enumerate(annotations):
        image_id = _id(annotation.get("image_id")) if isinstance(annotation, dict) else None
        if image_id not in records:
            issues.skip(f"{prefix}annotations[{index}]",
                        "annotation of no listed image (image_id missing or unknown)")
            continue
        name = f"annotation {annotation.get('id', f'[{index}]')}"
        box, category = annotation.get("bbox"), _id(annotation.get("category_id"))
        values = [number(value) for value in box] if isinstance(box, list) and len(box) == 4 else [None]
        if number(annotation.get("iscrowd")) not in (None, 0):
            issues.repair(records[image_id].item, f"crowd region dropped: {name} is a crowd (iscrowd 1)")
        elif category not in categories:
            bad.setdefault(image_id, f"unknown class id: {name} has category_id {annotation.get('category_id')!r}")
        elif None in values:
            bad.setdefault(image_id, f"malformed box: {name} has bbox {box!r}, not [x, y, width, height]")
        else:
            records[image_id].boxes.append((*values, categories[category]))
    return bad


def _checked_size(record, declared, issues):
    """The (width, height) to normalise RECORD's boxes by: its declared size, checked against the image's own.

    None (and a skipped line) when the image is unreadable or its size is not the declared one; a missing
    declared size is the image's own. An unsafe key is refused, unopened, later by write_bucket.
    """
    if not is_safe_key(record.key):
        return 1, 1
    try:
        actual = image_size(record.source)
    except UserError as err:
        issues.skip(record.item, str(err))
        return None
    width, height = (number(value) for value in declared)
    if declared == (None, None):
        return actual
    if (width, height) != actual:
        issues.skip(record.item, f"wrong size: the COCO file says {declared[0]}x{declared[1]}, the image is "
                                 f"{actual[0]}x{actual[1]}; boxes would land off their objects")
        return None
    return width, height


def _id(value):
    """An id as an int (also from "7" or 7.0), or a non-numeric string kept as it is; None when it is no id."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            return int(value) if value.strip().isascii() else value.strip() or None
        except ValueError:  # not an integer (or over Python's 4300 digits): a string id
            return value.strip() or None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None
