"""Fuzz load_image: any bytes end in an upright RGB JPEG within its StoredSize, or one skip line; the file is unchanged."""
import hashlib
import io
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from trainer.images import EXIF_ORIENTATION, TURNED_ORIENTATIONS, StoredSize, load_image

from raw_exif import LONG, with_raw_exif

# Pillow warns about the corrupt EXIF and the bomb headers these cases are made of.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]
FUZZ = settings(derandomize=True, max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
MODES = {"JPEG": ["L", "RGB", "CMYK"], "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
         "GIF": ["P", "L"], "BMP": ["1", "L", "P", "RGB"], "WEBP": ["RGB", "RGBA"], "TIFF": ["F", "I", "RGB", "CMYK"]}
CARRIES_EXIF = {"JPEG", "PNG", "WEBP", "TIFF"}
SHORT_TAGS = [EXIF_ORIENTATION, 0x0128, 0x0213, 0xA001]  # Orientation, ResolutionUnit, YCbCrPositioning, ColorSpace


@st.composite
def images(draw):
    """(bytes of a valid image, its upright (width, height) or None when EXIF orientation is absent or ignored)."""
    image_format = draw(st.sampled_from(sorted(MODES)))
    mode = draw(st.sampled_from(MODES[image_format]))
    size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    pixels = draw(st.binary(min_size=size[0] * size[1] * 3, max_size=size[0] * size[1] * 3))
    try:
        image = Image.frombytes("RGB", size, pixels).convert(mode)
    except ValueError:  # a conversion Pillow lacks (RGB to I;16): a blank image of the mode
        image = Image.new(mode, size)
    params = {}
    orientation = draw(st.sampled_from([None, *range(0, 10)])) if image_format in CARRIES_EXIF else None
    if orientation is not None:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        params["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    data = buffer.getvalue()
    if image_format == "JPEG" and orientation is None and draw(st.booleans()):  # EXIF Pillow cannot write back
        data = with_raw_exif(data, draw(st.lists(st.tuples(st.sampled_from(SHORT_TAGS), st.just(LONG),
                                                           st.integers(65536, 2**32 - 1)), min_size=1, max_size=3)))
    turned = orientation in TURNED_ORIENTATIONS
    return data, (size[1], size[0]) if turned else size


def png_header(width, height):
    """A PNG signature and IHDR declaring WIDTH x HEIGHT RGB pixels (a decompression bomb's header), no data."""
    body = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))


def jpeg_header(width, height):
    """SOI and a baseline SOF0 declaring WIDTH x HEIGHT, then nothing."""
    return b"\xff\xd8\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"


@st.composite
def hostile(draw):
    kind = draw(st.sampled_from(["truncated", "truncated", "random", "valid head", "bomb", "flipped"]))
    data, _ = draw(images())
    if kind == "truncated":
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "valid head":
        return data[:draw(st.integers(0, len(data)))] + draw(st.binary(max_size=100))
    if kind == "flipped":
        index = draw(st.integers(0, len(data) - 1))
        return data[:index] + bytes([data[index] ^ draw(st.integers(1, 255))]) + data[index + 1:]
    side = draw(st.sampled_from([10_000, 20_000, 65_535, 100_000]))
    header = draw(st.sampled_from([png_header, jpeg_header]))
    if header is jpeg_header:
        side = min(side, 65_535)  # JPEG's limit
    return header(side, side) + draw(st.binary(max_size=64))


STORED_SIZES = st.sampled_from([StoredSize.longest(8), StoredSize.shortest(16), StoredSize(20, 33),
                                 StoredSize.longest(1024)])


def loaded(data, stored_size):
    """load_image on DATA written to a file: its result, checked to be a skip line or a valid upright RGB JPEG."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image"
        path.write_bytes(data)
        result = load_image(path, stored_size)
        assert path.read_bytes() == data
    if result.skip:
        assert isinstance(result.skip, str) and "\n" not in result.skip and result.jpeg is None
        return result
    assert result.digest == hashlib.md5(data).hexdigest() and result.source_bytes == len(data)
    with Image.open(io.BytesIO(result.jpeg)) as stored:
        assert stored.format == "JPEG" and stored.mode == "RGB" and stored.size == tuple(result.size)
        assert stored.getexif().get(EXIF_ORIENTATION) not in range(2, 9)  # nothing left to turn
        stored.load()
    assert min(result.size) <= stored_size.short and max(result.size) <= stored_size.long
    return result


@FUZZ
@given(images(), STORED_SIZES)
def test_valid_images_of_any_mode_and_orientation_come_out_upright(image, stored_size):
    data, upright = image
    result = loaded(data, stored_size)
    assert not result.skip
    assert tuple(result.size) == stored_size.fitted(*upright)  # upright, then fitted


@FUZZ
@given(hostile(), STORED_SIZES)
def test_broken_random_and_bomb_images_end_in_a_skip_line_or_a_valid_image(data, stored_size):
    loaded(data, stored_size)

