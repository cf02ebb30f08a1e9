"""Decoding one TorchServe request into the inputs it carries and its parameters.

Accepted forms (TorchServe hands each request to the handler as a dict of named parts):
  - raw body bytes (curl -T photo.jpg, Content-Type image/* or application/octet-stream);
  - multipart/form-data with the input in field `data` or `file`;
  - JSON {"data": "<base64>"};
  - JSON {"instances": ["<base64>" | {"b64": "<base64>"}, ...]} (KServe v1 style), answered as
    {"predictions": [...]} with one prediction per instance.
Parameters come from the query string (?topk=3), a multipart field, or a top-level JSON field.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from handlers.errors import InvalidInput

INPUT_FIELDS = ("data", "file", "body")
FORMATS_HINT = (
    "send the image bytes as the body, as multipart field 'data' or 'file', "
    'as JSON {"data": "<base64>"} or as JSON {"instances": [{"b64": "<base64>"}]}'
)


@dataclass
class Request:
    """One client request: its raw inputs, whether it used the instances form, its parameters."""

    inputs: list[bytes]
    instances: bool = False
    params: dict[str, Any] = field(default_factory=dict)


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where} is not valid base64: {exc}") from None


def _instance(value: Any, index: int) -> bytes:
    where = f"instances[{index}]"
    if isinstance(value, dict):
        if "b64" not in value:
            raise InvalidInput(f'{where} must be a base64 string or {{"b64": "..."}}')
        return _b64(value["b64"], f"{where}.b64")
    return _b64(value, where)


def _from_json(doc: Any, params: dict, max_instances: int) -> Request:
    if not isinstance(doc, dict):
        raise InvalidInput(f"JSON body must be an object; {FORMATS_HINT}")
    params.update({k: v for k, v in doc.items() if k not in ("data", "instances")})
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("'instances' must be a non-empty list")
        if len(instances) > max_instances:
            raise InvalidInput(
                f"{len(instances)} instances in one request; the limit is {max_instances}"
            )
        return Request([_instance(v, i) for i, v in enumerate(instances)], True, params)
    if "data" in doc:
        return Request([_b64(doc["data"], "field 'data'")], False, params)
    raise InvalidInput(f"JSON body has neither 'data' nor 'instances'; {FORMATS_HINT}")


def _looks_like_json(data: bytes) -> bool:
    return data.lstrip()[:1] in (b"{", b"[")


def parse(row: dict, max_instances: int = 32) -> Request:
    """Turn one TorchServe request dict into a Request, or raise InvalidInput naming the problem."""
    if not isinstance(row, dict):
        raise InvalidInput(f"unexpected request shape; {FORMATS_HINT}")
    params = {k: v for k, v in row.items() if k not in INPUT_FIELDS}
    present = [name for name in INPUT_FIELDS if row.get(name) not in (None, b"", "")]
    if not present:
        raise InvalidInput(f"the request is empty; {FORMATS_HINT}")
    value = row[present[0]]
    if isinstance(value, dict) or isinstance(value, list):
        # TorchServe already decoded an application/json body.
        return _from_json(value, params, max_instances)
    if isinstance(value, str):
        if not value.lstrip().startswith("{"):
            raise InvalidInput(f"the request body is text, not an image; {FORMATS_HINT}")
        value = value.encode()
    value = bytes(value)
    if _looks_like_json(value):
        try:
            doc = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
        return _from_json(doc, params, max_instances)
    return Request([value], False, params)


def text_param(value: Any) -> str:
    """Query and multipart parameters arrive as bytes or str; JSON ones keep their type."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return value
