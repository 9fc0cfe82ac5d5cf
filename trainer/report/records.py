"""The split's records as the report draws them, and the image grids drawn from them."""
import io

from trainer.run_dir import RunDir

SAMPLE_IMAGES = 12   # images in each grid
TILE = 192           # grid tile side in pixels
GT_COLOUR, PREDICTION_COLOUR = (0, 200, 0), (230, 30, 30)


def read_records(result_dir, split, keep_jpeg=lambda index, record: False):
    """[{"id", "filename", "width", "height", "jpeg", "boxes": [(x, y, w, h, label_id) in pixels]}] of a split.

    "jpeg" is None but where KEEP_JPEG(index in the split, record) says to keep it: the
    report draws a few dozen images, and holding every record's JPEG (this runs inside
    the training process after each evaluation) grew its memory with the dataset.
    A classifier's record has one "box", the whole image, with its label's id + 1 (the
    1-based ids the drawings use), so its label is drawn as a frame.
    """
    import tensorflow as tf

    records = []
    for path in RunDir(result_dir).records(split):
        for raw in tf.data.TFRecordDataset(str(path)):
            feature = tf.train.Example.FromString(raw.numpy()).features.feature
            width = feature["image/width"].int64_list.value[0]
            height = feature["image/height"].int64_list.value[0]
            corners = [feature[f"image/object/bbox/{key}"].float_list.value for key in ("xmin", "ymin", "xmax", "ymax")]
            boxes = [(x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height, label)
                     for x1, y1, x2, y2, label in zip(*corners, feature["image/object/class/label"].int64_list.value)]
            boxes += [(0, 0, width, height, label + 1) for label in feature["image/class/label"].int64_list.value]
            record = {"id": int(feature["image/source_id"].bytes_list.value[0]),
                      "filename": feature["image/filename"].bytes_list.value[0].decode(),
                      "width": width, "height": height, "boxes": boxes, "jpeg": None}
            if keep_jpeg(len(records), record):
                record["jpeg"] = feature["image/encoded"].bytes_list.value[0]
            records.append(record)
    return records


def add_jpegs(result_dir, records, ids):
    """Read the splits again for the JPEGs of IDS (the images drawn) into RECORDS ({id: record})."""
    for split in ("val", "train"):
        for record in read_records(result_dir, split, lambda _, record: record["id"] in ids):
            if record["jpeg"] is not None:
                records[record["id"]]["jpeg"] = record["jpeg"]


def image_grid(items, labels):
    """One PNG of tiles: each item (record, ground-truth boxes, predicted boxes) drawn on its image."""
    from PIL import Image, ImageDraw

    columns = 4
    rows = max((len(items) + columns - 1) // columns, 1)
    grid = Image.new("RGB", (columns * TILE, rows * TILE), "white")
    for index, (record, truth, predicted) in enumerate(items):
        image = Image.open(io.BytesIO(record["jpeg"])).convert("RGB")
        scale = TILE / max(image.size)
        image = image.resize((max(int(image.width * scale), 1), max(int(image.height * scale), 1)))
        draw = ImageDraw.Draw(image)
        for boxes, colour in ((truth, GT_COLOUR), (predicted, PREDICTION_COLOUR)):
            for x, y, w, h, label_id, *score in boxes:
                draw.rectangle([x * scale, y * scale, (x + w) * scale, (y + h) * scale], outline=colour, width=2)
                name = labels[label_id - 1] if 0 < label_id <= len(labels) else str(label_id)
                draw.text((x * scale + 2, y * scale + 1), name + (f" {score[0]:.2f}" if score else ""), fill=colour)
        grid.paste(image, ((index % columns) * TILE, (index // columns) * TILE))
    return grid
