"""Sample photos for the README's curl line and the tests, written from scikit-image's CC0 photos
(nothing binary is committed)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from scripts.catalog import ROOT

SAMPLES = ROOT / "samples"
# name -> (skimage.data function, ImageNet classes a correct classifier may answer as top-1)
PHOTOS = {
    "cat": ("chelsea", {281, 282, 285}),  # tabby, tiger cat, Egyptian cat
    "coffee": ("coffee", {967}),  # espresso
}
# name -> (skimage.data function, number of faces in it), for the face detector
FACES = {
    "astronaut": ("astronaut", 1),  # Eileen Collins, face at about (181, 62, 268, 172)
}


def path(name: str) -> Path:
    return SAMPLES / f"{name}.jpg"


def write_all() -> dict[str, Path]:
    """Write samples/<name>.jpg for every photo (skipped when already there)."""
    from skimage import data

    SAMPLES.mkdir(exist_ok=True)
    written = {}
    for name, (loader, _) in {**PHOTOS, **FACES}.items():
        target = path(name)
        if not target.is_file():
            tmp = target.with_suffix(".tmp")
            Image.fromarray(getattr(data, loader)()).save(tmp, format="JPEG", quality=95)
            tmp.replace(target)
        written[name] = target
    return written


# One example request per handler module: (sample photo name or text, Content-Type), for the
# curl lines, the benchmarks and the docs.
SAMPLE_TEXT = "A man is eating food."
PAYLOADS = {
    "image_classifier": ("cat", "image/jpeg"),
    "face_detector": ("astronaut", "image/jpeg"),
    "text_embedder": (None, "text/plain; charset=utf-8"),
}


def payload(model) -> tuple[bytes, str]:
    """(body, Content-Type) of an example request for a catalog model."""
    photo, content_type = PAYLOADS[model.handler]
    if photo is None:
        return SAMPLE_TEXT.encode(), content_type
    return path(photo).read_bytes(), content_type
