"""Image checks and repairs for prepare: one read and one decode per image, in a pool of processes.

`load_image` fully decodes an image (a truncated JPEG would otherwise crash
training hours later) and returns the bytes to store: the source bytes when the
image is already an upright RGB JPEG within `max_side`, else an upright RGB
JPEG re-encoded from that same decode. Detection and classification records
both store what it returns.
"""
import hashlib
import io
import multiprocessing
import os
import struct
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from trainer import console

JPEG_QUALITY = 95
EXIF_ORIENTATION = 0x0112
TURNED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
ORIENTED_BY_PILLOW = {"TIFF"}       # formats whose Pillow plugin turns the image itself: its size is already upright
POOL_MIN_IMAGES = 64          # below this, starting worker processes costs more than it saves
POOL_WINDOW = 256             # images handed to the workers at a time
POOL_CHUNK = 8                # images per message to a worker


@dataclass(slots=True)
class LoadedImage:
    """One image as it will be stored, or why it is skipped.

    digest: MD5 of the source bytes (hex), the content identity behind the split
    and the duplicate check; MD5 because Cloud Storage lists it for every object,
    so `cloud submit` sees the same identities without downloading.
    """
    skip: str = None
    changes: list = field(default_factory=list)
    digest: str = None
    source_bytes: int = 0
    size: tuple = None        # (width, height) as stored
    jpeg: bytes = None        # the bytes to store


def load_image(path, max_side):
    """Read and decode the image at PATH once; a LoadedImage with the JPEG to store, or the reason to skip it."""
    result = LoadedImage()
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        result.skip = "missing file: not found in DATA_DIR"
        return result
    except OSError as err:
        result.skip = f"unreadable file: {err.strerror or err}"
        return result
    result.digest, result.source_bytes = hashlib.md5(data).hexdigest(), len(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            result.changes, result.size = _needed_changes(image, max_side)
            if result.changes:
                result.jpeg = _upright_rgb_jpeg(image, result.size)
            else:
                # Draft mode decodes at 1/8 scale: the whole entropy-coded stream is still
                # read, so truncation and corruption are caught at about half the cost.
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
                result.jpeg = data
    except UnidentifiedImageError:  # its message holds a memory address: not reproducible
        return LoadedImage(skip="unreadable image: not an image format Pillow can read")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return LoadedImage(skip=f"unreadable image: {err or type(err).__name__}")
    return result


def _needed_changes(image, max_side):
    """(changes, stored (width, height)) for an opened, not yet decoded IMAGE."""
    changes = []
    width, height = image.size
    if image.format != "JPEG" or image.mode != "RGB":
        changes.append(f"converted: {image.format} {image.mode} to RGB JPEG")
    orientation = _orientation(image)
    if orientation:
        changes.append(f"rotated: EXIF orientation {orientation}")
        if orientation in TURNED_ORIENTATIONS and image.format not in ORIENTED_BY_PILLOW:
            width, height = height, width
    size = fitted_size(width, height, max_side)
    if size != (width, height):
        changes.append(f"downscaled: {width}x{height} to {size[0]}x{size[1]}")
    return changes, size


def _orientation(image):
    """The EXIF orientation (2..8) that needs a transpose, else None (1, absent, or out of range)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION)
    except (OSError, SyntaxError, ValueError, struct.error):
        return None
    return orientation if orientation in range(2, 9) else None


def fitted_size(width, height, max_side):
    """(width, height) scaled down so that the longer side is at most MAX_SIDE."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    return max(1, round(width * max_side / longest)), max(1, round(height * max_side / longest))


def _upright_rgb_jpeg(source, size):
    """SOURCE re-encoded as an upright RGB JPEG of SIZE, keeping its EXIF (orientation reset) and RGB colour profile."""
    icc_profile = source.info.get("icc_profile") if source.mode == "RGB" else None
    if source.format == "JPEG":  # decode at the smallest DCT scale still >= SIZE: a 12 MP photo decodes 4x faster
        turned = (source.width >= source.height) != (size[0] >= size[1])
        source.draft(source.mode, (size[1], size[0]) if turned else tuple(size))
    image = ImageOps.exif_transpose(source)
    if image.mode != "RGB":
        if image.has_transparency_data:
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, "white")
            image.paste(rgba, mask=rgba.getchannel("A"))
        else:
            image = image.convert("RGB")
    if image.size != tuple(size):
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    output = io.BytesIO()
    image.save(output, "JPEG", quality=JPEG_QUALITY, exif=image.getexif(), icc_profile=icc_profile)
    return output.getvalue()


def map_images(function, tasks, description):
    """Yield FUNCTION(task) for TASKS in order, on every CPU core when there are enough, with a progress bar.

    At most two windows of results wait in memory, however far the workers run
    ahead of the writer: memory stays flat with the number of images.
    """
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # macOS
    progress = tqdm(total=len(tasks), desc=f"prepare: {description}", unit="img", file=console.stream(), mininterval=1)
    with progress:
        if workers < 2 or len(tasks) < POOL_MIN_IMAGES:
            yield from _counted(map(function, tasks), progress)
            return
        # spawn, not fork: the caller may have imported TensorFlow, whose threads do not survive fork
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            windows = deque()
            for start in range(0, len(tasks), POOL_WINDOW):
                windows.append(pool.map(function, tasks[start:start + POOL_WINDOW], chunksize=POOL_CHUNK))
                if len(windows) == 2:
                    yield from _counted(windows.popleft(), progress)
            while windows:
                yield from _counted(windows.popleft(), progress)


def _counted(results, progress):
    for result in results:
        progress.update()
        yield result
