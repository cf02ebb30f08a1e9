"""Decoding untrusted image bytes into an RGB uint8 array, and the shared crop/resize/scale step.

Every PIL mode ends as RGB: EXIF orientation is applied, transparency is composited on white
(a transparent pixel's stored colour is arbitrary), 16/32-bit grayscale is scaled to 8 bits rather
than clipped. The pixel count is checked from the header, before any pixel is decoded, so a
decompression bomb costs nothing. Large JPEGs are decoded at a reduced DCT scale (draft mode)
that still leaves at least the crop size, which is much faster and uses far less memory.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from handlers.errors import ImageTooLarge, InvalidImage

# PIL's own guard fires at 2x this; our limit (from the catalog) is checked first and lower.
Image.MAX_IMAGE_PIXELS = None
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _open(data: bytes) -> Image.Image:
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage(
            f"cannot identify an image in {len(data)} bytes (expected JPEG, PNG, GIF, BMP, "
            "WebP or TIFF)"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"the image header is corrupt: {exc}") from None


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


def decode(data: bytes, max_pixels: int, min_side: int) -> np.ndarray:
    """Bytes -> HxWx3 uint8 RGB, or InvalidImage / ImageTooLarge naming the problem.

    min_side is the smallest side the caller needs; JPEG draft decoding never goes below it.
    """
    image = _open(data)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if width < 1 or height < 1:
        raise InvalidImage(f"the image has no pixels ({width}x{height})")
    try:
        if image.format == "JPEG":
            image.draft("RGB", (min_side, min_side))
        image = ImageOps.exif_transpose(image)
        image.load()
        return np.asarray(_to_rgb(image))
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"the image data is corrupt or truncated: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None


def crop_side(height: int, width: int, crop_fraction: float) -> int:
    return max(1, int(round(min(height, width) * crop_fraction)))


def to_model_input(
    rgb: np.ndarray, size: int, crop_fraction: float, mean: float, std: float,
    device: torch.device,
) -> torch.Tensor:
    """HxWx3 uint8 -> 3 x size x size float: central square crop, antialiased bilinear resize,
    (x - mean) / std. The same contract as the TF Serving graph (scripts/export_tf.py)."""
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
