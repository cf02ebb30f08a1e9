"""Image helpers, apart from the generic clients: turning what applications hold (bytes,
paths, files, PIL images, numpy arrays) into the encoded image bytes the servers accept, and
the typed answers of the image models (Prediction of a classifier, Face of the face detector).

Pillow is optional: it is imported only when a PIL image or a numpy pixel array is passed.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from typing import Any, Union


ImageInput = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", Any]


@dataclass(frozen=True)
class Prediction:
    """One top-k entry, identical for TorchServe and TF Serving."""

    class_index: int
    label: str
    probability: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> Prediction:
        return cls(int(doc["class_index"]), str(doc["label"]), float(doc["probability"]))


@dataclass(frozen=True)
class Face:
    """One face found by the face detector, in the original image's pixels (after EXIF
    rotation): box (x1, y1, x2, y2), detection score, and five landmarks (x, y): the eyes, the
    nose and the corners of the mouth."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "score": self.score,
                "landmarks": [list(p) for p in self.landmarks]}

    @classmethod
    def from_json(cls, doc: dict) -> Face:
        x1, y1, x2, y2 = (float(v) for v in doc["box"])
        return cls((x1, y1, x2, y2), float(doc["score"]),
                   tuple((float(x), float(y)) for x, y in doc.get("landmarks") or ()))


def image_bytes(image: ImageInput) -> bytes:
    """Encoded image bytes from bytes, a path, a binary file object, a PIL image or an
    HxWxC uint8 numpy array (the last two are PNG-encoded: lossless, so the server sees
    exactly the caller's pixels)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as fh:
            return fh.read()
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("file objects must be opened in binary mode ('rb')")
        return bytes(data)
    if hasattr(image, "save") and hasattr(image, "mode"):  # PIL.Image.Image, without importing PIL
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    if hasattr(image, "__array_interface__"):
        try:
            from PIL import Image
        except ImportError:
            raise ImportError("numpy pixel arrays need Pillow: "
                              "pip install 'serving-bundle-client[image]'") from None
        return image_bytes(Image.fromarray(image))
    raise TypeError(f"cannot send {type(image).__name__} as an image: pass bytes, a path, "
                    "a binary file, a PIL image or a uint8 numpy array")


def content_type(data: bytes) -> str:
    """A Content-Type from the magic bytes (TorchServe passes it to the handler)."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
