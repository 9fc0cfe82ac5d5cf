"""The dataset as a whole, for prepare and for `cloud submit`'s pre-check: label ids, split, warnings.

Pure Python on typed values (no images, no TensorFlow), so the user's machine
runs the same rules on a bucket listing as the job runs on the images.
"""
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from trainer import tasks
from trainer.errors import UserError

DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SEED = 42
MIN_IMAGES_PER_CLASS = 10
MAX_CLASS_RATIO = 50
MIN_BOX_PIXELS = 8
MIN_BOX_FRACTION = 0.01
SHOWN_EXAMPLES = 3
SPLIT_FILE = "_split.json"  # beside _annotations.json: the dataset's own val keys, written by `import`


@dataclass(frozen=True, slots=True)
class Item:
    """One kept image: key, boxes (trainer.annotations.Box), content digest, split, stored (width, height) or None."""
    key: str
    boxes: list
    digest: str
    split: str
    size: tuple = None


def label_ids(listed, images):
    """(label names in id order, warnings): used labels in `labels` order, then unlisted ones sorted; id = index + 1."""
    used = {box.label for image in images for box in image.boxes}
    unlisted = sorted(used - set(listed))
    warnings = [warning("unlisted_label", f"label {name!r} is used but not listed in 'labels'", label=name)
                for name in unlisted]
    return [name for name in listed if name in used] + unlisted, warnings


def seeded_hash(seed, text):
    return hashlib.sha256(f"{seed}:{text}".encode()).digest()


class ContentSplit:
    """Train or val for each image content, decided from the content alone, as images stream in.

    A content (digest) goes to val when its seeded hash, read as a number in
    [0, 1), is below val_fraction: copies of one image share a split, and no
    image has to be read twice. With val_fraction > 0 and two or more distinct
    contents, both splits get at least one: the train content nearest to val
    and the val content nearest to train are held back (`place` returns None)
    until `finish` knows whether one must cross over.
    """

    def __init__(self, seed, val_fraction):
        self.seed, self.val_fraction = seed, val_fraction
        self.decided = {}                               # digest -> split
        self.held = {"train": None, "val": None}         # split -> (score, digest)

    source = "content hash"

    def place(self, digest, key=None):
        """(split of DIGEST or None while held, [(digest, split)] released from hold by this one); KEY is unused."""
        if digest in self.decided:
            return self.decided[digest], []
        if any(held and held[1] == digest for held in self.held.values()):
            return None, []
        if not self.val_fraction:
            self.decided[digest] = "train"
            return "train", []
        score = int.from_bytes(seeded_hash(self.seed, digest)[:8], "big") / 2**64
        split = "val" if score < self.val_fraction else "train"
        rank = score if split == "train" else -score    # lower rank: nearer the other split
        held = self.held[split]
        if held is None or rank < held[0]:
            self.held[split] = (rank, digest)
            if held is None:
                return None, []
            self.decided[held[1]] = split
            return None, [(held[1], split)]
        self.decided[digest] = split
        return split, []

    def finish(self):
        """[(digest, split)] for the held contents; an empty split takes the other split's nearest content."""
        counts = Counter(self.decided.values()) + Counter(split for split, held in self.held.items() if held)
        released = []
        for split, held in self.held.items():
            if held is None:
                continue
            other = "val" if split == "train" else "train"
            crosses = not counts[other] and counts[split] >= 2
            released.append((held[1], other if crosses else split))
            self.decided[held[1]] = released[-1][1]
            self.held[split] = None
        return released


    def warnings(self):
        return []


class ListedSplit:
    """Train or val as the bucket's _split.json says: its keys in val, every other image in train.

    It is the dataset's own split, kept through `import`. Copies of one content
    still never straddle the split: a copy follows the first of them placed
    (prepare reads in a seeded order of keys), and those moved are a warning.
    """
    source = SPLIT_FILE

    def __init__(self, val_keys, keys):
        self.val_keys = frozenset(val_keys)
        self.decided, self.moved = {}, []
        self.val_fraction = sum(key in self.val_keys for key in keys) / max(1, len(keys))

    def place(self, digest, key):
        split = "val" if key in self.val_keys else "train"
        if self.decided.setdefault(digest, split) != split:
            self.moved.append((key, split))
        return self.decided[digest], []

    def finish(self):
        return []

    def warnings(self):
        if not self.moved:
            return []
        keys = [key for key, _ in self.moved]
        return [warning("split_copies", f"{counted(len(keys), 'image')} listed in one split of {SPLIT_FILE} "
                        f"byte-identical to an image of the other; each is kept with its copy, so copies never "
                        f"straddle train and val (e.g. {', '.join(keys[:SHOWN_EXAMPLES])})",
                        images=len(keys), examples=keys[:SHOWN_EXAMPLES])]


def read_split_file(data_dir):
    """The val keys DATA_DIR/_split.json lists, or None without one; a malformed one is a UserError."""
    path = Path(data_dir) / SPLIT_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise UserError(f"{path} is not a readable split file: {err}") from None
    return parse_split_file(raw, path)


def parse_split_file(raw, where):
    """The val keys of a _split.json's bytes RAW (read from WHERE, named in the errors)."""
    try:
        document = json.loads(raw)
    except ValueError as err:
        raise UserError(f"{where} is not a readable split file: {err}") from None
    val = document.get("val") if isinstance(document, dict) and document.get("version") == 1 else None
    if not isinstance(val, list) or not all(isinstance(key, str) for key in val):
        raise UserError(f'{where} is not a split file: it needs {{"version": 1, "val": [image keys]}}')
    return val


def choose_split(val_keys, keys, seed, val_fraction):
    """The bucket's own split (ListedSplit) when it lists VAL_KEYS (its _split.json), else the content-hash split."""
    return ContentSplit(seed, val_fraction) if val_keys is None else ListedSplit(val_keys, keys)


