"""Image decoding (handlers/images.py): the six documented formats open, container formats that
can wrap other images are refused before any pixel is decoded, Pillow's guard stays on."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageFile

from handlers import images as decoding
from handlers.errors import ImageTooLarge, InvalidImage
from tests import images

LIMIT = 40_000_000


@pytest.fixture(scope="module")
def photo(sample_images) -> Image.Image:
    return Image.open(sample_images["cat"]).convert("RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_the_six_formats_decode(photo, fmt):
    decoded = decoding.open_image(images.encode(photo, fmt), LIMIT, 256)
    assert decoded.rgb.shape == (photo.height, photo.width, 3)
    assert decoded.size == photo.size


@pytest.fixture
def decoded_pixels(monkeypatch):
    """Counts pixel decoding (ImageFile.load) during a test."""
    calls = []
    original = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.format)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def _big_png() -> bytes:
    return images.encode(Image.new("RGB", (3000, 3000), (200, 10, 10)), "PNG")


def _icns_wrapping(png: bytes) -> bytes:
    """An ICNS file whose 'ic07' (128x128) entry carries png, whatever its real size."""
    entry = b"ic07" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def _ico_wrapping(png: bytes) -> bytes:
    """An ICO whose directory says 16x16 and whose image is png."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def _psd_header() -> bytes:
    return (b"8BPS" + struct.pack(">H", 1) + b"\x00" * 6
            + struct.pack(">HIIHH", 3, 3000, 3000, 8, 3) + b"\x00" * 64)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 3000 3000\n%%EndComments\nshowpage\n"


@pytest.mark.parametrize("kind", ["ICNS", "ICO", "PSD", "EPS"])
def test_wrappers_are_refused_without_decoding(kind, decoded_pixels):
    data = {"ICNS": lambda: _icns_wrapping(_big_png()), "ICO": lambda: _ico_wrapping(_big_png()),
            "PSD": _psd_header, "EPS": lambda: EPS}[kind]()
    with pytest.raises(InvalidImage, match="cannot identify an image"):
        decoding.open_image(data, LIMIT, 256)
    assert decoded_pixels == []


@pytest.mark.filterwarnings("ignore:Image was not the expected size")
def test_pillow_knows_these_wrappers(photo):
    # The refusal above is ours: Pillow itself would open them.
    small = images.encode(photo.resize((64, 64)), "PNG")
    assert Image.open(io.BytesIO(_icns_wrapping(small))).format == "ICNS"
    assert Image.open(io.BytesIO(_ico_wrapping(small))).format == "ICO"


def test_too_many_pixels_is_413_before_decoding(decoded_pixels, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    # Under twice the limit Pillow only warns; our header check refuses with the exact size.
    with pytest.raises(ImageTooLarge, match="3000x3000 = 9000000 pixels; the limit is 5000000"):
        decoding.open_image(_big_png(), 5_000_000, 256)
    assert decoded_pixels == []


def test_bomb_is_413_from_pillows_own_guard(decoded_pixels, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    # Over twice the limit Pillow's own guard refuses while reading the header.
    with pytest.raises(ImageTooLarge, match="limit of 1000000 pixels"):
        decoding.open_image(images.png_bomb(), 1_000_000, 256)
    assert decoded_pixels == []


def test_pillows_guard_is_on_at_the_limit(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    decoding.open_image(images.encode(Image.new("RGB", (8, 8)), "PNG"), 12345, 8)
    assert Image.MAX_IMAGE_PIXELS == 12345


def test_exif_rotation_gives_the_upright_size(sample_images, photo):
    decoded = decoding.open_image(images.rotated_with_exif(sample_images["cat"]), LIMIT, 64)
    assert decoded.size == photo.size  # stored sideways, reported upright


def test_draft_decoding_keeps_the_original_size(sample_images):
    data = images.large_jpeg(sample_images["cat"])
    decoded = decoding.open_image(data, 10 ** 8, 256)
    assert decoded.size[0] == 4000 and decoded.rgb.shape[1] < 4000
    assert decoded.scale_x == pytest.approx(4000 / decoded.rgb.shape[1])


def test_hostile_headers_are_400(photo):
    data = bytearray(images.encode(photo, "TIFF"))
    data[4:8] = struct.pack("<I", 0xFFFFFFF0)  # first IFD offset past the end
    with pytest.raises(InvalidImage):
        decoding.open_image(bytes(data), LIMIT, 256)
    assert np.asarray(photo).shape[2] == 3


def test_a_jpeg_scan_bomb_is_refused_before_decoding(decoded_pixels):
    from scripts.drills import payloads as drill_payloads

    bomb = drill_payloads.progressive_jpeg_scans(scans=decoding.MAX_JPEG_SCANS + 50, side=64)
    with pytest.raises(InvalidImage, match="scans; the limit is"):
        decoding.open_image(bomb, LIMIT, 256)
    assert decoded_pixels == []
    # An ordinary progressive JPEG (about 10 scans) still decodes.
    normal = drill_payloads.progressive_jpeg_scans(scans=0, side=64)
    assert decoding.open_image(normal, LIMIT, 64).rgb.shape == (64, 64, 3)
