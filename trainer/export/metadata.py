"""TFLite Model Metadata inside model.tflite, so MediaPipe Tasks (ObjectDetector, ImageClassifier) load it as is.

A model with metadata is the model flatbuffer with a `metadata` entry "TFLITE_METADATA"
pointing at a buffer that holds a ModelMetadata flatbuffer (file identifier "M001"), and
the associated files (the labels) in an uncompressed zip appended to the file. The
buffer is built here with `flatbuffers` alone, field by field in the slot order of
metadata_schema.fbs (TensorFlow Lite / MediaPipe, Apache-2.0, schema 1.5.0), as
tflite-support's writer (protobuf < 4) and MediaPipe's (not importable from its Linux
wheel) cannot run beside our pins. Only fields of schema 1.0.0 are used, hence
MIN_PARSER_VERSION. Each task's output tensors are described by its serving module
(serving/, `metadata_outputs`) with the builders here: `tensor`, `content`, `table`.
"""
import io
import zipfile

from trainer import tasks

MIN_PARSER_VERSION = "1.0.0"  # every field written here exists since schema 1.0.0 (the .fbs's History)
IDENTIFIER = b"M001"
NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
# An exported detector's label ids count from 1 (the SavedModel's, data/labels.json's N-th
# entry): line 0 of its TENSOR_VALUE_LABELS file stands for id 0, which it never returns.
BACKGROUND = "background"

# Enum values of metadata_schema.fbs.
_RGB = 1
TENSOR_AXIS_LABELS, TENSOR_VALUE_LABELS = 2, 3
FEATURE_PROPERTIES, IMAGE_PROPERTIES, BOUNDING_BOX_PROPERTIES = 1, 2, 3  # ContentProperties union
_NORMALIZATION_OPTIONS, _SCORE_THRESHOLDING_OPTIONS = 1, 3                  # ProcessUnitOptions union
BOUNDARIES = 1  # BoundingBoxType; CoordinateType RATIO is 0, the default


