"""Typed errors shared by the four clients (TorchServe/TF Serving x REST/gRPC).

Contract:
  - Every failure a client raises is a ServingError; nothing from requests/urllib3/grpc leaks.
  - ServerError subclasses are chosen from the HTTP status, or from the gRPC status code mapped
    to its HTTP equivalent, so `except NotFound` works for both protocols.
  - `message` is the server's own message (TorchServe's "message", TF Serving's "error", gRPC
    details), never a paraphrase, so users can search logs and issues for it.
  - `retryable` says whether the retry policy may repeat the call (transient errors only).
"""

from __future__ import annotations

import json
from typing import Any


class ServingError(Exception):
    """Base class of every client error. `attempts` is how many tries were made."""

    retryable = False

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.attempts = 1

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.message}{where}{tries}"


class ConfigurationError(ServingError):
    """The client is misconfigured: no address, unreadable key file, missing gRPC extra."""


class ConnectionFailed(ServingError):
    """No connection could be made (refused, reset, DNS). Safe to retry: nothing was processed."""

    retryable = True


class Timeout(ServingError):
    """Connect or read timeout, or gRPC DEADLINE_EXCEEDED.

    A connect timeout is retryable (the request never reached the server); a read timeout is not,
    because the server may still be working on it and retrying would double the load.
    """

    def __init__(self, message: str, *, url: str | None = None, connect: bool = False) -> None:
        super().__init__(message, url=url)
        self.connect = connect
        self.retryable = connect


class ServerError(ServingError):
    """The server answered with an error status.

    status_code: HTTP status (for gRPC: the HTTP equivalent of the gRPC code).
    grpc_code: the gRPC status code name ("INVALID_ARGUMENT"), or None for REST.
    error_type: TorchServe's error "type" (e.g. "ModelNotFoundException") when it sends one.
    body: the raw response body (REST) for debugging.
    """

    def __init__(self, message: str, *, status_code: int, grpc_code: str | None = None,
                 error_type: str | None = None, body: str | None = None,
                 url: str | None = None) -> None:
        super().__init__(message, url=url)
        self.status_code = status_code
        self.grpc_code = grpc_code
        self.error_type = error_type
        self.body = body

    def __str__(self) -> str:
        code = self.grpc_code or f"HTTP {self.status_code}"
        return f"{code}: {super().__str__()}"


class InvalidInput(ServerError):
    """400 / INVALID_ARGUMENT / FAILED_PRECONDITION / OUT_OF_RANGE: fix the request."""


class Unauthorized(ServerError):
    """401 / UNAUTHENTICATED: missing, wrong or expired token."""


class PermissionDenied(ServerError):
    """403 / PERMISSION_DENIED."""


class NotFound(ServerError):
    """404 / NOT_FOUND: unknown model, version, label or path."""


class MethodNotAllowed(ServerError):
    """405 (also TorchServe's answer to register/unregister with the model API disabled)."""


class PayloadTooLarge(ServerError):
    """413: the request (or the image's pixel count) exceeds the server's limit."""


class TooManyRequests(ServerError):
    """429 / RESOURCE_EXHAUSTED. Not retried automatically: back off at the application level."""


class InternalServerError(ServerError):
    """500 / INTERNAL / UNKNOWN: a server-side bug or a failed worker."""


class NotImplementedOnServer(ServerError):
    """501 / UNIMPLEMENTED: the server does not offer this call."""


class Unavailable(ServerError):
    """503 / UNAVAILABLE: overloaded, restarting, or no worker ready. Retried."""

    retryable = True


class GatewayTimeout(ServerError):
    """504: a proxy or the server's own worker timed out. Retried (predictions are idempotent)."""

    retryable = True


_BY_STATUS: dict[int, type[ServerError]] = {
    400: InvalidInput, 401: Unauthorized, 403: PermissionDenied, 404: NotFound,
    405: MethodNotAllowed, 413: PayloadTooLarge, 429: TooManyRequests, 500: InternalServerError,
    501: NotImplementedOnServer, 503: Unavailable, 504: GatewayTimeout,
}

_STATUS_OF = {cls: code for code, cls in _BY_STATUS.items()}

