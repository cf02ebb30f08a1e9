"""Seeded random requests for fuzzing the request decoders and the handlers behind them.

Each generator takes a random.Random, so a failure is reproduced by its seed. The requests are
shaped like what TorchServe hands a handler (a dict of named parts: "body" as bytes, str or an
already decoded JSON value; multipart fields; query parameters as bytes), built from a valid
input by mutation: wrong types, hostile numbers, huge or non-ASCII strings, broken or deeply
nested JSON, corrupted base64 and image bytes.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

HOSTILE_NUMBERS: list[Any] = [
    0, -1, 1, 2 ** 63, -(2 ** 63), 10 ** 50, 1e400, -1e400, float("nan"), float("inf"), -0.0,
    0.5, 1.0, 3.0, 1e-300, True, False, None,
]
HOSTILE_STRINGS = [
    "", " ", "é", "\u0663", "\uff15", "\u00b2", "+-5", "1_000", "0x10", "1e400", "Infinity",
    "NaN", "-0", "\x00", "\ud7ff", "9" * 5000, "[" * 3000, "{" * 50, "\u202e" * 30, "5 ",
    " 3\n", "3.0", "1e2", "١٢", "null", "true",
]
KEYS = ["data", "file", "body", "instances", "inputs", "text", "b64", "topk", "min_score",
        "max_faces", "offset", "é", ""]


def hostile_scalar(rng: random.Random) -> Any:
    choice = rng.random()
    if choice < 0.35:
        return rng.choice(HOSTILE_NUMBERS)
    if choice < 0.7:
        return rng.choice(HOSTILE_STRINGS)
    if choice < 0.8:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 40)))
    if choice < 0.9:
        return base64.b64encode(rng.randbytes(rng.randrange(0, 64))).decode()
    return rng.randrange(-10 ** 6, 10 ** 6)


def hostile_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.random()
    if depth > 3 or choice < 0.6:
        return hostile_scalar(rng)
    if choice < 0.8:
        return [hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    return {rng.choice(KEYS): hostile_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Truncate, flip, splice or replace bytes of data."""
    data = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        if op == 0 and data:
            del data[rng.randrange(len(data)):]
        elif op == 1 and data:
            for _ in range(rng.randrange(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.randbytes(rng.randrange(1, 64))
        elif op == 3:
            data = bytearray(rng.randbytes(rng.randrange(0, 256)))
        else:
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.choice([b"{", b"[", b"\"", b"\xff", b"\x00", b"}"]) * 10
    return bytes(data)


def _encode_json(rng: random.Random, doc: Any) -> Any:
    """A JSON document as TorchServe may hand it: decoded, as bytes, or as broken bytes."""
    text = json.dumps(doc)  # NaN/Infinity allowed, as Python's json (and TorchServe's) does
    form = rng.randrange(4)
    if form == 0:
        return doc
    if form == 1:
        return bytearray(text.encode())
    if form == 2:
        return bytearray(mutate_bytes(rng, text.encode()))
    return text  # a text/* body


def image_request(rng: random.Random, image: bytes) -> dict:
    """A mutated request for an image model."""
    encoded = base64.b64encode(image).decode()
    form = rng.randrange(7)
    row: dict[str, Any] = {}
    if form == 0:
        row["body"] = bytearray(mutate_bytes(rng, image))
    elif form == 1:
        row[rng.choice(["data", "file"])] = bytearray(mutate_bytes(rng, image))
    elif form == 2:
        doc = {"data": rng.choice([encoded, encoded[: rng.randrange(len(encoded))],
                                   hostile_value(rng)])}
        row["body"] = _encode_json(rng, doc)
    elif form == 3:
        count = rng.choice([0, 1, 2, 3, 40])
        doc = {"instances": [rng.choice([encoded, {"b64": encoded}, {"b64": hostile_value(rng)},
                                         hostile_value(rng)]) for _ in range(count)]}
        row["body"] = _encode_json(rng, doc)
    elif form == 4:
        row["body"] = _encode_json(rng, hostile_value(rng))
    elif form == 5:
        row["body"] = bytearray(b"[" * rng.randrange(1, 5000))
    else:
        row["body"] = bytearray(image)  # valid input, hostile parameters only
    _add_params(rng, row)
    return row


def text_request(rng: random.Random, text: str) -> dict:
    """A mutated request for a text model."""
    form = rng.randrange(6)
    row: dict[str, Any] = {}
    if form == 0:
        row["body"] = bytearray(mutate_bytes(rng, text.encode()))
    elif form == 1:
        row["body"] = rng.choice([text, "", " ", "é" * rng.randrange(1, 30000), "[" * 3000])
    elif form == 2:
        row["body"] = _encode_json(rng, {"text": rng.choice([text, hostile_value(rng)])})
    elif form == 3:
        key = rng.choice(["inputs", "instances"])
        count = rng.choice([0, 1, 2, 3, 100])
        row["body"] = _encode_json(rng, {key: [rng.choice([text, {"text": text},
                                                           hostile_value(rng)])
                                               for _ in range(count)]})
    elif form == 4:
        row["body"] = _encode_json(rng, hostile_value(rng))
    else:
        row["body"] = bytearray(text.encode())
    _add_params(rng, row)
    return row


def _add_params(rng: random.Random, row: dict) -> None:
    for _ in range(rng.randrange(0, 3)):
        name = rng.choice(["topk", "min_score", "max_faces", "offset", "é"])
        value = hostile_scalar(rng)
        if isinstance(row.get("body"), dict) and rng.random() < 0.5:
            row["body"][name] = value
        else:  # a query parameter or multipart field: bytes
            row[name] = bytearray(str(value).encode("utf-8", "surrogatepass"))


def poison_bodies(image: bytes) -> dict[str, bytes]:
    """The issue's poison requests for the classifier: JSON bodies (Content-Type
    application/json) that once failed their whole batch or restarted the worker."""
    data = base64.b64encode(image).decode()

    def with_topk(raw: str) -> bytes:
        return ('{"data": "%s", "topk": %s}' % (data, raw)).encode()

    return {
        "topk é": with_topk('"é"'),
        "topk Infinity": with_topk("Infinity"),
        "topk 1e400": with_topk("1e400"),
        "topk 5000 digits": with_topk("9" * 5000),
        "3000 [": b"[" * 3000,
        "topk 1 MB string": with_topk('"' + "x" * 1_000_000 + '"'),
    }
