"""Decoding untrusted image bytes into an RGB uint8 array, and the shared crop/resize/scale step.

Only the six documented formats are opened (JPEG, PNG, GIF, BMP, WebP, TIFF): Pillow is asked to
try no other plugin, so container formats such as ICO, ICNS, PSD or EPS, which can wrap a large
PNG behind a small header, are refused before anything is decoded.

Every PIL mode ends as RGB: EXIF orientation is applied, transparency is composited on white
(a transparent pixel's stored colour is arbitrary), 16/32-bit grayscale is scaled to 8 bits rather
than clipped. The pixel count is checked from the header, before any pixel is decoded, so a
decompression bomb costs nothing; Pillow's own guard (Image.MAX_IMAGE_PIXELS) stays on at the
same catalog limit for anything the header check cannot see. Large JPEGs are decoded at a reduced
DCT scale (draft mode) that still leaves at least the size the model needs.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from handlers.errors import ImageTooLarge, InvalidImage

FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
FORMATS_TEXT = "JPEG, PNG, GIF, BMP, WebP or TIFF"
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# libjpeg decodes every scan of a progressive JPEG in full, so thousands of tiny scans (a "scan
# bomb") cost seconds per request; encoders write about 10, so 100 leaves a wide margin.
MAX_JPEG_SCANS = 100
# EXIF orientations that swap width and height when applied.
TRANSPOSING = (5, 6, 7, 8)


@dataclass(frozen=True)
class Decoded:
    """An image as the model sees it, and the size the client sees (after EXIF rotation).

    rgb may be smaller than `size` when JPEG draft decoding reduced it; scale_x/scale_y map
    its pixel coordinates back to the original image."""

    rgb: np.ndarray
    size: tuple[int, int]  # (width, height) of the original image, upright

    @property
    def scale_x(self) -> float:
        return self.size[0] / self.rgb.shape[1]

    @property
    def scale_y(self) -> float:
        return self.size[1] / self.rgb.shape[0]


def _why(exc: Exception) -> str:
    text = str(exc).encode("ascii", "backslashreplace").decode()[:120]
    return text or type(exc).__name__


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    # Pillow raises DecompressionBombError above twice this; the header check in open_image
    # refuses anything above it with the exact size first.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise InvalidImage(
            f"cannot identify an image in {len(data)} bytes (expected {FORMATS_TEXT})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image is over the limit of {max_pixels} pixels "
                            f"({_why(exc)})") from None
    except Exception as exc:  # Pillow's parsers raise many types on hostile headers
        raise InvalidImage(f"the image header is corrupt: {_why(exc)}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in SIXTEEN_BIT_MODES or mode == "F":
        arr = np.asarray(image, dtype=np.float32)
        if mode == "F":
            scale = 1.0 if arr.size and arr.max() <= 1.0 else 255.0
            arr = arr / scale * 255.0
        else:
            arr = arr / 257.0  # 0..65535 -> 0..255
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(data: bytes, max_pixels: int, min_side: int) -> Decoded:
    """Bytes -> Decoded (HxWx3 uint8 RGB, upright), or InvalidImage / ImageTooLarge naming the
    problem. min_side is the smallest side the caller needs; JPEG draft decoding never goes
    below it."""
    image = _open(data, max_pixels)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if width < 1 or height < 1:
        raise InvalidImage(f"the image has no pixels ({width}x{height})")
    if image.format == "JPEG":
        # Entropy-coded data stuffs every 0xFF with 0x00, so FF DA only ever starts a scan header
        # (or one of an embedded thumbnail's): counting is exact enough and costs microseconds.
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise InvalidImage(f"the JPEG has {scans} scans; the limit is {MAX_JPEG_SCANS}")
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        size = (height, width) if orientation in TRANSPOSING else (width, height)
        if image.format == "JPEG":
            image.draft("RGB", (min_side, min_side))
        image = ImageOps.exif_transpose(image)
        image.load()
        return Decoded(np.asarray(_to_rgb(image)), size)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"the image is over the limit of {max_pixels} pixels "
                            f"({_why(exc)})") from None
    except Exception as exc:  # the same for the pixel data
        raise InvalidImage(f"the image data is corrupt or truncated: {_why(exc)}") from None


def decode(data: bytes, max_pixels: int, min_side: int) -> np.ndarray:
    """Bytes -> HxWx3 uint8 RGB (see open_image)."""
    return open_image(data, max_pixels, min_side).rgb


def crop_side(height: int, width: int, crop_fraction: float) -> int:
    return max(1, int(round(min(height, width) * crop_fraction)))


def to_model_input(
    rgb: np.ndarray, size: int, crop_fraction: float, mean: float, std: float,
    device: torch.device,
) -> torch.Tensor:
    """HxWx3 uint8 -> 3 x size x size float: central square crop, antialiased bilinear resize,
    (x - mean) / std. The same contract as the TF Serving graph (scripts/build/export_tf.py).

    The crop is resized in float on purpose: torch's uint8 antialiased resize is faster (0.3 vs
    0.8 ms per image, measured by scripts/bench), but rounding its output to uint8 moved the
    classifier's probabilities by up to 6e-3, past the 1e-3 agreement with the TF graph."""
    height, width = rgb.shape[:2]
    side = crop_side(height, width, crop_fraction)
    top, left = (height - side) // 2, (width - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(rgb[top:top + side, left:left + side]))
    pixels = crop.to(device).permute(2, 0, 1).unsqueeze(0).float()
    if side != size:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)
    return ((pixels - mean) / std).squeeze(0)


def draft_side(size: int, crop_fraction: float) -> int:
    """The smallest image side for which the central crop still covers size pixels."""
    return math.ceil(size / crop_fraction)
