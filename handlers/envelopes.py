"""Wire formats: one TorchServe request -> the inputs it carries, its form, its parameters.

TorchServe hands each request to the handler as a dict of named parts: the raw body under
"body" (already decoded to a dict/list for application/json, to str for text/*, else bytes),
multipart fields under their names, and (on /<model>/predict only) the query parameters.

Image codec (IMAGE):
  - raw body bytes (curl -T photo.jpg; Content-Type image/* or application/octet-stream);
  - multipart/form-data with the image in field `data` or `file`;
  - JSON {"data": "<base64>"}                                   -> answered as one prediction;
  - JSON {"instances": ["<base64>" | {"b64": "<base64>"}, ...]} -> {"predictions": [...]}.
Text codec (TEXT):
  - raw UTF-8 body (Content-Type text/plain or application/octet-stream), or multipart `data`;
  - JSON {"text": "..."}                                         -> answered as one prediction;
  - JSON {"inputs": [...]} or {"instances": [...]} (KServe v1)   -> {"predictions": [...]};
    each element a string or {"text": "..."}.
Parameters come from the query string, multipart fields, or top-level JSON fields (and X-<name>
headers, read by the base handler). Anything malformed raises InvalidInput with a message that
says which forms are accepted; nothing here depends on a model.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

from handlers.errors import InvalidInput, InvalidText, echo

INPUT_FIELDS = ("data", "file", "body")


@dataclass
class Envelope:
    """One decoded request: its raw inputs, whether it used a list form (answered as
    {"predictions": [...]}), and its raw (unvalidated) parameters."""

    inputs: list[Any]
    batched: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    key: str = "instances"  # the list's field name, to name a failing element: instances[3]


def text_param(value: Any) -> Any:
    """Query and multipart parameters arrive as bytes; JSON ones keep their type."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value


