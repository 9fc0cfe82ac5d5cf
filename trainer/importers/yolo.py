"""YOLO (Ultralytics layout): data.yaml, images/ folders and their labels/ twins -> records.

data.yaml is read with PyYAML. Each image's label file is its path with the
last `images` folder replaced by `labels` and the suffix by `.txt`, one
`class cx cy w h` line per box, normalised; no label file means no objects.
"""
from pathlib import Path

import yaml

from trainer.errors import UserError
from trainer.importers.bucket import IMAGE_SUFFIXES, Issues, Record

SPLITS = ("train", "val", "test")


def read_yolo(source, images_dir=None):
    """(labels, records, issues) from the data.yaml SOURCE; its `path` (or IMAGES_DIR) is the dataset root.

    Keys are image paths relative to the root, so train/ and val/ images of one name stay apart.
    """
    source = Path(source)
    try:
        config = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise UserError(f"no such YOLO data.yaml: {source}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{source} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict) or not isinstance(config.get("names"), (list, dict)):
        raise UserError(f"{source} has no 'names' list of classes")
    names = dict(enumerate(config["names"])) if isinstance(config["names"], list) else config["names"]
    names = {int(key): str(value) for key, value in names.items()}
    root = Path(images_dir) if images_dir else source.parent / (config.get("path") or ".")
    folders = []
    for split in SPLITS:
        entries = config.get(split) or []
        for entry in [entries] if isinstance(entries, str) else entries:
            if str(entry).endswith(".txt"):
                raise UserError(f"{source}: {split} lists images in {entry}; only image folders are supported")
            folders.append(root / entry)
    if not folders:
        raise UserError(f"{source} names no train, val or test image folder")
    issues, records = Issues(), []
    for folder in folders:
        if not folder.is_dir():
            issues.skip(folder, "missing folder: it does not exist")
            continue
        for image in sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES):
            key = image.relative_to(root).as_posix()
            try:
                boxes = _read_labels(_label_path(image), names)
            except ValueError as err:
                issues.skip(key, str(err))
                continue
            records.append(Record(key, image, boxes, key))
    return [names[key] for key in sorted(names)], records, issues


def _label_path(image):
    """Ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    last = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if last is not None:
        parts[last] = "labels"
    return Path(*parts).with_suffix(".txt")


def _read_labels(path, names):
    """The boxes (x, y, x2, y2, label) of one label file; ValueError naming the bad line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise ValueError(f"malformed file: {path.name} is not text") from None
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            class_id, (cx, cy, w, h) = int(fields[0]), map(float, fields[1:])
        except ValueError:
            raise ValueError(f"malformed file: {path.name} line {number} is not 'class cx cy w h'") from None
        if class_id not in names:
            raise ValueError(f"unknown class id: {path.name} line {number} has class {class_id}, "
                             f"data.yaml names 0..{max(names)}")
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, names[class_id]))
    return boxes
