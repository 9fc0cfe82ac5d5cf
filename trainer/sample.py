"""A synthetic Cloud Annotations bucket for demos and tests: shapes on photo-like backgrounds.

Three classes a small detector can learn from scratch on a CPU in minutes:
large, high-contrast shapes, each class with its own shape and colour family,
on smooth mottled backgrounds with sensor-like noise, plus distractor blobs
so that "any colour change" is not enough. The bucket exercises the paths real
buckets need: mostly JPEGs, some PNGs, one JPEG stored sideways with an EXIF
orientation (boxes annotated as a viewer shows it) and a few negatives (no
objects). Same seed, byte-identical files; no third-party images.

`--type classification` writes a classification bucket from the same pictures:
every shape in an image is of one class, which is the image's label.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trainer.errors import UserError

LABELS = ["circle", "square", "triangle"]
DEFAULT_IMAGES = 96
SIZES = [(320, 240), (400, 300), (480, 360), (512, 384), (640, 480), (360, 480)]
HUES = {"circle": [(220, 40, 40), (235, 110, 20)],      # reds and oranges
        "square": [(30, 80, 220), (20, 160, 230)],      # blues
        "triangle": [(40, 170, 50), (200, 200, 30)]}    # greens and yellows
PNG_EVERY = 7           # every 7th image is a PNG
NEGATIVE_EVERY = 16     # every 16th image has no objects
ROTATED_INDEX = 3       # this image is stored sideways with EXIF orientation 6
EXIF_ORIENTATION = 0x0112


def make_sample_bucket(out_dir, num_images=DEFAULT_IMAGES, seed=0, kind="localization"):
    """Write NUM_IMAGES images and `_annotations.json` (type KIND) into OUT_DIR; return the annotations dict."""
    if num_images < 1:
        raise UserError(f"--images must be at least 1, not {num_images}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    annotations = {}
    for index in range(num_images):
        size = SIZES[rng.integers(len(SIZES))]
        image = _background(rng, size)
        if kind == "classification":  # the same pictures, with every shape of one class: the image's label
            label = LABELS[index % len(LABELS)]
            boxes = [{"label": label}] if _draw_objects(rng, image, only=label) else []
        else:
            boxes = [] if index % NEGATIVE_EVERY == NEGATIVE_EVERY - 1 else _draw_objects(rng, image)
        image = _add_noise(rng, image.filter(ImageFilter.GaussianBlur(0.6)))
        key = f"sample-{index:04d}.{'png' if index % PNG_EVERY == PNG_EVERY - 1 else 'jpg'}"
        _save(image, out_dir / key, sideways=index == ROTATED_INDEX)
        annotations[key] = boxes
    document = {"version": "1.0", "type": kind, "labels": LABELS, "annotations": annotations}
    (out_dir / "_annotations.json").write_text(json.dumps(document, indent=1) + "\n")
    return document


def _background(rng, size):
    """A muted mottled field (a coarse random grid, upsampled) with a few soft grey blobs as distractors.

    Greys and low saturation keep the background apart from the saturated objects;
    the blobs are elongated so that they do not pass for circles.
    """
    width, height = size
    tint = rng.uniform(90, 170) + rng.normal(0, 12, size=3)
    shade = rng.normal(0, 30, size=(4, 5, 1)) + rng.normal(0, 6, size=(4, 5, 3))
    grid = np.clip(tint + shade, 0, 255).astype(np.uint8)
    image = Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(2, 6)):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(10, 45)
        grey = tint + rng.normal(0, 40) + rng.normal(0, 5, size=3)
        draw.ellipse([cx - r, cy - r * rng.uniform(0.3, 0.6), cx + r, cy + r * rng.uniform(0.3, 0.6)],
                     fill=tuple(int(v) for v in np.clip(grey, 0, 255)))
    return image


def _draw_objects(rng, image, only=None):
    """Draw 1-4 non-overlapping shapes (all of class ONLY when given), each 18-45% of the shorter side; return
    their boxes."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    boxes, placed = [], []
    for _ in range(rng.integers(1, 5)):
        label = only or LABELS[rng.integers(len(LABELS))]
        side = rng.uniform(0.18, 0.45) * min(width, height)
        for _attempt in range(20):
            x, y = rng.uniform(0, width - side), rng.uniform(0, height - side)
            box = (x, y, x + side, y + side)
            if not any(_overlaps(box, other) for other in placed):
                break
        else:
            continue
        placed.append(box)
        colour = np.array(HUES[label][rng.integers(2)]) + rng.normal(0, 15, size=3)
        fill = tuple(int(v) for v in np.clip(colour, 0, 255))
        outline = tuple(int(v * 0.6) for v in fill)
        _draw_shape(draw, label, box, fill, outline)
        boxes.append({"x": box[0] / width, "y": box[1] / height, "x2": box[2] / width, "y2": box[3] / height,
                      "label": label})
    return boxes


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _draw_shape(draw, label, box, fill, outline):
    x, y, x2, y2 = box
    if label == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=2)
    elif label == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=2)
    else:
        draw.polygon([((x + x2) / 2, y), (x2, y2), (x, y2)], fill=fill, outline=outline, width=2)


def _add_noise(rng, image):
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 7, size=(image.height, image.width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _save(image, path, sideways):
    """Save as PNG or JPEG; SIDEWAYS stores the pixels turned 90 degrees with EXIF orientation 6 to undo it."""
    if path.suffix == ".png":
        image.save(path, "PNG")
    elif sideways:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
        image.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=90, exif=exif)
    else:
        image.save(path, "JPEG", quality=90)


def add_arguments(parser):
    parser.add_argument("out_dir", help="folder to write the bucket into (created if missing)")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES,
                        help=f"number of images (default {DEFAULT_IMAGES})")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    parser.add_argument("--type", dest="kind", choices=("localization", "classification"), default="localization",
                        help="localization: shapes with boxes (default); classification: one class of shape per "
                             "image, labelled with it")


def main(args):
    document = make_sample_bucket(args.out_dir, num_images=args.images, seed=args.seed, kind=args.kind)
    if args.kind == "classification":
        print(f"sample: wrote {len(document['annotations'])} labelled images to {args.out_dir}")
        return 0
    boxes = sum(len(entries) for entries in document["annotations"].values())
    print(f"sample: wrote {len(document['annotations'])} images with {boxes} boxes to {args.out_dir}")
    return 0
