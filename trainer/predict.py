"""Run an exported model on images: a Cloud Annotations bucket of its predictions, previews, detections.json.

The output folder is a bucket: the images (byte-for-byte copies) and an `_annotations.json`
of the detections (x, y top-left, x2, y2 bottom-right, normalised 0..1), or for a classifier
of each image's top label, so predictions load into Cloud Annotations for review, and the
corrected bucket trains the next model. `load_model` is also how `trainer export`
evaluates its SavedModel and TFLite models.

`--rank uncertainty --top K` is the labelling loop's step: the bucket gets only the K images
the model is least sure about (`uncertainty`), pre-labelled, leaving out those already in
a training bucket (`--exclude`); `trainer merge-buckets` folds them back once corrected.
"""
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from trainer.errors import UserError
from trainer.export.formats import EXPORT_FORMATS, REFERENCE
from trainer.metrics import IOU, TOP_K, iou
from trainer.run_dir import LABELS_FILE, RunDir, read_labels

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def predict(model_path, inputs, out_dir, min_score=0.5, top_k=TOP_K, rank=None, top=None, exclude=()):
    """Detect objects in (or classify) each image of INPUTS (files or folders); return detections.json's list.

    OUT_DIR gets each readable image under a unique name, `_annotations.json` (those names ->
    detections at or above MIN_SCORE; for a classifier, its top label when it scores at least
    MIN_SCORE), `boxed/NAME.jpg` previews and `detections.json` (a classifier's TOP_K labels).
    RANK "uncertainty": only the TOP most uncertain images, most uncertain first, each entry with
    its `uncertainty`. Images whose bytes are in an EXCLUDE bucket are left out.
    """
    detect = load_model(model_path)
    labels = _labels(Path(model_path))
    out_dir = Path(out_dir)
    images = _without(list(_images(inputs)), exclude)
    _refuse_overwrite(out_dir, images)
    (out_dir / "boxed").mkdir(parents=True, exist_ok=True)
    results, written, annotations = [], set(), {}
    chosen = _most_uncertain(detect, images, min_score, top) if rank else [(path, None, None) for path in images]
    try:
        for path, found, uncertainty in chosen:
            _predict_one(detect, labels, path, out_dir, min_score, top_k, results, written, annotations, found)
            if uncertainty is not None:
                results[-1]["uncertainty"] = round(uncertainty, 4)
    finally:  # whatever stops it, the images done so far are in the bucket
        (out_dir / "detections.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
        kind = "classification" if any("top_k" in result for result in results) else "localization"
        (out_dir / "_annotations.json").write_text(json.dumps(
            {"version": "1.0", "type": kind, "labels": labels, "annotations": annotations},
            indent=2, ensure_ascii=False))
    return results


def _predict_one(detect, labels, path, out_dir, min_score, top_k, results, written, annotations, found=None):
    """Predict PATH (or take FOUND) into OUT_DIR; its entries go into RESULTS and ANNOTATIONS (its name into WRITTEN)."""
    try:
        image = _read_image(path)
    except (OSError, ValueError) as err:
        print(f"predict: {path}: cannot read image: {err}", file=sys.stderr)
        results.append({"image": str(path), "error": f"cannot read image: {err}"})
        return
    found = detect(np.asarray(image)) if found is None else found
    name = _free_name(written, path)
    shutil.copyfile(path, out_dir / name)  # the bytes as they were: prepare applies the same EXIF turn
    if "probs" in found:  # a classifier
        best = np.argsort(-found["probs"])[:min(top_k, len(labels))]
        ranked = [{"label": labels[index], "score": round(float(found["probs"][index]), 4)} for index in best]
        annotations[name] = [{"label": ranked[0]["label"]}] if ranked[0]["score"] >= min_score else []
        _caption(image, ranked[0]).save(out_dir / "boxed" / f"{Path(name).stem}.jpg")
        results.append({"image": str(path), "top_k": ranked})
        print(f"predict: {path}: {ranked[0]['label']} {ranked[0]['score']:.2f}", flush=True)
        return
    detections = [
        {"label": _label(labels, label),
         "score": round(float(score), 4),
         "x": float(box[1]), "y": float(box[0]), "x2": float(box[3]), "y2": float(box[2])}
        for box, score, label in zip(found["boxes"], found["scores"], found["classes"])
        if score >= min_score and box[2] > box[0] and box[3] > box[1]]  # zero-area boxes are no annotation
    annotations[name] = [{key: d[key] for key in ("x", "y", "x2", "y2", "label")} for d in detections]
    _draw(image, detections).save(out_dir / "boxed" / f"{Path(name).stem}.jpg")
    results.append({"image": str(path), "detections": detections})
    print(f"predict: {path}: {len(detections)} detections", flush=True)


def _most_uncertain(detect, images, min_score, top):
    """[(path, found, uncertainty)] of the TOP readable IMAGES the model is least sure about, most uncertain first
    (ties in path order); unreadable images follow, to be listed with their error."""
    scored, unreadable = [], []
    for path in images:
        try:
            image = np.asarray(_read_image(path))
        except (OSError, ValueError):
            unreadable.append((path, None, None))
            continue
        found = detect(image)
        scored.append((path, found, uncertainty(found, detect, image, min_score)))
    scored.sort(key=lambda item: (-item[2], str(item[0])))
    return scored[:top] + unreadable


def uncertainty(found, detect, image, min_score):
    """0 (sure) .. 1 (unsure). A classifier: 1 - the margin between its two best scores. A detector: the larger
    of its boxes near MIN_SCORE (each box counts 1 at MIN_SCORE, down to 0 half of MIN_SCORE away; n of them
    give 1 - e^-n: a box of a missed object or a false one) and how much it disagrees with itself on the
    horizontally flipped image (the share of boxes at or above MIN_SCORE that find no box of the same label
    at IoU 0.5 in the other)."""
    if "probs" in found:
        best = np.sort(found["probs"])[::-1]
        return float(1 - (best[0] - (best[1] if len(best) > 1 else 0.0)))
    window = min_score / 2
    near = float(np.sum(np.clip(1 - np.abs(np.asarray(found["scores"], float) - min_score) / window, 0, 1)))
    near = 1 - float(np.exp(-near))
    flipped = detect(np.ascontiguousarray(image[:, ::-1]))
    boxes = flipped["boxes"].copy()
    boxes[:, [1, 3]] = 1 - flipped["boxes"][:, [3, 1]]
    return max(near, _disagreement(found, {**flipped, "boxes": boxes}, min_score))


def _disagreement(first, second, min_score):
    """The share of FIRST's and SECOND's boxes at or above MIN_SCORE left unmatched by the other (greedy, same
    label, IoU >= 0.5)."""
    kept = [[(box, label) for box, score, label in zip(d["boxes"], d["scores"], d["classes"]) if score >= min_score]
            for d in (first, second)]
    unmatched = list(kept[1])
    matched = 0
    for box, label in kept[0]:
        match = next((i for i, other in enumerate(unmatched) if other[1] == label and iou(box, other[0]) >= IOU), None)
        if match is not None:
            del unmatched[match]  # by index: list.remove would compare the numpy boxes with ==
            matched += 1
    total = len(kept[0]) + len(kept[1])
    return (total - 2 * matched) / total if total else 0.0


def _without(images, buckets):
    """IMAGES whose bytes are not those of an image in one of BUCKETS (their _annotations.json keys)."""
    if not buckets:
        return images
    known = set()
    for bucket in map(Path, buckets):
        document = bucket / "_annotations.json"
        if not document.is_file():
            raise UserError(f"--exclude {bucket} is not a bucket: it has no _annotations.json")
        for key in json.loads(document.read_text()).get("annotations", {}):
            if (bucket / key).is_file():
                known.add(_md5(bucket / key))
    kept = [path for path in images if not (path.is_file() and _md5(path) in known)]
    if len(kept) < len(images):
        print(f"predict: left out {len(images) - len(kept)} images already in {', '.join(map(str, buckets))}",
              flush=True)
    return kept


def _md5(path):
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "md5").hexdigest()