def add(model, serving, labels, input_size, score_threshold):
    """MODEL (TFLite flatbuffer bytes) with metadata for LABELS and the outputs of SERVING (the task's serving
    module, trainer.export.serving): its task's serving outputs, in the order the metadata describes them.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    _order_outputs(tree, tasks.get(serving.NAME).SERVING_OUTPUTS)
    lines = label_lines(serving.NAME, labels)
    buffer = schema.BufferT()
    buffer.data = bytearray(build(serving, lines, input_size, score_threshold))
    tree.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = NAME
    entry.buffer = len(tree.buffers) - 1
    tree.metadata = [m for m in (tree.metadata or []) if _text(m.name) != NAME] + [entry]
    out = io.BytesIO(flatbuffer_utils.convert_object_to_bytearray(tree))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:  # offsets from the file's start
        archive.writestr(zipfile.ZipInfo(LABELS_FILE, (1980, 1, 1, 0, 0, 0)), "\n".join(lines) + "\n")
    return out.getvalue()


def label_lines(task_name, labels):
    """labels.txt's lines: a detector's label ids count from 1, so line 0 stands for the id it never returns."""
    return [BACKGROUND, *labels] if tasks.get(task_name).FIRST_LABEL_ID else list(labels)


def _order_outputs(tree, names):
    """The subgraph's outputs put in the signature's order NAMES, the order the metadata describes (the converter
    lists them in its own order; the signature, which LiteRT's runner uses, maps names to tensors either way)."""
    if len(tree.subgraphs) != 1 or not tree.signatureDefs:
        raise RuntimeError("a TFLite model for MediaPipe needs one subgraph with a signature")
    by_name = {_text(m.name): m.tensorIndex for m in tree.signatureDefs[0].outputs}
    if sorted(by_name) != sorted(names) or sorted(tree.subgraphs[0].outputs) != sorted(by_name.values()):
        raise RuntimeError(f"the TFLite model's outputs are {sorted(by_name)}, not {', '.join(names)}")
    tree.subgraphs[0].outputs = [by_name[name] for name in names]


def _text(name):
    return name.decode() if isinstance(name, bytes) else name


def build(serving, lines, input_size, score_threshold):
    """The ModelMetadata flatbuffer: the image input, and the outputs SERVING (the task's serving module) describes."""
    import flatbuffers

    b = flatbuffers.Builder(1024)
    height, width = input_size
    image = tensor(b, "image", "RGB image, uint8 0..255, stretched to the input size (the model normalises inside)",
                   content=content(b, IMAGE_PROPERTIES, table(b, [
                       ("int8", _RGB), ("offset", table(b, [("uint32", width), ("uint32", height)]))])),
                   process_units=[_process_unit(b, _NORMALIZATION_OPTIONS, table(b, [
                       ("offset", _floats(b, [0.0])), ("offset", _floats(b, [1.0]))]))],
                   stats=(255.0, 0.0))
    threshold = _process_unit(b, _SCORE_THRESHOLDING_OPTIONS, table(b, [("float32", score_threshold)]))
    outputs = serving.metadata_outputs(b, threshold)
    subgraph = table(b, [("offset", b.CreateString("image_" + serving.NAME)), None,
                         ("offset", _offsets(b, [image])), ("offset", _offsets(b, outputs))])
    root = table(b, [("offset", b.CreateString(f"image {serving.NAME}")),
                     ("offset", b.CreateString("Cloud Annotations trainer export")), None,
                     ("offset", _offsets(b, [subgraph])), None, None, None,
                     ("offset", b.CreateString(MIN_PARSER_VERSION))])
    b.Finish(root, file_identifier=IDENTIFIER)
    return bytes(b.Output())


def tensor(b, name, description, content=None, process_units=(), stats=None, associated_files=()):
    """A TensorMetadata: name, description, dimension_names (unset), content, process_units, stats, files."""
    fields = [("offset", b.CreateString(name)), ("offset", b.CreateString(description)), None,
              ("offset", content) if content else None,
              ("offset", _offsets(b, list(process_units))) if process_units else None,
              ("offset", table(b, [("offset", _floats(b, [stats[0]])), ("offset", _floats(b, [stats[1]]))]))
              if stats else None,
              ("offset", _offsets(b, list(associated_files))) if associated_files else None]
    return table(b, fields)


def content(b, kind, properties, value_range=None):
    """A Content: the ContentProperties union (type, value) and the optional ValueRange (min, max)."""
    extent = ("offset", table(b, [("int32", value_range[0]), ("int32", value_range[1])])) if value_range else None
    return table(b, [("uint8", kind), ("offset", properties), extent])


def _process_unit(b, kind, options):
    return table(b, [("uint8", kind), ("offset", options)])


def labels_file(b, kind):
    return table(b, [("offset", b.CreateString(LABELS_FILE)), ("offset", b.CreateString("labels, one a line")),
                      ("int8", kind)])


def table(b, fields):
    """A table from FIELDS in slot order: (kind, value) or None for an unset slot; values already built."""
    b.StartObject(len(fields))
    for slot, field in enumerate(fields):
        if field is None:
            continue
        kind, value = field
        if kind == "offset":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        else:  # written even when it equals the schema's default
            {"int8": b.PrependInt8, "uint8": b.PrependUint8, "uint32": b.PrependUint32, "int32": b.PrependInt32,
             "float32": b.PrependFloat32}[kind](value)
            b.Slot(slot)
    return b.EndObject()


def _offsets(b, offsets):
    return _vector(b, offsets, b.PrependUOffsetTRelative)


def _floats(b, values):
    return _vector(b, values, b.PrependFloat32)


def uints(b, values):
    return _vector(b, values, b.PrependUint32)


def _vector(b, values, prepend):
    """A flatbuffers vector of 4-byte VALUES, each written by PREPEND (built back to front)."""
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        prepend(value)
    return b.EndVector()
