"""Fuzz: the streamed reader gives parse_annotations' exact result or message, for valid-ish and hostile files."""
import codecs
import hashlib
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.annotations import parse_annotations, read_annotations
from trainer.errors import UserError

FUZZ = settings(derandomize=True, max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


class Pairs(list):
    """A JSON object written pair by pair, so that a key can repeat."""


def dump(value, ascii):
    """VALUE as JSON text; \\uXXXX escapes for all but ASCII when ASCII, as Python's json writes by default."""
    if isinstance(value, Pairs):
        return "{" + ",".join(f"{json.dumps(key, ensure_ascii=ascii)}:{dump(item, ascii)}" for key, item in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(item, ascii) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii)  # NaN and Infinity come out as json writes them


def objects(keys, values, max_size=5):
    """A JSON object as pairs, now and then with a key repeated."""
    return st.lists(st.tuples(keys, values), max_size=max_size).flatmap(
        lambda pairs: st.sampled_from([Pairs(pairs)] * 5 + [Pairs(pairs + pairs[:1])]))


LABELS = st.one_of(st.sampled_from(["cat", " dog ", "$money", 'say "hi"', "猫", "e\u0301", "é", "", "  ", "😀",
                                    "\ud800", "\\u0000"]),
                   st.text(max_size=6), st.integers(), st.none(), st.lists(st.integers(), max_size=2))
NUMBERS = st.one_of(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5), st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(-2, 2), st.integers(-2**62, 2**62),
                    st.sampled_from([10**30, 1e308, -0.0, 5e-324, float("nan"), float("inf")]))
COORDINATES = st.one_of(NUMBERS, NUMBERS, NUMBERS, NUMBERS.map(str), st.none(), st.booleans(),
                        st.lists(NUMBERS, max_size=2), st.dictionaries(st.text(max_size=2), NUMBERS, max_size=1))
BOXES = objects(st.sampled_from(["x", "y", "x2", "y2", "label", "x", "y", "x2", "y2", "label", "other"]),
                st.one_of(COORDINATES, LABELS), max_size=7)
ENTRIES = st.one_of(st.lists(st.one_of(BOXES, BOXES, BOXES, st.integers(), st.text(max_size=3), st.none()),
                             max_size=4),
                    BOXES, st.text(max_size=3), st.none(), st.integers())
KEYS = st.one_of(st.sampled_from(["a.jpg", "b.png", "../up.jpg", "a/../../b.jpg", "/abs.jpg", "C:\\win.jpg", "",
                                  "nul\u0000.jpg", "$x.jpg", 'q"k.jpg', "猫/写真.jpg", "annotations", "a.b.c",
                                  "\ud800.jpg"]),
                 st.text(max_size=6))
DEEP = st.integers(1, 40).map(lambda depth: json.loads("[" * depth + "]" * depth))
ANNOTATIONS = st.one_of(objects(KEYS, ENTRIES, max_size=6), objects(KEYS, ENTRIES, max_size=6),
                        st.lists(ENTRIES, max_size=2), st.none(), st.text(max_size=3), DEEP)
HEADER = {"version": st.sampled_from(["1.0", "1.0", 1.0, "2.0", 1, None, [1], {"v": 1}]),
          "type": st.sampled_from(["localization", "classification", "localization", "segmentation", None, ["x"],
                                   {"a": 1}, 3]),
          "labels": st.one_of(st.lists(LABELS, max_size=4), st.text(max_size=3), st.none(), st.integers(), DEEP),
          "annotations": ANNOTATIONS,
          "extra": st.one_of(ANNOTATIONS, DEEP),
          # ijson gives a key "" the prefix of the document itself
          "": objects(st.sampled_from(["version", "type", "labels", "annotations", ""]),
                      st.one_of(st.sampled_from(["2.0", "classification"]), ANNOTATIONS))}
# Any top-level keys, repeated or missing, with any values: mostly whole-file errors.
HOSTILE = st.lists(st.sampled_from(sorted(HEADER) + ["annotations", "version", "type"]), max_size=7).flatmap(
    lambda keys: st.tuples(*(st.tuples(st.just(key), HEADER[key]) for key in keys)).map(Pairs))
# A usable header in any order, sometimes with extra keys: the entries decide.
VALID_ISH = st.tuples(
    st.tuples(st.just("version"), st.sampled_from(["1.0", 1.0])),
    st.tuples(st.just("type"), st.sampled_from(["localization", "classification"])),
    st.tuples(st.just("labels"), st.lists(LABELS, max_size=4)),
    st.tuples(st.just("annotations"), objects(KEYS, ENTRIES, max_size=8)),
    st.lists(st.sampled_from(["extra", "labels", "type", ""]).flatmap(lambda key: st.tuples(st.just(key), HEADER[key])),
             max_size=1),
).flatmap(lambda parts: st.permutations([*parts[:4], *parts[4]])).map(Pairs)
# How the document reaches the disk: as tools write it, or damaged.
ENCODINGS = ["utf-8"] * 4 + ["ascii"] * 4 + ["indent", "bom", "utf-16", "latin-1", "truncate", "garbage", "flip",
                                             "nan", "overflow"]