def _refuse_overwrite(out_dir, images):
    """--out must not be where the images are, nor another bucket: predict writes images and _annotations.json."""
    out = out_dir.resolve()
    if any(path.resolve().parent == out for path in images):
        raise UserError(f"--out {out_dir} is the folder of the input images: predict copies each image and writes "
                        "_annotations.json there; choose another folder")
    if (out_dir / "_annotations.json").is_file() and not (out_dir / "detections.json").is_file():
        raise UserError(f"--out {out_dir} already holds an _annotations.json that predict did not write (a bucket?); "
                        "choose another folder")


def load_model(model_path, threads=None):
    """A function RGB uint8 image [H, W, 3] -> a detector's {"boxes" [n, 4] (ymin, xmin, ymax, xmax, 0..1),
    "scores", "classes" (label ids)}, or a classifier's {"probs" [classes]} (label ids from 0).

    MODEL_PATH is a SavedModel folder, a .tflite file (run with THREADS) or a run's RESULT_DIR (its SavedModel).
    Images are fed as apps feed each format: whole to the SavedModel, which resizes inside;
    stretched to the square input for TFLite, as the TFLite Task Library and MediaPipe do.
    """
    path = Path(model_path)
    if path.suffix == ".tflite" and path.is_file():
        return _tflite_detector(path, threads)
    saved_model = EXPORT_FORMATS[REFERENCE]
    for folder in (path, saved_model.path(path)):
        if (folder / "saved_model.pb").is_file():
            return _saved_model_detector(folder)
    raise UserError(f"{path} is not a SavedModel folder, a .tflite file or a RESULT_DIR with "
                    f"{saved_model.folder}/{saved_model.file}")


def _saved_model_detector(folder):
    import tensorflow as tf

    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]

    def detect(image):
        outputs = serve(tf.constant(image[None], tf.uint8))
        return _outputs({name: value.numpy()[0] for name, value in outputs.items()})

    return detect


