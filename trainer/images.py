"""Image checks and repairs for prepare: one read and one decode per image, in a pool of processes.

`load_image` fully decodes an image (a truncated JPEG would otherwise crash
training hours later) and returns the bytes to store: the source bytes when the
image is already an upright RGB JPEG within its StoredSize, else an upright RGB
JPEG re-encoded from that same decode. Detection and classification records
both store what it returns.
"""
import hashlib
import io
import multiprocessing
import os
import re
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
# A shorter-side limit caps the longer side at this many times it: photos up to 2:1 (4:3, 16:9) keep
# the whole shorter side; a panorama is stored smaller rather than as a record of hundreds of MB.
FULL_DETAIL_ASPECT = 2
DOWNSCALED = "downscaled: {}x{} to {}x{}"  # a repair's reason in report.json: source and stored (width, height)
EXIF_DROPPED = "EXIF not kept: Pillow cannot write its tags back (the bucket's image keeps them)"


@dataclass(frozen=True)
class StoredSize:
    """The largest size prepare stores an image at: scaled down (never up) until its shorter side is at most
    SHORT pixels and its longer side at most LONG, keeping its aspect ratio.

    A model's need (tasks' `stored_size`) is the detail its strongest augmentation reads.
    """
    short: int
    long: int

    @classmethod
    def longest(cls, side):
        """The longer side at most SIDE (`prepare --max-side SIDE`)."""
        return cls(side, side)

    @classmethod
    def shortest(cls, side):
        """The shorter side at most SIDE (up to FULL_DETAIL_ASPECT)."""
        return cls(side, FULL_DETAIL_ASPECT * side)

    def fitted(self, width, height):
        """(width, height) scaled down to fit these limits; unchanged when they already do."""
        scale = min(self.short / min(width, height), self.long / max(width, height))
        if scale >= 1:
            return width, height
        return max(1, round(width * scale)), max(1, round(height * scale))

    def describe(self):
        return f"shorter side at most {self.short} px, longer side at most {self.long} px"


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


def load_image(path, stored_size):
    """Read and decode the image at PATH once; a LoadedImage with the JPEG to store (within STORED_SIZE, a
    StoredSize), or the reason to skip it."""
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
            result.changes, result.size = _needed_changes(image, stored_size)
            if result.changes:
                result.jpeg, exif_kept = _upright_rgb_jpeg(image, result.size)
                if not exif_kept:
                    result.changes.append(EXIF_DROPPED)
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


def _needed_changes(image, stored_size):
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
    size = stored_size.fitted(width, height)
    if size != (width, height):
        changes.append(DOWNSCALED.format(width, height, *size))
    return changes, size


def downscaled(repaired):
    """[(image key, source (width, height), stored (width, height))] of the images REPAIRED (report.json's
    `repaired`) lists as downscaled."""
    pattern = re.compile(re.escape(DOWNSCALED).replace(r"\{\}", r"(\d+)"))
    found = []
    for issue in repaired:
        match = pattern.fullmatch(issue["reason"])
        if match:
            width, height, stored_width, stored_height = map(int, match.groups())
            found.append((issue["image"], (width, height), (stored_width, stored_height)))
    return found


def _orientation(image):
    """The EXIF orientation (2..8) that needs a transpose, else None (1, absent, or out of range)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION)
    except (OSError, SyntaxError, ValueError, struct.error):
        return None
    return orientation if orientation in range(2, 9) else None


def _upright_rgb_jpeg(source, size):
    """(SOURCE re-encoded as an upright RGB JPEG of SIZE, whether its EXIF was kept): its EXIF (orientation reset) and
    RGB colour profile are kept, unless Pillow cannot write that EXIF back (e.g. a SHORT tag holding 65537)."""
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
    try:
        exif = image.getexif().tobytes()
    except (struct.error, TypeError, ValueError):
        exif = b""
    output = io.BytesIO()
    image.save(output, "JPEG", quality=JPEG_QUALITY, exif=exif, icc_profile=icc_profile)
    return output.getvalue(), bool(exif)


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
