"""`python -m trainer export-annotations coco BUCKET OUT.json`: a bucket's boxes as COCO instances JSON.

The way back out of `import`, for tools that read COCO: boxes are read and
repaired exactly as prepare reads them, and turned into pixels with each
image's size as people see it (EXIF rotation applied, as prepare does).
"""
import json
import sys
from pathlib import Path

from trainer import tasks
from trainer.annotations import SKIPPED, read_annotations
from trainer.errors import UserError
from trainer.datasets.bucket import ANNOTATIONS_FILE, image_size

FORMATS = ("coco",)


def export_annotations(fmt, bucket, out):
    """Write the bucket BUCKET's annotations to OUT in format FMT; return (images written, images left out)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown annotation format {fmt!r}; choose from {', '.join(FORMATS)}")
    bucket = Path(bucket)
    try:
        annotation_set, _ = read_annotations(bucket / ANNOTATIONS_FILE)
    except FileNotFoundError:
        raise UserError(f"no {ANNOTATIONS_FILE} in {bucket}") from None
    if not tasks.get(annotation_set.task).BOXES:
        raise UserError(f"{bucket / ANNOTATIONS_FILE} is a {annotation_set.task} bucket: COCO instances hold boxes, "
                        "so only localization buckets export to it")
    used = {box.label for image in annotation_set.images for box in image.boxes}
    labels = annotation_set.labels + sorted(used - set(annotation_set.labels))
    category = {label: number for number, label in enumerate(labels, start=1)}
    images, annotations = [], []
    left_out = [issue for issue in annotation_set.issues if issue["action"] == SKIPPED]
    for image in annotation_set.images:
        try:
            width, height = image_size(bucket / image.key)
        except UserError as err:
            left_out.append({"image": image.key, "reason": str(err)})
            continue
        images.append({"id": len(images) + 1, "file_name": image.key, "width": width, "height": height})
        for box in image.boxes:
            x, y, w, h = box.x * width, box.y * height, (box.x2 - box.x) * width, (box.y2 - box.y) * height
            annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"],
                                "category_id": category[box.label], "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": 0})
    categories = [{"id": number, "name": label, "supercategory": ""} for label, number in category.items()]
    document = {"images": images, "annotations": annotations, "categories": categories}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(document, ensure_ascii=False) + "\n")
    for issue in left_out:
        print(f"export-annotations: left out {issue['image']}: {issue['reason']}", file=sys.stderr)
    print(f"export-annotations: wrote {len(images)} images, {len(annotations)} boxes and {len(labels)} categories "
          f"to {out}", file=sys.stderr)
    return len(images), len(left_out)


def add_arguments(parser):
    parser.add_argument("format", choices=FORMATS, help="the annotation format to write")
    parser.add_argument("bucket", help="a Cloud Annotations bucket: _annotations.json and its images")
    parser.add_argument("out", help="the file to write (COCO: instances JSON, boxes in pixels)")


def main(args):
    export_annotations(args.format, args.bucket, args.out)
    return 0
