"""Hostile and good request bodies for the drills (scripts/drills/), built in memory.

Each builder returns encoded bytes. Bombs are small files whose header promises far more pixels
than the catalog allows; containers wrap an image in a format the bundle does not open; the
animated ones carry many frames; the progressive JPEG carries thousands of scans.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

BOMB_SIDE = 20000  # 400 M pixels, ten times the catalog's limit


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _small(mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (8, 8), (200, 30, 30) if mode == "RGB" else 90)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid PNG header for width x height RGB and one compressed row of zeros."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * (3 * min(width, 4096) + 1), 9))
            + _png_chunk(b"IEND", b""))


def jpeg_bomb(side: int = BOMB_SIDE) -> bytes:
    """An 8x8 baseline JPEG whose frame header (SOF0) says side x side."""
    data = bytearray(encode(_small(), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def gif_bomb(side: int = 0xFFFF) -> bytes:
    """A GIF whose logical screen and first frame are side x side (GIF's maximum)."""
    data = bytearray(encode(_small(), "GIF"))
    data[6:10] = struct.pack("<HH", side, side)
    frame = data.index(b"\x2c", 13)
    data[frame + 5 : frame + 9] = struct.pack("<HH", side, side)
    return bytes(data)


def bmp_bomb(side: int = BOMB_SIDE) -> bytes:
    data = bytearray(encode(_small(), "BMP"))
    data[18:26] = struct.pack("<ii", side, side)
    return bytes(data)


def webp_bomb(side: int = 16384) -> bytes:
    """A lossless WebP header of side x side (VP8L's maximum)."""
    data = bytearray(encode(_small(), "WEBP", lossless=True))
    (bits,) = struct.unpack("<I", data[21:25])
    data[21:25] = struct.pack("<I", (side - 1) | (side - 1) << 14 | bits & 0xF0000000)
    return bytes(data)


def tiff_bomb(side: int = BOMB_SIDE) -> bytes:
    """A little-endian TIFF whose ImageWidth/ImageLength tags say side x side."""
    data = bytearray(encode(_small(), "TIFF"))
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            if kind == 3:  # SHORT
                data[entry + 8 : entry + 12] = struct.pack("<HH", min(side, 0xFFFF), 0)
            else:
                data[entry + 8 : entry + 12] = struct.pack("<I", side)
    return bytes(data)


def ico_wrapping_png(side: int = 4000) -> bytes:
    """An ICO whose directory says 0x0 (=256) but whose entry is a side x side PNG."""
    png = encode(Image.new("RGB", (side, side), (10, 200, 10)), "PNG")
    directory = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32,
                                                           len(png), 22)
    return directory + png


def icns_wrapping_png(side: int = 3000) -> bytes:
    """An ICNS whose 'ic07' (128x128) entry is a side x side PNG."""
    png = encode(Image.new("RGB", (side, side), (10, 10, 200)), "PNG")
    entry = b"ic07" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def psd_bomb(side: int = 30000) -> bytes:
    """A PSD header (RGB, 8 bits, side x side) with empty sections and no pixel data."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, side, side, 8, 3)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0)


def eps_bomb(side: int = BOMB_SIDE) -> bytes:
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 " + f"{side} {side}".encode()
            + b"\n%%EndComments\nshowpage\n%%EOF\n")


def many_frame_gif(frames: int = 400, side: int = 512) -> bytes:
    """frames full-size frames alternating between two flat grays (every frame differs)."""
    a, b = Image.new("L", (side, side), 20), Image.new("L", (side, side), 220)
    sequence = [a if i % 2 else b for i in range(frames)]
    return encode(sequence[0], "GIF", save_all=True, append_images=sequence[1:],
                  optimize=False, disposal=2)


def many_frame_tiff(frames: int = 200, side: int = 512) -> bytes:
    a, b = Image.new("L", (side, side), 20), Image.new("L", (side, side), 220)
    sequence = [a if i % 2 else b for i in range(frames)]
    return encode(sequence[0], "TIFF", save_all=True, append_images=sequence[1:],
                  compression="tiff_deflate")


def _segments(jpeg: bytes) -> list[tuple[int, int]]:
    """(start, end) of each marker segment up to the first SOS, then of each scan (SOS header +
    entropy-coded data), in order; EOI excluded."""
    spans, pos = [], 2
    while pos < len(jpeg) - 2:
        marker = jpeg[pos + 1]
        if marker == 0xD9:
            break
        (length,) = struct.unpack(">H", jpeg[pos + 2 : pos + 4])
        end = pos + 2 + length
        if marker == 0xDA:  # scan: its data runs to the next marker that is not RST/stuffing
            while end < len(jpeg) - 1:
                if jpeg[end] == 0xFF and jpeg[end + 1] not in (0x00, *range(0xD0, 0xD8)):
                    break
                end += 1
        spans.append((pos, end))
        pos = end
    return spans


def progressive_jpeg_scans(scans: int = 3000, side: int = 1024) -> bytes:
    """A progressive JPEG whose last scan (an AC refinement) is repeated until the file holds
    `scans` scans. libjpeg warns about the bogus progression and decodes every scan, each one a
    pass over all the image's blocks: the cost grows with the scan count, not the file size."""
    gradient = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    jpeg = encode(gradient, "JPEG", progressive=True, quality=90)
    spans = _segments(jpeg)
    sos = [s for s in spans if jpeg[s[0] + 1] == 0xDA]
    last = jpeg[sos[-1][0] : sos[-1][1]]
    extra = max(0, scans - len(sos))
    return jpeg[: spans[-1][1]] + last * extra + b"\xff\xd9"


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 3]


def bombs() -> dict[str, bytes]:
    """Every accepted format over the pixel limit by its header, plus the container formats."""
    return {
        "png-20000^2": png_bomb(), "jpeg-20000^2": jpeg_bomb(), "gif-65535^2": gif_bomb(),
        "bmp-20000^2": bmp_bomb(), "webp-16384^2": webp_bomb(), "tiff-20000^2": tiff_bomb(),
        "ico-png-4000^2": ico_wrapping_png(), "icns-png-3000^2": icns_wrapping_png(),
        "psd-30000^2": psd_bomb(), "eps-20000^2": eps_bomb(),
    }
