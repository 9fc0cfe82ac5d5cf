"""YOLO (Ultralytics layout): data.yaml, images/ folders and their labels/ twins -> records.

data.yaml is read with PyYAML and resolved as Ultralytics' `check_det_dataset`
does (ultralytics/data/utils.py): the root is `path`, else the yaml's folder;
each `train`/`val`/`test` folder is the root joined with the entry, and a
string entry starting `../` that names nothing is tried without it (so a
Roboflow export's `train: ../train/images` beside `train/` works); `names`
is a list or an {id: name} map whose ids are 0..N-1. Each image's label file
is its path with the last `images` folder replaced by `labels` and the suffix
by `.txt`, one `class cx cy w h` line per box, normalised; no label file
means no objects.
"""
import os
from pathlib import Path

import yaml

from trainer.errors import UserError
from trainer.datasets.bucket import IMAGE_SUFFIXES, Issues, Record

# The dataset's own split is kept: val and test images (held out by the user) are val, never trained on.
SPLITS = {"train": "train", "val": "val", "test": "val"}


def read_yolo(source, images_dir=None):
    """(labels, records, issues) from the data.yaml SOURCE; its `path` (or IMAGES_DIR) is the dataset root.

    Keys are image paths relative to the root (or, for folders outside it, to the folder holding them all),
    so train/ and val/ images of one name stay apart.
    """
    source = Path(source)
    config = _load(source)
    names = _class_names(source, config)
    root = Path(images_dir) if images_dir else _root(source, config)
    issues, found = Issues(), []
    for split, entry, folder in _folders(source, config, root):
        if folder.is_dir():
            found.append((split, folder.resolve()))
        else:
            issues.skip(f"{split}: {entry}", f"missing folder: {folder} does not exist")
    if not found:
        raise UserError(f"no image folder found for {source}: " + "; ".join(i["reason"] for i in issues))
    base = Path(os.path.commonpath([str(root.resolve()), *(str(folder) for _, folder in found)]))
    records, refused = {}, set()
    for split, folder in found:
        for image in sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES):
            key = image.relative_to(base).as_posix()
            if key in records or key in refused:  # one folder named by two splits: val if either says val
                if split == "val" and key in records:
                    records[key].split = split
                continue
            try:
                records[key] = Record(key, image, _read_labels(_label_path(image), names), key, split)
            except ValueError as err:
                issues.skip(key, str(err))
                refused.add(key)
    return [names[key] for key in sorted(names)], list(records.values()), issues


def _load(source):
    try:
        config = yaml.safe_load(source.read_text())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise UserError(f"no such YOLO data.yaml: {source}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{source} is not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"{source} is not valid YAML: nested too deeply") from None
    if not isinstance(config, dict):
        raise UserError(f"{source} is not a YOLO data.yaml: it needs keys such as train, val and names")
    return config


def _class_names(source, config):
    """{id: name} as Ultralytics' check_class_names makes it; `nc` alone gives class_0..; a mismatch is refused."""
    names, count = config.get("names"), config.get("nc")
    if names is None and isinstance(count, int) and not isinstance(count, bool) and 0 < count <= 100_000:
        names = [f"class_{number}" for number in range(count)]
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise UserError(f"{source} has no 'names' list of classes")
    try:
        names = {_class_id(key): str(value) for key, value in names.items()}
    except ValueError:
        key, value = next(iter(names.items()))
        if all(isinstance(v, int) for v in names.values()):
            raise UserError(f"{source}: 'names' maps names to ids ({key!r}: {value}); YOLO's map is id to name "
                            f"({value}: {key!r}), or a list in id order") from None
        raise UserError(f"{source}: 'names' keys must be class ids 0, 1, ..., not {key!r}") from None
    if min(names) < 0 or max(names) >= len(names):
        raise UserError(f"{source}: a {len(names)}-class 'names' needs ids 0-{len(names) - 1}, "
                        f"not {min(names)}-{max(names)}")
    if count is not None and count != len(names):
        raise UserError(f"{source}: 'names' has {len(names)} classes and 'nc' says {count!r}: they must match")
    return names


def _class_id(key):
    """An integer id from a `names` key (an int, or a string of one, as Ultralytics' int(k) takes); else ValueError."""
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ValueError(key)
    return int(key)


def _root(source, config):
    """`path` (absolute, or relative to the yaml's folder), else the yaml's folder, as Ultralytics takes it."""
    path = config.get("path")
    if path is not None and not isinstance(path, str):
        raise UserError(f"{source}: 'path' must be a folder, not {path!r}")
    return source.parent / (path or ".")


def _folders(source, config, root):
    """[(split, entry, folder)] for each image folder the yaml names, resolved as check_det_dataset does."""
    folders = []
    for name in SPLITS:
        entries = config.get(name) or (config.get("validation") if name == "val" else None) or []
        for entry in [entries] if isinstance(entries, str) else entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, str) or not entry:
                raise UserError(f"{source}: {name} must be a folder or a list of folders, not {entry!r}")
            if entry.endswith(".txt"):
                raise UserError(f"{source}: {name} lists images in {entry}; only image folders are supported")
            folder = root / entry
            if isinstance(entries, str) and not folder.exists() and entry.startswith("../"):
                folder = root / entry[3:]  # Ultralytics' fallback for a yaml written one folder down
            folders.append((SPLITS[name], entry, folder))
    if not folders:
        raise UserError(f"{source} names no train, val or test image folder")
    return folders


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
    except OSError as err:
        raise ValueError(f"unreadable file: {path.name}: {err.strerror or type(err).__name__}") from None
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
