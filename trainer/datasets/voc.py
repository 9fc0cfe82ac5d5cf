"""Pascal VOC: a folder of XML annotations and their JPEGs -> records.

Parsed with the standard library's ElementTree (its expat refuses entity
expansion attacks since expat 2.4, and it never fetches external entities).
A `filename` that names no file is common (files renamed after labelling), so
the XML's own stem is tried next, and the fallback is a repaired line.
Users point at any folder of a VOCdevkit (`VOCdevkit`, `VOC2007` or its
`Annotations`), so images are looked for where VOC and labelImg put them.
"""
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from trainer.errors import UserError
from trainer.datasets.bucket import IMAGE_SUFFIXES, Issues, Record, image_size, number

CORNERS = ("xmin", "ymin", "xmax", "ymax")
IMAGE_FOLDERS = ("JPEGImages", "images")  # VOCdevkit's, and the images/ + annotations/ layout's
# ImageSets/Main lists: val and test images (held out by the dataset) are val; trainval holds val's too.
SPLIT_LISTS = (("trainval", "train"), ("train", "train"), ("val", "val"), ("test", "val"))


def read_voc(source, images_dir=None):
    """(labels, records, issues) from the XMLs under the folder SOURCE.

    Images are looked up in IMAGES_DIR, else in SOURCE/JPEGImages, the JPEGImages or images folder beside
    the XML's folder (VOC2007/Annotations -> VOC2007/JPEGImages), and beside the XML, in that order.
    The split is ImageSets/Main/{train,val,trainval,test}.txt beside the XML's folder, when there.
    Boxes are VOC's pixel corners divided by the image's width and height.
    """
    source = Path(source)
    if not source.is_dir():
        raise UserError(f"no such VOC folder: {source}")
    xmls = sorted(source.rglob("*.xml"))
    if not xmls:
        raise UserError(f"no .xml annotation in {source}")
    issues, records, labels, splits = Issues(), [], {}, {}
    for xml in xmls:
        item = str(xml.relative_to(source))
        folders = [Path(images_dir)] if images_dir else _image_folders(source, xml.parent)
        try:
            root = ElementTree.parse(xml).getroot()
            boxes = [_object_box(obj) for obj in root.iter("object")]
        except (ElementTree.ParseError, ValueError) as err:
            issues.skip(item, f"malformed file: {err}")
            continue
        images, image = next(((folder, image) for folder in folders if (image := _find_image(
            folder, (root.findtext("filename") or "").strip(), xml.stem))), (None, None))
        if image is None:
            issues.skip(item, f"missing image: neither {root.findtext('filename')!r} nor {xml.stem}.* is in "
                              f"{' or '.join(map(str, folders))}")
            continue
        if image.stem == xml.stem and image.name != (root.findtext("filename") or "").strip():
            issues.repair(item, f"filename {root.findtext('filename')!r} names no file; used {image.name}, "
                                "the XML's own name")
        try:
            width, height = image_size(image)
        except UserError as err:
            issues.skip(item, str(err))
            continue
        declared = (_number(root.findtext("size/width")), _number(root.findtext("size/height")))
        if xml.parent.parent not in splits:
            splits[xml.parent.parent] = _splits(xml.parent.parent)
        split = splits[xml.parent.parent].get(xml.stem, "")
        if declared not in ((width, height), (None, None), (0, 0)):
            issues.skip(item, f"wrong size: the XML says {declared[0]}x{declared[1]}, the image is {width}x{height}")
            continue
        labels.update(dict.fromkeys(box[4] for box in boxes))
        records.append(Record(image.relative_to(images).as_posix(), image,
                              [(x / width, y / height, x2 / width, y2 / height, name) for x, y, x2, y2, name in boxes],
                              item, split))
    return list(labels), records, issues


def _object_box(obj):
    """(xmin, ymin, xmax, ymax, name) of one <object>; ValueError naming what is missing."""
    name = (obj.findtext("name") or "").strip()
    corners = [_number(obj.findtext(f"bndbox/{corner}")) for corner in CORNERS]
    if not name or None in corners:
        raise ValueError(f"an <object> lacks its <name> or a numeric <bndbox> {'/'.join(CORNERS)}")
    return (*corners, name)


def _number(text):
    return number(text) if text is not None else None


def _image_folders(source, xml_folder):
    """Where the images of the XMLs in XML_FOLDER may be, existing folders only, in the order they are tried."""
    candidates = [source / IMAGE_FOLDERS[0], *(xml_folder.parent / name for name in IMAGE_FOLDERS), xml_folder]
    return [folder for folder in dict.fromkeys(candidates) if folder.is_dir()]


def _splits(voc_folder):
    """{image id: "train" or "val"} from VOC_FOLDER/ImageSets/Main's lists; {} without them."""
    splits = {}
    for name, split in SPLIT_LISTS:
        try:
            text = (voc_folder / "ImageSets" / "Main" / f"{name}.txt").read_text(errors="replace")
        except OSError:
            continue
        splits.update((line.split()[0], split) for line in text.splitlines() if line.strip())
    return splits


def _find_image(folder, filename, stem):
    """The image FILENAME names in FOLDER, else one named after the XML's STEM; None when neither exists."""
    if filename and "/" not in filename and "\\" not in filename and (folder / filename).is_file():
        return folder / filename
    return next((folder / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)
                 if (folder / f"{stem}{suffix}").is_file()), None)
