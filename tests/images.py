"""Test images made in memory from the CC0 sample photos: every PIL mode, EXIF rotations,
truncations, and a real 30000x30000 PNG decompression bomb (~110 kB on the wire)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def in_mode(path: Path, mode: str) -> bytes:
    """The photo converted to a PIL mode, in a format that stores that mode."""
    rgb = Image.open(path).convert("RGB")
    if mode == "CMYK":
        return encode(rgb.convert("CMYK"), "JPEG", quality=95)
    if mode == "I;16":
        gray = rgb.convert("L")
        wide = Image.frombytes("I;16", gray.size, bytes(
            b for v in gray.tobytes() for b in struct.pack("<H", v * 257)))
        return encode(wide, "PNG")
    if mode == "RGBA":
        rgba = rgb.convert("RGBA")
        rgba.putalpha(255)
        return encode(rgba, "PNG")
    if mode == "LA":
        return encode(rgb.convert("LA"), "PNG")
    if mode == "P":
        return encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG")
    if mode == "1":
        return encode(rgb.convert("1"), "PNG")
    if mode == "F":
        return encode(rgb.convert("F"), "TIFF")
    if mode == "I":
        return encode(rgb.convert("I"), "TIFF")
    return encode(rgb.convert(mode), "PNG")


def rotated_with_exif(path: Path) -> bytes:
    """The photo stored rotated 90 degrees with an EXIF Orientation tag that undoes it."""
    rgb = Image.open(path).convert("RGB")
    stored = rgb.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise, as a sideways camera stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 30000) -> bytes:
    """A valid 1-bit side x side PNG of zeros: ~110 kB that would decode to 900 M pixels."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def large_jpeg(path: Path, side: int = 4000) -> bytes:
    """The photo upscaled to a phone-camera size, to exercise JPEG draft decoding."""
    rgb = Image.open(path).convert("RGB")
    scale = side / max(rgb.size)
    big = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)),
                     Image.Resampling.BICUBIC)
    return encode(big, "JPEG", quality=90)
