"""Dataset formats, in and out of a Cloud Annotations bucket (model formats are trainer/export/).

`import_dataset`: `python -m trainer import`, a COCO, Pascal VOC, YOLO or Open Images
dataset (one reader module each: coco, voc, yolo, openimages) written as a bucket by
`bucket.write_bucket`. `export_annotations`: `python -m trainer export-annotations`, a
bucket's boxes as COCO instances JSON.
"""
