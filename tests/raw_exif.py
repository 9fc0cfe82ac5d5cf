"""JPEGs carrying EXIF that Pillow reads but refuses to write, as cameras and editors sometimes leave them."""
import struct

LONG = 4  # TIFF field type: SHORT tags holding LONG values are what Pillow cannot write back


def with_raw_exif(data, entries):
    """JPEG DATA with an EXIF segment of ENTRIES [(tag, TIFF type, value)], written byte by byte: Pillow itself
    refuses to write what kangaroo's 00103.jpg carries (a LONG 65537 as Orientation)."""
    ifd = (struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", tag, kind, 1, value)
                                                       for tag, kind, value in entries) + struct.pack("<I", 0))
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(tiff) + 8) + b"Exif\x00\x00" + tiff + data[2:]
