"""Record writing for prepare: tf.train.Example TFRecords, label files and the completeness marker.

Records are written with protobuf and google-crc32c rather than TensorFlow:
importing TensorFlow costs ~10 s and ~700 MB per process, more than verifying a
thousand images, and prepare then also runs where TensorFlow is absent.

RESULT_DIR may be a Cloud Storage FUSE mount, where directory renames are
refused or not atomic: files are written in place in data/, and report.json,
written last, is the marker that they are complete. Removing it is the first
thing a new run does, so a killed run never looks complete.
"""
import os
import struct

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_encoding

from trainer.run_dir import LABELS_FILE, Report, write_labels

PARTIAL_SUFFIX = ".partial"


def example_record(features):
    """One framed TFRecord holding a tf.train.Example; FEATURES maps a key to ("bytes" | "float" | "int64", values)."""
    example = _EXAMPLE()
    feature = example.features.feature
    for key, (kind, values) in features.items():
        getattr(feature[key], f"{kind}_list").value.extend(values)
    return _tfrecord(example.SerializeToString(deterministic=True))  # map keys sorted: the same bytes in every run


def detection_features(key, jpeg, size, boxes, source_id):
    """The keys Model Garden's TfExampleDecoder reads; BOXES are (x, y, x2, y2, label id, label name), normalised."""
    width, height = size
    return {
        **_image_features(key, jpeg, size, source_id),
        "image/object/bbox/xmin": ("float", [box[0] for box in boxes]),
        "image/object/bbox/ymin": ("float", [box[1] for box in boxes]),
        "image/object/bbox/xmax": ("float", [box[2] for box in boxes]),
        "image/object/bbox/ymax": ("float", [box[3] for box in boxes]),
        "image/object/area": ("float", [(box[2] - box[0]) * (box[3] - box[1]) * width * height for box in boxes]),
        "image/object/class/label": ("int64", [box[4] for box in boxes]),
        "image/object/class/text": ("bytes", [box[5].encode() for box in boxes]),
        "image/object/is_crowd": ("int64", [0] * len(boxes)),
    }


def classification_features(key, jpeg, size, label_id, label, source_id):
    """The keys Model Garden's image-classification decoder reads (image/encoded, image/class/label: 0-based)."""
    return {
        **_image_features(key, jpeg, size, source_id),
        "image/class/label": ("int64", [label_id]),
        "image/class/text": ("bytes", [label.encode()]),
    }


def _image_features(key, jpeg, size, source_id):
    """The keys both tasks' records share: the JPEG, its size, COCO evaluation's image id, the bucket key."""
    width, height = size
    return {
        "image/encoded": ("bytes", [jpeg]),
        "image/format": ("bytes", [b"jpeg"]),
        "image/height": ("int64", [height]),
        "image/width": ("int64", [width]),
        "image/source_id": ("bytes", [str(source_id).encode()]),
        "image/filename": ("bytes", [key.encode()]),
    }


def _tfrecord(payload):
    """PAYLOAD framed as one TFRecord: length, masked CRC32C of the length, payload, masked CRC32C of it."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", _masked_crc(length)) + payload + struct.pack("<I", _masked_crc(payload))


def _masked_crc(data):
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _example_message_class():
    """tf.train.Example declared from tensorflow/core/example/{feature,example}.proto (same wire format)."""
    proto = descriptor_pb2.FileDescriptorProto(name="trainer/tf_example.proto", package="tensorflow",
                                               syntax="proto3")
    field = descriptor_pb2.FieldDescriptorProto
    for name, value_type in (("BytesList", field.TYPE_BYTES), ("FloatList", field.TYPE_FLOAT),
                             ("Int64List", field.TYPE_INT64)):
        proto.message_type.add(name=name).field.add(name="value", number=1, type=value_type,
                                                    label=field.LABEL_REPEATED)
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in enumerate(("bytes_list", "float_list", "int64_list"), start=1):
        feature.field.add(name=name, number=number, type=field.TYPE_MESSAGE, oneof_index=0,
                          type_name=f".tensorflow.{name.title().replace('_', '')}", label=field.LABEL_OPTIONAL)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, type_name=".tensorflow.Feature",
                    label=field.LABEL_OPTIONAL)
    features.field.add(name="feature", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                       type_name=".tensorflow.Features.FeatureEntry")
    proto.message_type.add(name="Example").field.add(name="features", number=1, type=field.TYPE_MESSAGE,
                                                     type_name=".tensorflow.Features", label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()  # private: no clash with TensorFlow's own registration
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


_EXAMPLE = _example_message_class()


class ShardWriter:
    """Each split's records dealt round-robin over its shards, written as they come.

    The shard count is planned before the images are read (from file sizes);
    the record count is known only at the end, so shards are written under
    partial names and `finish` gives them their final names, dropping shards
    that got no record (never more shards than records). Renaming single files
    is safe on FUSE; only directory renames are not.
    """

    def __init__(self, directory, planned):
        self.directory = directory
        self.planned = planned                  # {split: shards}
        self.counts = {split: 0 for split in planned}
        self.handles = {}

    def write(self, split, record):
        shard = self.counts[split] % self.planned[split]
        self.counts[split] += 1
        handle = self.handles.get((split, shard))
        if handle is None:
            handle = self.handles[split, shard] = open(self._partial(split, shard), "wb")
        handle.write(record)

    def finish(self):
        """Close and name the shards; return {split: [file names]}."""
        self.close()
        files = {}
        for split, planned in self.planned.items():
            shards = min(planned, self.counts[split])
            files[split] = [f"{split}-{index:05d}-of-{shards:05d}.tfrecord" for index in range(shards)]
            for index, name in enumerate(files[split]):
                os.replace(self._partial(split, index), self.directory / name)
        return files

    def close(self):
        for handle in self.handles.values():
            handle.close()

    def _partial(self, split, shard):
        return self.directory / f".{split}-{shard:05d}{PARTIAL_SUFFIX}"


def write_label_files(run, labels, first_id=1):
    """labels.json (names in id order) and label_map.pbtxt (protobuf text format, names C-escaped) in RUN's data/.

    FIRST_ID: 1 for detectors (Model Garden's class 0 is background), 0 for classifiers.
    """
    write_labels(run.data, labels)
    items = [f'item {{\n  id: {number}\n  name: "{text_encoding.CEscape(name.encode(), as_utf8=False)}"\n}}\n'
             for number, name in enumerate(labels, start=first_id)]
    run.label_map.write_text("".join(items), encoding="ascii")


def complete_report(run, fingerprint):
    """RUN's marker report (a Report) when it was written for FINGERPRINT and its files are all there, else None."""
    report = Report.find(run)
    if report is None:
        return None
    names = [*report.record_files("train"), *report.record_files("val"), LABELS_FILE, run.label_map.name]
    if report.fingerprint == fingerprint and all((run.data / name).is_file() for name in names):
        return report
    return None


def clear_outputs(run):
    """Make RUN's data/ an empty output folder: the marker goes first, then every file an earlier run left."""
    run.data.mkdir(parents=True, exist_ok=True)
    run.report_json.unlink(missing_ok=True)
    for leftover in run.data.iterdir():
        if leftover.is_file() or leftover.is_symlink():
            leftover.unlink()
