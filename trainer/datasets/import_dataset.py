"""`python -m trainer import FORMAT SOURCE OUT_DIR`: other datasets in, a Cloud Annotations bucket out.

One module per format reads its files into records (`bucket.Record`); the
shared `bucket.write_bucket` writes OUT_DIR/_annotations.json with the images
linked or copied beside it, so prepare and everything after it treat an
imported dataset exactly as a labelled bucket. Problems are listed in
OUT_DIR/import_report.json, one line each, and the rest is imported. The
dataset's own train/val split, where it has one, goes to OUT_DIR/_split.json.
"""
import importlib

from trainer.datasets.bucket import resolve_classes, select, write_bucket

FORMATS = {
    "coco": ("coco", "read_coco", "SOURCE: a COCO instances JSON, or a Roboflow COCO export's folder of split "
                                  "folders; --images: the JSON's images folder (default: the JSON's)"),
    "voc": ("voc", "read_voc", "SOURCE: a folder of Pascal VOC XMLs (VOCdevkit, VOC2007 or its Annotations); "
                               "--images: the JPEGs (default: JPEGImages or images beside the XMLs' folder, "
                               "or beside each XML)"),
    "yolo": ("yolo", "read_yolo", "SOURCE: a YOLO data.yaml; --images: the dataset root (default: its `path`, "
                                  "else the yaml's folder)"),
    "openimages": ("openimages", "import_openimages", "SOURCE: a folder of Open Images CSVs; --images: where the "
                                                      "images are (default: each image's OriginalURL)"),
}


def import_dataset(fmt, source, out_dir, images=None, classes=None, limit=None, copy=False):
    """Write the dataset SOURCE in format FMT as a bucket in OUT_DIR; return the import report.

    classes: comma-separated names to keep (others' boxes are dropped, images without any are left out).
    limit: at most this many images per class.
    """
    module_name, function_name, _ = FORMATS[fmt]
    read = getattr(importlib.import_module(f"trainer.datasets.{module_name}"), function_name)
    if fmt == "openimages":  # streams and downloads: selects while it reads
        return read(source, out_dir, images, classes, limit)
    labels, records, issues = read(source, images)
    wanted = resolve_classes(classes, labels)
    kept, left_out = select(records, wanted, limit)
    return write_bucket(out_dir, fmt, source, wanted or labels, kept, issues, copy=copy, left_out=left_out)


def add_arguments(parser):
    parser.add_argument("format", choices=list(FORMATS), help="; ".join(f"{name}: {help}"
                                                                    for name, (_, _, help) in FORMATS.items()))
    parser.add_argument("source", help="the dataset to import (see FORMAT)")
    parser.add_argument("out_dir", help="the bucket to write: _annotations.json, the images, import_report.json")
    parser.add_argument("--images", help="where the images are (see FORMAT)")
    parser.add_argument("--classes", help="comma-separated class names to keep (default: all)")
    parser.add_argument("--limit", type=int, help="at most N images per class")
    parser.add_argument("--copy", action="store_true",
                        help="copy the images (default: hard-link them, copying where linking is impossible)")
    parser.epilog = ("Problems (unsafe paths, missing images, boxes outside the image, unknown class ids, "
                     "malformed files) are one line each in OUT_DIR/import_report.json; the rest is imported; "
                     "no image imported is an error. The dataset's own split is kept in OUT_DIR/_split.json. "
                     "Then: python -m trainer prepare --data-dir OUT_DIR ...")


def main(args):
    import_dataset(args.format, args.source, args.out_dir, args.images, args.classes, args.limit, args.copy)
    return 0
