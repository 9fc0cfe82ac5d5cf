"""COCO instances JSON (+ its images folder) -> records.

Parsed with the standard library's json rather than pycocotools' COCO loader:
that loader stops at the first annotation missing a key, and each bad entry
must instead become one line in the import report.
"""
import json
import math
from pathlib import Path

from trainer.annotations import is_safe_key
from trainer.errors import UserError
from trainer.importers.bucket import Issues, Record, image_size


def read_coco(source, images_dir=None):
    """(labels, records, issues) from the COCO instances JSON SOURCE; images in IMAGES_DIR (default: its folder).

    Boxes are normalised by each image's declared width and height, which must be the image's own.
    Crowd regions are dropped: a bucket has no crowd flag.
    """
    source = Path(source)
    images_dir = Path(images_dir) if images_dir else source.parent
    try:
        document = json.loads(source.read_bytes())
    except FileNotFoundError:
        raise UserError(f"no such COCO file: {source}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{source} is not valid JSON: {err}") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list) for k in ("images", "categories")):
        raise UserError(f"{source} is not a COCO instances file: it needs 'images' and 'categories' lists")
    issues = Issues()
    categories = {}
    for number, category in enumerate(document["categories"], start=1):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or not category.get("name"):
            issues.skip(f"categories[{number - 1}]", "malformed category: needs an integer id and a name")
            continue
        categories[category["id"]] = str(category["name"])
    labels = list(dict.fromkeys(categories[key] for key in sorted(categories)))

    records, sizes = {}, {}
    for number, image in enumerate(document["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            issues.skip(f"images[{number}]", "malformed image entry: needs an id and a file_name")
            continue
        item = f"image {image['id']} ({image['file_name']})"
        if image["id"] in records:
            issues.skip(item, f"duplicate image id {image['id']}")
            continue
        records[image["id"]] = Record(image["file_name"], images_dir / image["file_name"], [], item)
        sizes[image["id"]] = (image.get("width"), image.get("height"))

    bad = {}  # image id -> why it is skipped
    for number, annotation in enumerate(document.get("annotations") or []):
        if not isinstance(annotation, dict) or annotation.get("image_id") not in records:
            issues.skip(f"annotations[{number}]", "annotation of no listed image (image_id missing or unknown)")
            continue
        image_id, name = annotation["image_id"], f"annotation {annotation.get('id', f'[{number}]')}"
        box, category = annotation.get("bbox"), annotation.get("category_id")
        if annotation.get("iscrowd"):
            issues.repair(records[image_id].item, f"crowd region dropped: {name} is a crowd (iscrowd 1)")
        elif category not in categories:
            bad.setdefault(image_id, f"unknown class id: {name} has category_id {category!r}")
        elif not (isinstance(box, list) and len(box) == 4 and all(_is_number(value) for value in box)):
            bad.setdefault(image_id, f"malformed box: {name} has bbox {box!r}, not [x, y, width, height]")
        else:
            records[image_id].boxes.append((*box, categories[category]))

    kept = []
    for image_id, record in records.items():
        if image_id in bad:
            issues.skip(record.item, bad[image_id])
            continue
        width, height = sizes[image_id]
        if is_safe_key(record.key):  # an unsafe one is refused, unopened, by write_bucket
            try:
                actual = image_size(record.source)
            except UserError as err:
                issues.skip(record.item, str(err))
                continue
            if (width, height) != actual:
                issues.skip(record.item, f"wrong size: the COCO file says {width}x{height}, the image is "
                                         f"{actual[0]}x{actual[1]}; boxes would land off their objects")
                continue
        else:
            width = height = 1
        record.boxes = [(x / width, y / height, (x + w) / width, (y + h) / height, label)
                        for x, y, w, h, label in record.boxes]
        kept.append(record)
    return labels, kept, issues


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