def _tflite_detector(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    from trainer.export.common import stretch

    runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner()
    (name, spec), = runner.get_input_details().items()
    size = tuple(spec["shape"][1:3])

    def detect(image):
        outputs = runner(**{name: stretch(image, size)[None].astype(spec["dtype"])})
        return _outputs({key: value[0] for key, value in outputs.items()})

    return detect


def _outputs(outputs):
    """A classifier's probabilities, or a detector's detections cut to their count."""
    if "probs" in outputs:
        return {"probs": outputs["probs"]}
    count = int(outputs["num_detections"])
    return {"boxes": outputs["detection_boxes"][:count], "scores": outputs["detection_scores"][:count],
            "classes": outputs["detection_classes"][:count].astype(int)}


def _label(labels, label_id):
    if not 0 < label_id <= len(labels):
        raise UserError(f"the model predicted label id {label_id}, but its labels.json names only {len(labels)} labels")
    return labels[label_id - 1]


def _labels(path):
    """labels.json next to the model, or the run's data/labels.json."""
    candidates = [path / LABELS_FILE, RunDir(path).labels_json, path.parent / LABELS_FILE,
                  RunDir(path.parent.parent).labels_json]
    for candidate in candidates:
        if candidate.is_file():
            return read_labels(candidate)
    raise UserError(f"no labels.json next to {path} (looked in: {', '.join(map(str, candidates))})")


def _images(inputs):
    for item in map(Path, inputs):
        if item.is_dir():
            yield from sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield item


def _read_image(path):
    """The image as RGB, turned upright by its EXIF orientation as `trainer prepare` does."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError as err:
        raise ValueError("not an image Pillow can read") from err
    except Image.DecompressionBombError as err:  # a header declaring 200 Mpx: refused before decoding
        raise ValueError(f"too large to decode safely ({err})") from err
    except SyntaxError as err:  # Pillow's word for a broken PNG or GIF structure
        raise ValueError(f"broken image file ({err})") from err


def _draw(image, detections):
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    width, height = image.size
    line = max(2, round(min(width, height) / 200))
    for d in detections:
        box = (d["x"] * width, d["y"] * height, d["x2"] * width, d["y2"] * height)
        draw.rectangle(box, outline=(255, 0, 0), width=line)
        text = f"{d['label']} {d['score']:.2f}"
        left, top, right, bottom = draw.textbbox((box[0], box[1]), text)
        draw.rectangle((left, top, right + 2, bottom + 2), fill=(255, 0, 0))
        draw.text((box[0] + 1, box[1] + 1), text, fill=(255, 255, 255))
    return image


def _caption(image, best):
    """IMAGE with the classifier's top label and score written in its top-left corner."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    text = f"{best['label']} {best['score']:.2f}"
    left, top, right, bottom = draw.textbbox((2, 2), text)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(255, 0, 0))
    draw.text((2, 2), text, fill=(255, 255, 255))
    return image


def _free_name(written, path):
    """PATH's file name, numbered when two inputs share a stem: a bucket key whose stem names its preview."""
    name, number = path.name, 1
    while Path(name).stem.lower() in written:
        name, number = f"{path.stem}-{number}{path.suffix}", number + 1
    written.add(Path(name).stem.lower())
    return name


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="a SavedModel folder, a .tflite file, or a run's RESULT_DIR")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images, or folders of images")
    parser.add_argument("--out", required=True,
                        help="output folder, a Cloud Annotations bucket: the images, _annotations.json (detections "
                             ">= --min-score), boxed/ previews and detections.json (with scores)")
    parser.add_argument("--min-score", type=float, default=0.5,
                        help="drop detections scoring below this; a classifier's image gets its top label in "
                             "_annotations.json only at or above it (default 0.5)")
    parser.add_argument("--top-k", type=int, default=TOP_K,
                        help=f"a classifier's best labels per image in detections.json (default {TOP_K}, at most the "
                             "number of labels)")
    parser.add_argument("--rank", choices=["uncertainty"],
                        help="write only the --top images the model is least sure about, most uncertain first "
                             "(a classifier: a small margin between its two best scores; a detector: scores near "
                             "--min-score, or boxes that disagree with the horizontally flipped image's)")
    parser.add_argument("--top", type=int, metavar="K", help="with --rank: how many images (default 100)")
    parser.add_argument("--exclude", action="append", default=[], metavar="BUCKET",
                        help="leave out images whose bytes are in this bucket (e.g. the training bucket); repeatable")


def main(args):
    if args.top is not None and (args.top < 1 or not args.rank):
        raise UserError("--top K needs --rank uncertainty and K of at least 1")
    results = predict(args.model, args.inputs, args.out, min_score=args.min_score, top_k=args.top_k,
                      rank=args.rank, top=args.top or 100, exclude=args.exclude)
    errors = sum("error" in r for r in results)
    print(f"predict: {len(results) - errors} images, {errors} unreadable; wrote {Path(args.out) / '_annotations.json'} "
          f"and {Path(args.out) / 'detections.json'}")
    return 1 if errors and errors == len(results) else 0
