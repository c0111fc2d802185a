"""Recognise PNG, JPEG, GIF and WebP bytes and read their pixel size.

A few header reads instead of an imaging library: the workers only need the
format and dimensions, never the pixels.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "gif": "gif", "webp": "webp"}

# JPEG start-of-frame markers carry the size; C4, C8 and CC are other segments.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Markers with no length field after them.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


@dataclass(frozen=True)
class ImageInfo:
    """What the bytes are: ``format`` is png, jpeg, gif or webp."""

    format: str
    width: int
    height: int

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def _png(data: bytes) -> Optional[tuple[int, int]]:
    if data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


def _gif(data: bytes) -> Optional[tuple[int, int]]:
    if len(data) < 10:
        return None
    return struct.unpack("<HH", data[6:10])


def _webp(data: bytes) -> Optional[tuple[int, int]]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _jpeg(data: bytes) -> Optional[tuple[int, int]]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:  # end of image, or scan data before any frame
            return None
        pos += 2 + length
    return None


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png", _png),
    (b"\xff\xd8\xff", "jpeg", _jpeg),
    (b"GIF87a", "gif", _gif),
    (b"GIF89a", "gif", _gif),
)


def sniff_image(data: bytes) -> Optional[ImageInfo]:
    """The format and size of image bytes, or None when they are not a PNG, JPEG, GIF or WebP.

    Parameters:
        data: the image file's bytes (the first few kilobytes are enough for
            all but JPEGs with large metadata segments).
    """
    for signature, name, reader in _SIGNATURES:
        if data.startswith(signature):
            break
    else:
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            name, reader = "webp", _webp
        else:
            return None
    size = reader(data)
    if not size or size[0] <= 0 or size[1] <= 0:
        return None
    return ImageInfo(name, int(size[0]), int(size[1]))
