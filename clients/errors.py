"""The client's exceptions: one base type and six that callers actually catch.

    ServingError            base: every failure a client raises (a server status not listed
    |                       below, e.g. 500 or 507, is a plain ServingError)
    +-- ConnectionFailed    the request was never sent (refused, DNS, TLS handshake, connect
    |                       timeout): safe to retry, nothing was processed
    +-- Timeout             sent, but no answer in time (read timeout, DEADLINE_EXCEEDED); the
    |                       server may still be working on it, so it is not retried
    +-- InvalidInput        any other 4xx (400, 403, 405, 413, 422 ...) / INVALID_ARGUMENT,
    |                       FAILED_PRECONDITION, PERMISSION_DENIED (e.g. the model API is off)
    +-- Unauthorized        401, TorchServe's InvalidKeyException / UNAUTHENTICATED, "Token
    |                       Authorization failed": missing, wrong or expired key. Never retried
    +-- NotFound            404 / NOT_FOUND and TorchServe's Model(Version)NotFoundException
    +-- Unavailable         503, 429 / UNAVAILABLE, RESOURCE_EXHAUSTED: overloaded or restarting
    +-- InstanceError       one instance of a batch failed while its neighbours were answered

Every error carries the server's own words in `message` (TorchServe's "message", TF Serving's
"error", gRPC details), never a paraphrase, plus `status_code` (HTTP, or the HTTP equivalent of
the gRPC code), `grpc_code`, TorchServe's error `type`, the `url` and the `attempts` made.
Nothing from urllib3 or grpc leaks.
"""

from __future__ import annotations

import json
from typing import Any


class ServingError(Exception):
    """Base class of every client error."""

    def __init__(self, message: str, *, status_code: int | None = None,
                 grpc_code: str | None = None, error_type: str | None = None,
                 url: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.grpc_code = grpc_code
        self.error_type = error_type
        self.url = url
        self.retry_after = retry_after  # seconds the server asked us to wait (Retry-After)
        self.attempts = 1

    def __str__(self) -> str:
        code = self.grpc_code or (f"HTTP {self.status_code}" if self.status_code else "")
        where = f" ({self.url})" if self.url else ""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{code + ': ' if code else ''}{self.message}{where}{tries}"


class ConnectionFailed(ServingError):
    """No request was sent: connection refused, name not resolved, TLS handshake failed, or
    the connect timeout passed."""


class Timeout(ServingError):
    """The request was sent but no answer came within the read timeout or gRPC deadline."""


class InvalidInput(ServingError):
    """The server refused the request as it is: fix the request, do not retry it."""


class Unauthorized(ServingError):
    """Missing, wrong or expired key (TorchServe keys expire; `make key` prints a fresh one)."""


class NotFound(ServingError):
    """Unknown model, version, label or path."""


class Unavailable(ServingError):
    """Overloaded (queue full), restarting, or no worker ready. The client retries it."""


class InstanceError(ServingError):
    """One instance of a batch failed. `index` is its position in the batch; `results` is the
    whole batch's answer, with InstanceError objects in place of the failed instances, so the
    neighbours' answers are not lost."""

    def __init__(self, message: str, *, index: int, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.index = index
        self.results: list[Any] = []

    def __str__(self) -> str:
        return f"instance {self.index}: {super().__str__()}"


# HTTP status -> type; 4xx not listed are InvalidInput, 5xx not listed the base type.
_BY_STATUS: dict[int, type[ServingError]] = {
    401: Unauthorized, 404: NotFound, 429: Unavailable, 503: Unavailable,
}
# TorchServe error types whose status code does not say what they mean: 0.12 answers a wrong
# or expired key with HTTP 400, and a missing model over gRPC with INTERNAL.
_BY_TYPE: dict[str, type[ServingError]] = {
    "InvalidKeyException": Unauthorized,
    "ModelNotFoundException": NotFound,
    "ModelVersionNotFoundException": NotFound,
}
# gRPC status code name -> HTTP status, after google.rpc.Code's documented mapping.
GRPC_TO_HTTP: dict[str, int] = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "UNKNOWN": 500,
    "INTERNAL": 500, "DATA_LOSS": 500, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def error_class(status_code: int, error_type: str | None = None) -> type[ServingError]:
    if error_type in _BY_TYPE:
        return _BY_TYPE[error_type]
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    return InvalidInput if 400 <= status_code < 500 else ServingError


def _server_message(body: str) -> tuple[str | None, str | None]:
    """(message, type) from a TorchServe {"code","type","message"} or TF Serving {"error"} body."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        return None, None
    if isinstance(doc, dict):
        message = doc.get("message") or doc.get("error")
        if isinstance(message, str):
            kind = doc.get("type")
            return message, kind if isinstance(kind, str) else None
    return None, None


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the delta-seconds form; an HTTP date is ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def from_http(status_code: int, body: bytes, url: str | None = None, reason: str | None = None,
              retry_after: str | None = None) -> ServingError:
    """The typed error for an HTTP error response."""
    text = body.decode("utf-8", "replace")
    message, error_type = _server_message(text)
    if message is None:
        message = text.strip()[:500] or reason or f"HTTP {status_code}"
    cls = error_class(status_code, error_type)
    return cls(message, status_code=status_code, error_type=error_type, url=url,
               retry_after=_retry_after(retry_after))


def _split_java_exception(details: str) -> tuple[str, str | None]:
    """TorchServe's gRPC details end with the Java exception class on its own line
    ("Model not found: x\\norg.pytorch.serve...ModelNotFoundException"): (message, class name)."""
    head, sep, tail = details.rpartition("\n")
    if sep and tail.startswith(("org.pytorch.", "java.")) and " " not in tail.strip():
        return head.strip(), tail.strip().rsplit(".", 1)[-1]
    return details, None


_NOT_SENT = ("failed to connect", "connection refused", "connections to all backends failing",
             "dns resolution failed", "ssl handshake failed", "handshake failed")


def from_grpc(code_name: str, details: str | None, target: str | None = None) -> ServingError:
    """The typed error for a gRPC status (code name as in grpc.StatusCode.X.name)."""
    message, error_type = _split_java_exception(details or code_name)
    status = GRPC_TO_HTTP.get(code_name, 500)
    if code_name == "DEADLINE_EXCEEDED":
        cls: type[ServingError] = Timeout
    elif code_name == "UNAVAILABLE" and any(s in message.lower() for s in _NOT_SENT):
        cls = ConnectionFailed
    elif message.startswith("Token Authorization failed"):
        cls = Unauthorized  # TorchServe says PERMISSION_DENIED or INTERNAL for a bad key
    else:
        cls = error_class(status, error_type)
    # Typed like the REST twin, with the REST twin's status (`except NotFound` and
    # `.status_code == 404` hold for both protocols).
    status = {Unauthorized: 401, NotFound: 404}.get(cls, status)
    return cls(message, status_code=status, grpc_code=code_name, error_type=error_type,
               url=target)


def from_payload(doc: object, target: str | None = None) -> ServingError | None:
    """A handler error carried in a successful reply, or None.

    TorchServe's gRPC frontend ignores the HTTP status a handler sets, so a handler's
    {"code": 400, "type": ..., "message": ...} arrives with status OK; it is raised like REST.
    """
    if (isinstance(doc, dict) and isinstance(doc.get("code"), int) and doc["code"] >= 400
            and isinstance(doc.get("message"), str) and set(doc) <= {"code", "type", "message"}):
        kind = doc.get("type") if isinstance(doc.get("type"), str) else None
        return error_class(doc["code"], kind)(doc["message"], status_code=doc["code"],
                                              error_type=kind, url=target)
    return None
