"""The one place request errors are defined.

A RequestError raised while decoding or validating one request becomes that request's own HTTP
status and JSON body; the other requests of the same batch are still answered. The body has the
same shape as TorchServe's own errors: {"code": 400, "type": "InvalidImage", "message": "..."}.
"""

from __future__ import annotations


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
    """A request parameter (e.g. topk) is missing its bounds or is not a number."""

    type = "InvalidParameter"


class InvalidImage(RequestError):
    """The bytes are not an image the handler can decode."""

    type = "InvalidImage"


class ImageTooLarge(RequestError):
    """The image has more pixels than the model's limit (decompression-bomb guard)."""

    status = 413
    type = "ImageTooLarge"