def assign_splits(splitter, placements):
    """{digest: split} for PLACEMENTS [(digest, key)] in this order, as prepare's stream decides it with SPLITTER."""
    for digest, key in placements:
        splitter.place(digest, key)
    splitter.finish()
    return splitter.decided


def check_distinct(count, distinct, where):
    """Refuse a dataset of 2 or more images that are all copies of one image: it has nothing to validate on."""
    if count >= 2 and distinct == 1:
        raise UserError(f"all {count} usable images in {where} are byte-identical copies of one image: a model "
                        "cannot learn or be evaluated on one picture; add different images")


def split_counts(items, labels, split, task="detection"):
    """Images, boxes, negatives and boxes per class of SPLIT; for classification, images and images per class."""
    chosen = [item for item in items if item.split == split]
    per_class = Counter(box.label for item in chosen for box in item.boxes)
    if not tasks.get(task).BOXES:  # one whole-image box per image
        return {"images": len(chosen), "per_class": {name: per_class[name] for name in labels}}
    return {"images": len(chosen),
            "boxes": sum(len(item.boxes) for item in chosen),
            "negatives": sum(1 for item in chosen if not item.boxes),
            "per_class": {name: per_class[name] for name in labels}}


def warning(code, message, **numbers):
    """A dataset warning as report.json holds it: a stable code, one line for people, and its numbers."""
    return {"code": code, "message": message, "numbers": numbers}


def dataset_warnings(items, labels, input_size, val_fraction, task="detection"):
    """Warnings that cost GPU time if ignored; each with its numbers.

    INPUT_SIZE is the model's square input side: an image is scaled so that its
    longer side fits it. Items without a size (a bucket listing) are taken as
    square, which can only under-count small boxes. A classification image's one
    whole-image box counts as its image.
    """
    (objects, one), learner = tasks.get(task).OBJECTS, tasks.get(task).LEARNER
    warnings = []
    train_images = Counter(label for item in items if item.split == "train"
                           for label in {box.label for box in item.boxes})
    for name in labels:
        if train_images[name] < MIN_IMAGES_PER_CLASS:
            warnings.append(warning(
                "few_images", f"class {name!r} has only {counted(train_images[name], 'training image')}; a {learner} "
                f"needs at least {MIN_IMAGES_PER_CLASS}, and does well with 50 or more",
                label=name, images=train_images[name], minimum=MIN_IMAGES_PER_CLASS))
    boxes = Counter(box.label for item in items for box in item.boxes)
    if len(boxes) >= 2:
        (most, most_boxes), (least, least_boxes) = boxes.most_common()[0], boxes.most_common()[-1]
        if most_boxes > MAX_CLASS_RATIO * least_boxes:
            warnings.append(warning(
                "class_imbalance", f"class {most!r} has {most_boxes} {objects} and {least!r} only {least_boxes} "
                f"({most_boxes / least_boxes:.0f}x, more than {MAX_CLASS_RATIO}x): the model will mostly ignore "
                f"{least!r}", most=most, most_boxes=most_boxes, least=least, least_boxes=least_boxes,
                ratio=round(most_boxes / least_boxes, 1), maximum_ratio=MAX_CLASS_RATIO))
    small = [item.key for item in items for box in item.boxes if _is_small(box, item.size, input_size)]
    if small:
        total = sum(len(item.boxes) for item in items)
        warnings.append(warning(
            "small_boxes", f"{len(small)} of {total} boxes are under {MIN_BOX_PIXELS} px at the "
            f"model's {input_size} px input or under {MIN_BOX_FRACTION:.0%} of the image side, too small to detect "
            f"(e.g. {', '.join(dict.fromkeys(small[:SHOWN_EXAMPLES]))})", boxes=len(small), total=total,
            input_size=input_size, min_pixels=MIN_BOX_PIXELS, min_fraction=MIN_BOX_FRACTION,
            examples=list(dict.fromkeys(small))[:SHOWN_EXAMPLES]))
    groups = Counter(item.digest for item in items)
    copies = sum(count - 1 for count in groups.values())
    if copies:
        warnings.append(warning(
            "duplicate_images", f"{counted(copies, 'image')} byte-identical to another image "
            f"({counted(sum(1 for c in groups.values() if c > 1), 'set')} of copies); each set is kept in one split",
            copies=copies, sets=sum(1 for count in groups.values() if count > 1)))
    val = [item for item in items if item.split == "val"]
    if not val:
        reason = "--val-fraction 0" if not val_fraction else "too few distinct images"
        warnings.append(warning(
            "no_validation", f"NO VALIDATION SPLIT ({reason}): training runs without evaluation, and nothing "
            "measures the model", val_fraction=val_fraction, images=len(items)))
    else:
        in_val = {box.label for item in val for box in item.boxes}
        missing = [name for name in labels if name not in in_val]
        if missing:
            warnings.append(warning(
                "val_missing_class", f"the validation split has no {one} of {', '.join(map(repr, missing))}: "
                "evaluation cannot score those classes", labels=missing, val_images=len(val)))
    return warnings


def _is_small(box, size, input_size):
    """True when BOX's shorter side is under MIN_BOX_FRACTION of the image side or MIN_BOX_PIXELS at INPUT_SIZE."""
    width, height = size or (1, 1)
    scale = input_size / max(width, height)
    box_width, box_height = box.x2 - box.x, box.y2 - box.y
    return (min(box_width, box_height) < MIN_BOX_FRACTION
            or min(box_width * width * scale, box_height * height * scale) < MIN_BOX_PIXELS)


def counted(number, noun, plural=None):
    """"3 images", "1 image": NUMBER with NOUN, plural when needed."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"

