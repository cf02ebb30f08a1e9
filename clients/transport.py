"""Transport policy shared by all four clients: addresses, timeouts, TLS, retries, keys.

Protocol code (REST in _http.py, gRPC in _grpc.py) asks this module *what* to do; it never
decides retry or auth rules itself, so the four clients behave identically. Ports and the key
lookup order live in clients.endpoints (standard library only).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import tenacity

from clients import endpoints
from clients.errors import ConnectionFailed, ServingError, Unavailable

log = logging.getLogger("clients")
T = TypeVar("T")


def resolve_address(explicit: str | None, env_name: str, env: Mapping[str, str] | None = None
                    ) -> str:
    """explicit argument > environment variable > (TorchServe) the ports `make serve` recorded >
    the server's documented default port (clients.endpoints.address)."""
    return endpoints.address(env_name, explicit, env=env)


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `connect` bounds TCP/TLS/HTTP2 connection setup, `read` the wait for the answer
    (gRPC has one deadline per call: connect + read)."""

    connect: float = 5.0
    read: float = 60.0

    @property
    def total(self) -> float:
        return self.connect + self.read


@dataclass(frozen=True)
class TLS:
    """TLS for REST (https:// URLs) and gRPC. Without ca_file the system's trust store is used;
    cert_file and key_file (PEM) are the client certificate for servers that require one."""

    ca_file: str | os.PathLike | None = None
    cert_file: str | os.PathLike | None = None
    key_file: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(CA bundle, client key, client certificate chain) as gRPC's credentials want them."""
        def load(path: str | os.PathLike | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None
        return load(self.ca_file), load(self.key_file), load(self.cert_file)


class RetryBudget:
    """A token bucket that caps retries at about `ratio` of the requests (plus a small reserve
    for quiet periods), so a failing server gets at most (1 + ratio) times the load instead of
    max_attempts times. Shared by all calls of one client; thread-safe."""

    def __init__(self, ratio: float, reserve: float) -> None:
        self.ratio, self.reserve = ratio, reserve
        self._balance = reserve
        self._lock = threading.Lock()

    def deposit(self) -> None:
        """One first attempt was made."""
        with self._lock:
            self._balance = min(self.reserve, self._balance + self.ratio)

    def withdraw(self) -> bool:
        """May one retry be made? Spends its token if so."""
        with self._lock:
            if self._balance < 1.0:
                return False
            self._balance -= 1.0
            return True


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of failures that provably did no work.

    Retried: ConnectionFailed (the request was never sent: refused, DNS, TLS handshake,
    connect timeout) for any call, and Unavailable with HTTP 503 / gRPC UNAVAILABLE (the server
    said it did not take the request) for idempotent calls. Never retried: a connection reset
    or closed after the request was sent (the server may have processed it), read timeouts,
    429, Unauthorized and every other error.

    Backoff before retry n (1, 2, ...): b = min(max_backoff, initial_backoff * 2**(n-1)), slept
    for a uniform time in [b * (1 - jitter), b], so clients that failed together spread out.
    A server's Retry-After is honoured: never retried sooner (up to max_retry_after seconds;
    a longer wait gives up at once). The retry budget caps retries at budget_ratio of the
    requests (plus budget_reserve) per client. After max_attempts the last error is raised,
    with `attempts` set.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    jitter: float = 0.5
    max_retry_after: float = 30.0
    budget_ratio: float = 0.2
    budget_reserve: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter is a fraction of the backoff: 0..1")

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(max_attempts=1)

    def budget(self) -> RetryBudget:
        return RetryBudget(self.budget_ratio, self.budget_reserve)

    @staticmethod
    def retryable(exc: BaseException, idempotent: bool = True) -> bool:
        if isinstance(exc, ConnectionFailed):
            return True
        return (idempotent and isinstance(exc, Unavailable)
                and (exc.status_code == 503 or exc.grpc_code == "UNAVAILABLE"))

    def backoff(self, retry: int, exc: BaseException | None = None) -> float:
        """Seconds to sleep before retry number `retry` (1-based) after `exc`."""
        wanted = getattr(exc, "retry_after", None)
        if wanted is not None:
            return wanted * (1.0 + self.jitter * random.random())
        base = min(self.max_backoff, self.initial_backoff * 2 ** (retry - 1))
        return base * (1.0 - self.jitter * random.random())

    def call(self, fn: Callable[[], T], *, idempotent: bool = True, what: str = "request",
             budget: RetryBudget | None = None) -> T:
        """Run fn() under this policy. fn must raise only ServingError for failures."""
        if budget is not None:
            budget.deposit()

        def retry(state: tenacity.RetryCallState) -> bool:
            exc = state.outcome.exception()
            if state.attempt_number >= self.max_attempts or not self.retryable(exc, idempotent):
                return False
            if (getattr(exc, "retry_after", None) or 0.0) > self.max_retry_after:
                return False
            if budget is not None and not budget.withdraw():
                log.info("%s failed: %s; retry budget spent, not retrying", what, exc)
                return False
            return True

        # A fresh Retrying per call: its statistics are per-call state, so threads never share it.
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.max_attempts)),
            wait=lambda state: self.backoff(state.attempt_number, state.outcome.exception()),
            retry=retry,
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
            self.sources = {kind: endpoints.key_source(kind, token=token, key_file=key_file,
                                                       env=env, start=start)
                            for kind in endpoints.KEY_KINDS}
        else:
            fixed = token or env.get(f"{env_prefix}_TOKEN")
            self.sources = {kind: endpoints.KeySource(fixed, None, "argument")
                            for kind in endpoints.KEY_KINDS}
        self._lock = threading.Lock()
        self._cached: dict[Path, tuple[float, dict[str, str]]] = {}

    def _from_key_file(self, path: Path) -> dict[str, str]:
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise ServingError(f"cannot read key file {path}: {exc}") from None
        with self._lock:
            cached = self._cached.get(path)
            if cached and cached[0] == mtime:
                return cached[1]
        try:
            keys = endpoints.read_key_file(path)
        except (OSError, endpoints.KeyFileError) as exc:
            raise ServingError(str(exc)) from None
        with self._lock:
            self._cached[path] = (mtime, keys)
        return keys

    def token(self, kind: str = "inference") -> str | None:
        source = self.sources[kind]
        if source.key_file is not None:
            return self._from_key_file(source.key_file)[kind]
        return source.token

    def headers(self, kind: str = "inference") -> dict[str, str]:
        token = self.token(kind)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def grpc_metadata(self, kind: str = "inference") -> tuple[tuple[str, str], ...]:
        token = self.token(kind)
        return (("authorization", f"Bearer {token}"),) if token else ()
