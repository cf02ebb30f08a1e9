"""REST transport shared by the TorchServe and TF Serving REST clients.

One urllib3.PoolManager per client: keep-alive connections are pooled and reused, and the pool
manager is thread-safe, so one client can be shared by all threads of an application.
urllib3's own retries are off: retrying is the transport policy's job
(clients.transport.RetryPolicy), applied identically to gRPC.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3 import exceptions as u3

from clients import errors
from clients.transport import TLS, RetryPolicy, Timeouts

USER_AGENT = "serving-bundle-client"


@dataclass(frozen=True)
class Response:
    status: int
    data: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        try:
            return jsonlib.loads(self.data)
        except ValueError as exc:
            raise errors.ServingError(f"the server answered non-JSON: {exc}; "
                                      f"body starts {self.data[:80]!r}") from None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class HttpTransport:
    """Pooled HTTP(S) with typed errors and the shared retry policy."""

    def __init__(self, timeouts: Timeouts | None = None, retry: RetryPolicy | None = None,
                 tls: TLS | None = None, pool_maxsize: int = 10) -> None:
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.budget = self.retry.budget()
        ssl: dict[str, Any] = {}
        if tls is not None:
            ssl = {"cert_reqs": "CERT_REQUIRED", "ca_certs": tls.ca_file,
                   "cert_file": tls.cert_file, "key_file": tls.key_file}
            ssl = {k: str(v) if k != "cert_reqs" else v for k, v in ssl.items() if v is not None}
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_maxsize, retries=False,
                                         headers={"User-Agent": USER_AGENT}, **ssl)

    def close(self) -> None:
        self._pool.clear()

    def request(self, method: str, url: str, *, body: bytes | None = None,
                json: Any = None, headers: Mapping[str, str] | None = None,
                idempotent: bool = True, ok: tuple[int, ...] = ()) -> Response:
        """Send one request (retried per policy); return the 2xx response or raise.

        At most one of body/json. Status codes in `ok` are returned instead of raised.
        """
        hdrs = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif body is not None:
            hdrs.setdefault("Content-Type", "application/octet-stream")
        timeout = urllib3.Timeout(connect=self.timeouts.connect, read=self.timeouts.read)

        def once() -> Response:
            try:
                resp = self._pool.request(method, url, body=body, headers=hdrs, timeout=timeout)
            except (u3.NewConnectionError, u3.ConnectTimeoutError, u3.SSLError,
                    u3.ProxyError) as exc:
                # Raised while connecting (TCP, proxy or TLS handshake): nothing was sent.
                raise errors.ConnectionFailed(f"cannot connect: {_reason(exc)}", url=url) from None
            except u3.ReadTimeoutError:
                raise errors.Timeout(f"no answer within the read timeout ({self.timeouts.read}s)",
                                     url=url) from None
            except (u3.ProtocolError, u3.HTTPError) as exc:
                # The request may have reached the server: not provably unprocessed.
                raise errors.ServingError(f"connection lost after sending: {_reason(exc)}",
                                          url=url) from None
            if resp.status >= 400 and resp.status not in ok:
                raise errors.from_http(resp.status, resp.data, url=url, reason=resp.reason,
                                       retry_after=resp.headers.get("Retry-After"))
            return Response(resp.status, resp.data, resp.headers)

        return self.retry.call(once, idempotent=idempotent, what=f"{method} {url}",
                               budget=self.budget)


def _reason(exc: Exception) -> str:
    text = str(exc)
    # urllib3 prefixes messages with the connection object's repr; keep the useful tail.
    return text.split(": ", 1)[-1] if text.startswith("<") else text