def integer(value: Any) -> int | None:
    """A parameter as an int, or None if it is not one. Accepts JSON integers, integral floats
    and short decimal strings (int()'s own rules: sign, spaces, Unicode digits); refuses bools,
    non-finite or huge floats and long strings before converting them."""
    value = text_param(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= 2 ** 53 else None
    if isinstance(value, str) and len(value) <= 20:
        try:
            return int(value)
        except ValueError:
            return None
    return None


def number(value: Any) -> float | None:
    """A parameter as a finite float, or None if it is not one."""
    value = text_param(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = float(value) if abs(value) <= 2 ** 53 else math.inf
    elif isinstance(value, str) and len(value) <= 40:
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _parse_json(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8 and integers over Python's digit limit;
        # RecursionError a body of thousands of nested brackets.
        reason = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise InvalidInput(f"the request body is not valid JSON: {reason}") from None


def _starts_with(data: bytes | str, marks: str) -> bool:
    head = data.lstrip()[:1]
    if isinstance(head, bytes):
        head = head.decode("latin-1")
    return bool(head) and head in marks


def _split(row: Any) -> tuple[Any, dict[str, Any]]:
    """The request's input value (first of data/file/body) and its other named parts."""
    if not isinstance(row, dict):
        raise InvalidInput(f"unexpected request shape {type(row).__name__}")
    params = {k: v for k, v in row.items() if k not in INPUT_FIELDS}
    for name in INPUT_FIELDS:
        if row.get(name) not in (None, b"", "", bytearray()):
            return row[name], params
    return None, params


def _limit(items: Any, key: str, max_instances: int) -> list:
    if not isinstance(items, list) or not items:
        raise InvalidInput(f"'{key}' must be a non-empty list")
    if len(items) > max_instances:
        raise InvalidInput(f"{len(items)} {key} in one request; the limit is {max_instances}")
    return items


class Codec:
    """Decodes the requests of one kind of input; subclasses know the JSON forms."""

    kind = "input"
    hint = ""
    input_keys: tuple[str, ...] = ()
    # First characters that make a raw body JSON rather than a raw input.
    json_marks = "{["

    def decode(self, row: Any, max_instances: int) -> Envelope:
        value, params = _split(row)
        if value is None:
            raise InvalidInput(f"the request is empty; {self.hint}")
        if isinstance(value, (dict, list)):  # TorchServe already decoded an application/json body
            return self._from_json(value, params, max_instances)
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value)
        elif not isinstance(value, str):
            raise InvalidInput(f"unexpected request part of type {type(value).__name__}")
        if _starts_with(value, self.json_marks):
            return self._from_json(_parse_json(value), params, max_instances)
        return Envelope([self.raw(value)], False, params)

    def _from_json(self, doc: Any, params: dict, max_instances: int) -> Envelope:
        if not isinstance(doc, dict):
            raise InvalidInput(f"the JSON body must be an object; {self.hint}")
        params.update({k: v for k, v in doc.items() if k not in self.input_keys})
        return self.from_json(doc, params, max_instances)

    def raw(self, value: bytes | str) -> Any:
        raise NotImplementedError

    def from_json(self, doc: dict, params: dict, max_instances: int) -> Envelope:
        raise NotImplementedError


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where} is not valid base64: {str(exc)[:80]}") from None


class ImageCodec(Codec):
    kind = "image"
    input_keys = ("data", "instances")
    hint = (
        "send the image bytes as the body, as multipart field 'data' or 'file', "
        'as JSON {"data": "<base64>"} or as JSON {"instances": [{"b64": "<base64>"}]}'
    )

    def raw(self, value: bytes | str) -> bytes:
        if isinstance(value, str):
            raise InvalidInput(f"the request body is text, not an image; {self.hint}")
        return value

    def from_json(self, doc: dict, params: dict, max_instances: int) -> Envelope:
        if "instances" in doc:
            instances = _limit(doc["instances"], "instances", max_instances)
            return Envelope([self._instance(v, i) for i, v in enumerate(instances)], True, params)
        if "data" in doc:
            return Envelope([_b64(doc["data"], "field 'data'")], False, params)
        raise InvalidInput(f"the JSON body has neither 'data' nor 'instances'; {self.hint}")

    @staticmethod
    def _instance(value: Any, index: int) -> bytes:
        where = f"instances[{index}]"
        if isinstance(value, dict):
            if "b64" not in value:
                raise InvalidInput(f'{where} must be a base64 string or {{"b64": "..."}}')
            return _b64(value["b64"], f"{where}.b64")
        return _b64(value, where)


class TextCodec(Codec):
    kind = "text"
    input_keys = ("text", "inputs", "instances")
    json_marks = "{"  # a text may well start with "["; JSON forms are objects
    hint = (
        'send UTF-8 text as the body (Content-Type text/plain), as JSON {"text": "..."} or a '
        'list as JSON {"inputs": ["...", ...]} or {"instances": ["...", ...]}'
    )

    def raw(self, value: bytes | str) -> str:
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidText(f"the body is not UTF-8 text (byte {exc.start})") from None
        return value

    def from_json(self, doc: dict, params: dict, max_instances: int) -> Envelope:
        for key in ("inputs", "instances"):
            if key in doc:
                texts = _limit(doc[key], key, max_instances)
                return Envelope([self._text(v, f"{key}[{i}]") for i, v in enumerate(texts)],
                                True, params, key)
        if "text" in doc:
            return Envelope([self._text(doc["text"], "field 'text'")], False, params)
        raise InvalidInput(f"the JSON body has none of 'text', 'inputs', 'instances'; {self.hint}")

    @staticmethod
    def _text(value: Any, where: str) -> str:
        if isinstance(value, dict) and set(value) == {"text"}:
            value = value["text"]
        if not isinstance(value, str):
            raise InvalidInput(f"{where} must be a string, got {type(value).__name__} "
                               f"{echo(value)}")
        return value


IMAGE = ImageCodec()
TEXT = TextCodec()