@st.composite
def files(draw):
    kind = draw(st.sampled_from(["valid-ish"] * 6 + ["hostile"] * 2 + ["not an object"]))
    document = draw({"valid-ish": VALID_ISH, "hostile": HOSTILE, "not an object": st.one_of(LABELS, ANNOTATIONS)}[kind])
    encoding = draw(st.sampled_from(ENCODINGS))
    text = dump(document, ascii=encoding == "ascii")
    if encoding == "indent":
        text = text.replace(",", ",\n  ").replace(":", ": ")
    raw = text.encode("utf-8", "surrogatepass")
    if encoding == "bom":
        raw = codecs.BOM_UTF8 + raw
    elif encoding in ("utf-16", "latin-1"):
        raw = text.encode(encoding, "surrogatepass" if encoding == "utf-16" else "replace")
    elif encoding == "truncate" and raw:
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif encoding == "garbage":
        raw += draw(st.binary(min_size=1, max_size=4))
    elif encoding == "flip" and raw:
        index = draw(st.integers(0, len(raw) - 1))
        raw = raw[:index] + bytes([draw(st.integers(0, 255))]) + raw[index + 1:]
    elif encoding == "nan":
        raw = raw.replace(b"0.", b"NaN", 1)
    elif encoding == "overflow":
        raw = raw.replace(b"1", b"1e400", 1)
    return raw


def outcome(parse):
    """The parse's result, or its UserError's message (which must be one line)."""
    try:
        return parse()
    except UserError as err:
        assert "\n" not in str(err)
        return f"UserError: {err}"


def check_same(raw):
    """read_annotations(file) == parse_annotations(bytes), the digest is the file's sha256, the file is unchanged."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "_annotations.json"
        path.write_bytes(raw)
        streamed = outcome(lambda: read_annotations(path))
        assert path.read_bytes() == raw
    whole = outcome(lambda: parse_annotations(raw))
    if isinstance(whole, str):
        assert streamed == whole
    else:
        assert streamed == (whole, hashlib.sha256(raw).hexdigest())
    return whole


@FUZZ
@given(files())
def test_the_stream_gives_json_loads_result_or_message(raw):
    check_same(raw)


@settings(derandomize=True, max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=64) | st.binary(max_size=8).map(lambda tail: b'{"version": "1.0", "annotations": {' + tail))
def test_random_bytes_end_in_a_result_or_one_line(raw):
    check_same(raw)


def test_hostile_nesting_is_one_line_not_a_traceback_or_a_memory_blowup():
    """ijson keeps the path of each open level (N^2 memory): 100,000 levels would take ~25 GB."""
    deep = b'{"version": "1.0", "annotations": {"a.jpg": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    assert check_same(deep) == "UserError: _annotations.json is not valid JSON: nested deeper than 512 levels"
    label = json.dumps({"version": "1.0", "labels": [json.loads("[" * 600 + "]" * 600)], "annotations": {}})
    assert check_same(label.encode()).labels == ["[" * 600 + "]" * 600]


def test_white_space_yajl_reads_and_json_refuses_gives_jsons_message():
    """Found by the fuzz: a vertical tab after the document, or a form feed between tokens."""
    for raw in (b'{"version":"1.0","type":"localization","labels":[],"annotations":{}}\x0b',
                b'{"version":"1.0",\x0c"annotations":{}}'):
        assert check_same(raw).startswith("UserError: _annotations.json is not valid JSON: ")


def test_a_large_file_streams_to_the_same_result():
    annotations = {f"img/{index:06d}.jpg": [{"x": 0.1, "y": 0.2, "x2": 0.5 + index % 7 / 20, "y2": 1.2,
                                             "label": ["cat", "dog", "猫"][index % 3]}] * (index % 4)
                   for index in range(30_000)}
    raw = json.dumps({"annotations": annotations, "version": "1.0", "labels": ["cat"]}, indent=1).encode()
    parsed = check_same(raw)
    assert len(parsed.images) == 30_000 and len(parsed.issues) == 45_000  # 1.5 clipped boxes an image


def test_a_key_named_like_the_document_or_a_header_key_inside_other_values_changes_nothing():
    """ijson gives the value of a top-level key "" the document's own prefix."""
    raw = json.dumps({"version": "1.0", "annotations": {"a.jpg": [], "b.jpg": {"annotations": {}}},
                      "extra": {"version": 3, "annotations": 4}, "": {"type": "classification", "": {"x": 1}}}).encode()
    parsed = check_same(raw)
    assert parsed.task == "detection" and [image.key for image in parsed.images] == ["a.jpg"]
