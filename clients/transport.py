"""Transport policy shared by all four clients: addresses, timeouts, retries, auth.

Protocol code (REST in _http.py, gRPC in _grpc.py) asks this module *what* to do; it never
decides retry or auth rules itself, so the four clients behave identically.

Environment variables (arguments always win over the environment):
  TORCHSERVE_URL, TORCHSERVE_MANAGEMENT_URL, TORCHSERVE_METRICS_URL   REST base URLs
  TORCHSERVE_GRPC_TARGET, TORCHSERVE_GRPC_MANAGEMENT_TARGET          host:port
  TORCHSERVE_TOKEN (both APIs), TORCHSERVE_INFERENCE_TOKEN, TORCHSERVE_MANAGEMENT_TOKEN
  TORCHSERVE_KEY_FILE                                                TorchServe's key_file.json
  TFSERVING_URL, TFSERVING_GRPC_TARGET, TFSERVING_TOKEN
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import tenacity

from clients.errors import ConfigurationError, ServingError

log = logging.getLogger("clients")
T = TypeVar("T")

DEFAULTS = {
    "TORCHSERVE_URL": "http://127.0.0.1:8080",
    "TORCHSERVE_MANAGEMENT_URL": "http://127.0.0.1:8081",
    "TORCHSERVE_METRICS_URL": "http://127.0.0.1:8082",
    "TORCHSERVE_GRPC_TARGET": "127.0.0.1:7070",
    "TORCHSERVE_GRPC_MANAGEMENT_TARGET": "127.0.0.1:7071",
    "TFSERVING_URL": "http://127.0.0.1:8501",
    "TFSERVING_GRPC_TARGET": "127.0.0.1:8500",
}


def resolve_address(explicit: str | None, env_name: str, env: Mapping[str, str] | None = None
                    ) -> str:
    """explicit argument > environment variable > the server's documented default port."""
    env = os.environ if env is None else env
    value = explicit or env.get(env_name) or DEFAULTS[env_name]
    return value.rstrip("/")


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `connect` bounds TCP/HTTP2 connection setup, `read` the wait for the answer
    (gRPC has one deadline per call: connect + read)."""

    connect: float = 5.0
    read: float = 60.0

    @property
    def total(self) -> float:
        return self.connect + self.read


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for transient failures only.

    Retried: errors whose `retryable` is true (connection failures, connect timeouts, HTTP
    503/504, gRPC UNAVAILABLE) and only for idempotent calls. Never retried: 4xx,
    INVALID_ARGUMENT, read timeouts, non-idempotent calls (register/unregister).
    Backoff before retry n (n = 1, 2, ...): min(max_backoff, initial_backoff * 2**(n-1)) plus a
    uniform jitter in [0, jitter]. After max_attempts the last error is raised, with `attempts`.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    jitter: float = 0.1

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(max_attempts=1)

    def call(self, fn: Callable[[], T], *, idempotent: bool = True,
             what: str = "request") -> T:
        """Run fn() under this policy. fn must raise only ServingError for failures."""
        attempts = self.max_attempts if idempotent else 1
        # A fresh Retrying per call: its statistics are per-call state, so threads never share it.
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, attempts)),
            wait=tenacity.wait_exponential_jitter(initial=self.initial_backoff,
                                                  max=self.max_backoff, jitter=self.jitter),
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, ServingError) and exc.retryable),
            before_sleep=lambda state: log.info(
                "%s failed (attempt %d): %s; retrying", what, state.attempt_number,
                state.outcome.exception()),
            reraise=True,
        )
        try:
            return retrying(fn)
        except ServingError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise


class TokenSource:
    """Bearer tokens per API kind ("inference", "management"), resolved on every call.

    Precedence: explicit token (one string for all kinds, or a {kind: token} dict) >
    <PREFIX>_<KIND>_TOKEN > <PREFIX>_TOKEN > key file (argument, then <PREFIX>_KEY_FILE).
    The key file is re-read when its mtime changes, so keys rotated by TorchServe are picked up
    without restarting the application. No token at all means no Authorization header.
    """

    def __init__(self, token: str | Mapping[str, str] | None = None,
                 key_file: str | os.PathLike | None = None, env_prefix: str = "TORCHSERVE",
                 env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._explicit = token
        self._env_tokens = {
            kind: env.get(f"{env_prefix}_{kind.upper()}_TOKEN") or env.get(f"{env_prefix}_TOKEN")
            for kind in ("inference", "management")
        }
        key_file = key_file or env.get(f"{env_prefix}_KEY_FILE")
        self._key_file = Path(key_file) if key_file else None
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, str]] | None = None

    def _from_key_file(self) -> dict[str, str]:
        assert self._key_file is not None
        try:
            mtime = self._key_file.stat().st_mtime
        except OSError as exc:
            raise ConfigurationError(f"cannot read key file {self._key_file}: {exc}") from None
        with self._lock:
            if self._cached and self._cached[0] == mtime:
                return self._cached[1]
            try:
                doc = json.loads(self._key_file.read_text())
                keys = {"inference": doc["inference"]["key"],
                        "management": doc["management"]["key"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ConfigurationError(
                    f"{self._key_file} is not a TorchServe key_file.json: {exc!r}") from None
            self._cached = (mtime, keys)
            return keys

    def token(self, kind: str = "inference") -> str | None:
        if isinstance(self._explicit, str):
            return self._explicit
        if isinstance(self._explicit, Mapping) and self._explicit.get(kind):
            return self._explicit[kind]
        if self._env_tokens.get(kind):
            return self._env_tokens[kind]
        if self._key_file is not None:
            return self._from_key_file().get(kind)
        return None

    def headers(self, kind: str = "inference") -> dict[str, str]:
        token = self.token(kind)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def grpc_metadata(self, kind: str = "inference") -> tuple[tuple[str, str], ...]:
        token = self.token(kind)
        return (("authorization", f"Bearer {token}"),) if token else ()
