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

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import tenacity

from clients import endpoints
from clients.errors import ConfigurationError, ServingError

log = logging.getLogger("clients")
T = TypeVar("T")

def resolve_address(explicit: str | None, env_name: str, env: Mapping[str, str] | None = None
                    ) -> str:
    """explicit argument > environment variable > (TorchServe) the ports `make serve` recorded >
    the server's documented default port (clients.endpoints.address)."""
    return endpoints.address(env_name, explicit, env=env)


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

    TorchServe (env_prefix "TORCHSERVE"): the lookup order of clients.endpoints.key_source
    (argument > per-API and shared token variables > TORCHSERVE_KEY_FILE > the repo's
    .run/torchserve/key_file.json). A key file is re-read when its mtime changes, so keys
    rotated by TorchServe are picked up without restarting the application. Other prefixes
    (TF Serving, which has no auth of its own: a gateway's token) use only the argument and
    <PREFIX>_TOKEN. No token at all means no Authorization header.
    """

    def __init__(self, token: str | None = None, key_file: str | os.PathLike | None = None,
                 env_prefix: str = "TORCHSERVE", env: Mapping[str, str] | None = None,
                 start: str | os.PathLike | None = None) -> None:
        env = os.environ if env is None else env
        if env_prefix == "TORCHSERVE":
            self._sources = {kind: endpoints.key_source(kind, token=token, key_file=key_file,
                                                        env=env, start=start)
                             for kind in endpoints.KEY_KINDS}
        else:
            fixed = token or env.get(f"{env_prefix}_TOKEN")
            self._sources = {kind: endpoints.KeySource(fixed, None, "argument")
                             for kind in endpoints.KEY_KINDS}
        self._lock = threading.Lock()
        self._cached: dict[Path, tuple[float, dict[str, str]]] = {}

    def _from_key_file(self, path: Path) -> dict[str, str]:
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise ConfigurationError(f"cannot read key file {path}: {exc}") from None
        with self._lock:
            cached = self._cached.get(path)
            if cached and cached[0] == mtime:
                return cached[1]
        try:
            keys = endpoints.read_key_file(path)
        except (OSError, endpoints.KeyFileError) as exc:
            raise ConfigurationError(str(exc)) from None
        with self._lock:
            self._cached[path] = (mtime, keys)
        return keys

    def token(self, kind: str = "inference") -> str | None:
        source = self._sources[kind]
        if source.key_file is not None:
            return self._from_key_file(source.key_file)[kind]
        return source.token

    def headers(self, kind: str = "inference") -> dict[str, str]:
        token = self.token(kind)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def grpc_metadata(self, kind: str = "inference") -> tuple[tuple[str, str], ...]:
        token = self.token(kind)
        return (("authorization", f"Bearer {token}"),) if token else ()
