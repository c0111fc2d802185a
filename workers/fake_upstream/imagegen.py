"""Small, valid PNG and JPEG files made in code, so the sample data needs no binaries.

The PNG is a solid RGB colour.  The JPEG is a baseline greyscale image of one
grey level: every 8x8 block has the same DC coefficient and no AC
coefficients, which a two-code Huffman table encodes in a few bits per block.
"""

from __future__ import annotations

import struct
import zlib


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bytes(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour 8-bit RGB PNG.

    Parameters:
        width, height: pixels (1 to 4096).
        rgb: the colour, three 0-255 values.
    """
    row = b"\x00" + bytes(rgb) * width  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * height, 9))
        + _png_chunk(b"IEND", b"")
    )


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _huffman_table(table_class_and_id: int, symbols: list[int]) -> bytes:
    """A DHT segment giving every symbol a code of the same length (1 or 2 bits)."""
    counts = [0] * 16
    counts[len(symbols) - 1] = len(symbols)
    return _segment(0xC4, bytes([table_class_and_id, *counts, *symbols]))


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.bits = 0
        self.count = 0

    def write(self, value: int, length: int) -> None:
        for shift in range(length - 1, -1, -1):
            self.bits = (self.bits << 1) | ((value >> shift) & 1)
            self.count += 1
            if self.count == 8:
                self._emit()

    def _emit(self) -> None:
        self.out.append(self.bits)
        if self.bits == 0xFF:
            self.out.append(0x00)  # byte stuffing inside entropy-coded data
        self.bits = self.count = 0

    def finish(self) -> bytes:
        if self.count:
            self.write((1 << (8 - self.count)) - 1, 8 - self.count)  # pad with one-bits
        return bytes(self.out)


def jpeg_bytes(width: int, height: int, gray: int = 128) -> bytes:
    """A baseline greyscale JPEG of a single grey level.

    Parameters:
        width, height: pixels (1 to 65535).
        gray: the level, 0-255.
    """
    dc = 8 * (max(0, min(255, gray)) - 128)  # DC of a flat block, quantiser 1
    category = abs(dc).bit_length()
    dc_symbols = [0, category] if category else [0]
    code_length = len(dc_symbols)
    blocks = ((width + 7) // 8) * ((height + 7) // 8)

    bits = _BitWriter()
    for index in range(blocks):
        if index == 0 and category:
            bits.write(1, code_length)  # the code of symbol `category`
            bits.write(dc if dc > 0 else dc + (1 << category) - 1, category)
        else:
            bits.write(0, code_length)  # DC difference 0
        bits.write(0, 1)  # AC: end of block

    jfif = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"".join(
        [
            b"\xff\xd8",
            _segment(0xE0, jfif),
            _segment(0xDB, b"\x00" + b"\x01" * 64),
            _segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"),
            _huffman_table(0x00, dc_symbols),
            _huffman_table(0x10, [0x00]),
            _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
            bits.finish(),
            b"\xff\xd9",
        ]
    )
