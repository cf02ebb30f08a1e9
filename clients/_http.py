"""REST transport shared by the TorchServe and TF Serving REST clients.

One urllib3.PoolManager per client: keep-alive connections are pooled and reused, and the pool
manager is thread-safe (a requests.Session is not documented as such), so one client can be
shared by all threads of an application. urllib3's own retries are off: retrying is the
transport policy's job (clients.transport.RetryPolicy), applied identically to gRPC.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3 import exceptions as u3

from clients import errors
from clients.transport import RetryPolicy, Timeouts

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
    """Pooled HTTP with typed errors and the shared retry policy."""

    def __init__(self, timeouts: Timeouts | None = None, retry: RetryPolicy | None = None,
                 pool_maxsize: int = 10) -> None:
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_maxsize, retries=False,
                                         headers={"User-Agent": USER_AGENT})

    def close(self) -> None:
        self._pool.clear()

    def request(self, method: str, url: str, *, body: bytes | None = None,
                json: Any = None, fields: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, idempotent: bool = True,
                timeout: Timeouts | None = None, ok: tuple[int, ...] = ()) -> Response:
        """Send one request (retried per policy); return the 2xx response or raise ServerError.

        Exactly one of body/json/fields may be given; fields is sent as multipart/form-data.
        Status codes in `ok` are returned instead of raised (e.g. 202 is always fine).
        """
        timeout = timeout or self.timeouts
        hdrs = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif body is not None:
            hdrs.setdefault("Content-Type", "application/octet-stream")

        # urllib3 hands unknown keywords to the connection: pass fields only when used.
        extra = {"fields": fields} if fields is not None else {}

        def once() -> Response:
            try:
                resp = self._pool.request(
                    method, url, body=body, headers=hdrs, **extra,
                    timeout=urllib3.Timeout(connect=timeout.connect, read=timeout.read),
                )
            except u3.NewConnectionError as exc:
                # Checked before ConnectTimeoutError, which it subclasses.
                raise errors.ConnectionFailed(f"cannot connect: {_reason(exc)}", url=url) from None
            except u3.ConnectTimeoutError:
                raise errors.Timeout(f"connect timeout after {timeout.connect}s", url=url,
                                     connect=True) from None
            except u3.ReadTimeoutError:
                raise errors.Timeout(f"no answer within the read timeout ({timeout.read}s)",
                                     url=url) from None
            except (u3.ProtocolError, u3.SSLError, u3.ProxyError, u3.LocationParseError,
                    u3.HTTPError) as exc:
                raise errors.ConnectionFailed(f"connection failed: {_reason(exc)}",
                                              url=url) from None
            if resp.status >= 400 and resp.status not in ok:
                raise errors.from_http(resp.status, resp.data, url=url, reason=resp.reason)
            return Response(resp.status, resp.data, resp.headers)

        return self.retry.call(once, idempotent=idempotent, what=f"{method} {url}")


def _reason(exc: Exception) -> str:
    text = str(exc)
    # urllib3 prefixes messages with the connection object's repr; keep the useful tail.
    return text.split(": ", 1)[-1] if text.startswith("<") else text