# gRPC status code name -> HTTP status, following google.rpc.Code's documented HTTP mapping.
GRPC_TO_HTTP: dict[str, int] = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNKNOWN": 500,
    "INTERNAL": 500, "DATA_LOSS": 500, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


# TorchServe exception types whose status code does not say what they mean.
TYPE_CLASSES: dict[str, type[ServerError]] = {
    "InvalidKeyException": Unauthorized,
    "ModelNotFoundException": NotFound,
    "ModelVersionNotFoundException": NotFound,
}


def error_class(status_code: int) -> type[ServerError]:
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    if 400 <= status_code < 500:
        return InvalidInput if status_code == 422 else ServerError
    return InternalServerError if status_code >= 500 else ServerError


def _server_message(body: str) -> tuple[str | None, str | None]:
    """(message, type) from a TorchServe {"code","type","message"} or TF Serving {"error"} body."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        return None, None
    if isinstance(doc, dict):
        message = doc.get("message") or doc.get("error")
        if isinstance(message, str):
            return message, doc.get("type") if isinstance(doc.get("type"), str) else None
    return None, None


def from_http(status_code: int, body: bytes, url: str | None = None,
              reason: str | None = None) -> ServerError:
    """The typed error for an HTTP error response."""
    text = body.decode("utf-8", "replace")
    message, error_type = _server_message(text)
    if message is None:
        message = text.strip()[:500] or reason or f"HTTP {status_code}"
    # TorchServe 0.12 answers a wrong or expired token with HTTP 400, not 401.
    cls = TYPE_CLASSES.get(error_type or "", error_class(status_code))
    return cls(message, status_code=status_code, error_type=error_type, body=text, url=url)


def _split_java_exception(details: str) -> tuple[str, str | None]:
    """TorchServe's gRPC details end with the Java exception class on its own line
    ("Model not found: x\norg.pytorch.serve...ModelNotFoundException"): (message, class name)."""
    head, sep, tail = details.rpartition("\n")
    if sep and tail.startswith(("org.pytorch.", "java.")) and " " not in tail.strip():
        return head.strip(), tail.strip().rsplit(".", 1)[-1]
    return details, None


def from_grpc_code(code_name: str, details: str | None, target: str | None = None) -> ServingError:
    """The typed error for a gRPC status (code name as in grpc.StatusCode.X.name)."""
    message, error_type = _split_java_exception(details or code_name)
    if code_name == "DEADLINE_EXCEEDED":
        return Timeout(message, url=target)
    status = GRPC_TO_HTTP.get(code_name, 500)
    if code_name == "UNAVAILABLE" and _is_connect_failure(message):
        return ConnectionFailed(message, url=target)
    cls = error_class(status)
    # TorchServe reports a missing model as INTERNAL and a bad token as PERMISSION_DENIED over
    # gRPC; type them like their REST twins so `except NotFound` works for both protocols.
    if error_type in TYPE_CLASSES:
        cls = TYPE_CLASSES[error_type]
        status = _STATUS_OF.get(cls, status)
    elif message.startswith("Token Authorization failed"):
        cls, status = Unauthorized, 401
    return cls(message, status_code=status, grpc_code=code_name, error_type=error_type,
               url=target)


def from_payload(doc: object, target: str | None = None) -> ServerError | None:
    """A handler error carried in a successful gRPC reply, or None.

    TorchServe's gRPC frontend ignores the HTTP status a handler sets, so a handler's
    {"code": 400, "type": ..., "message": ...} arrives with status OK; it is raised like REST.
    """
    if (isinstance(doc, dict) and isinstance(doc.get("code"), int) and doc["code"] >= 400
            and isinstance(doc.get("message"), str) and set(doc) <= {"code", "type", "message"}):
        cls = TYPE_CLASSES.get(doc.get("type"), error_class(doc["code"]))
        return cls(doc["message"], status_code=doc["code"], error_type=doc.get("type"),
                   url=target)
    return None


def _is_connect_failure(details: str) -> bool:
    lowered = details.lower()
    return any(s in lowered for s in ("failed to connect", "connection refused",
                                      "connections to all backends failing",
                                      "dns resolution failed"))
