"""The one place request errors are defined.

A RequestError raised while decoding, validating or preprocessing one request becomes that
request's own HTTP status and JSON body; the other requests of the same batch are still answered.
The body has the same shape as TorchServe's own errors:
{"code": 400, "type": "InvalidImage", "message": "..."}.

The HTTP reason phrase is always the standard ASCII phrase of the status ("Bad Request"), never
the message: TorchServe 0.12 frames the phrase by its character count but sends its UTF-8 bytes,
so a non-ASCII or very long phrase corrupts the HTTP response. The message travels in the body.
"""

from __future__ import annotations

import reprlib
from http import HTTPStatus
from typing import Any

_ECHO = reprlib.Repr()
_ECHO.maxstring = 40
_ECHO.maxother = 40
_ECHO.maxlong = 40
_ECHO.maxlist = _ECHO.maxdict = _ECHO.maxtuple = _ECHO.maxset = 4
_ECHO.maxlevel = 2


def echo(value: Any) -> str:
    """A client-sent value as it may appear in an error message: repr, cut to a few dozen
    characters, ASCII only (a 1 MB string or a 5000-digit number stays a short message)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<integer of about {int(value.bit_length() * 0.30103)} digits>"
    text = _ECHO.repr(value)
    return text.encode("ascii", "backslashreplace").decode("ascii")[:60]


def reason_phrase(status: int) -> str:
    """The standard, short, ASCII reason phrase of an HTTP status."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class RequestError(Exception):
    """A client error in one request: carries the HTTP status, a type name and a message."""

    status = 400
    type = "BadRequest"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def body(self) -> dict:
        return {"code": self.status, "type": self.type, "message": self.message}


class InvalidInput(RequestError):
    """The request is not in any accepted format (bad JSON, bad base64, missing field)."""

    type = "InvalidInput"


class InvalidParameter(RequestError):
    """A request parameter (e.g. topk) is out of its bounds or of the wrong type."""

    type = "InvalidParameter"


class InvalidImage(RequestError):
    """The bytes are not an image the handler can decode."""

    type = "InvalidImage"


class InvalidText(RequestError):
    """A text input is empty, not UTF-8, or longer than the model's limit."""

    type = "InvalidText"


class ImageTooLarge(RequestError):
    """The image has more pixels than the model's limit (decompression-bomb guard)."""

    status = 413
    type = "ImageTooLarge"


class InternalError(RequestError):
    """A bug of ours while serving one request; the details are in the worker's log only."""

    status = 500
    type = "InternalError"

    def __init__(self, stage: str):
        super().__init__(f"internal error while {stage} this request; see the server log")
