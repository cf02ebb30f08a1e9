"""gRPC transport shared by the TorchServe and TF Serving gRPC clients.

One channel per client (a grpc.Channel multiplexes concurrent calls over one HTTP/2 connection
and is thread-safe). gRPC's own retry machinery is disabled so that the shared RetryPolicy is
the only one deciding, for REST and gRPC alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from clients import errors
from clients.transport import TLS, RetryPolicy, Timeouts

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # above TorchServe's 32 MiB max_request_size

GRPC_EXTRA_HINT = "pip install 'serving-bundle-client[grpc]'"


def import_grpc():
    try:
        import grpc
    except ImportError:
        raise ImportError(f"gRPC support is an extra: {GRPC_EXTRA_HINT}") from None
    return grpc


class GrpcTransport:
    """A channel plus the policy: typed errors, deadlines, retries."""

    def __init__(self, target: str, timeouts: Timeouts | None = None,
                 retry: RetryPolicy | None = None, tls: TLS | None = None) -> None:
        grpc = import_grpc()
        self._grpc = grpc
        self.target = target
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.budget = self.retry.budget()
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 0),
        ]
        if tls is not None:
            ca, key, chain = tls.read()
            creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                                 certificate_chain=chain)
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)

    def close(self) -> None:
        self.channel.close()

    def _map(self, exc: Exception) -> errors.ServingError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return errors.from_grpc(code.name if code else "UNKNOWN", details, self.target)

    def call(self, method: Callable[..., Any], request: Any, *,
             metadata: tuple[tuple[str, str], ...] = (), idempotent: bool = True,
             what: str = "gRPC call") -> Any:
        """A unary call under the retry policy; the deadline is connect + read timeout."""
        deadline = self.timeouts.total

        def once() -> Any:
            try:
                return method(request, metadata=metadata, timeout=deadline)
            except self._grpc.RpcError as exc:
                raise self._map(exc) from None

        return self.retry.call(once, idempotent=idempotent, what=f"{what} @ {self.target}",
                               budget=self.budget)

    def stream(self, method: Callable[..., Any], request: Any, *,
               metadata: tuple[tuple[str, str], ...] = (),
               what: str = "gRPC stream") -> Iterator[Any]:
        """A server-streaming call. Retried only until the first message arrives: after that,
        a retry would replay messages the caller has already consumed."""
        deadline = self.timeouts.total

        def first() -> tuple[Any, Any]:
            responses = method(request, metadata=metadata, timeout=deadline)
            try:
                return responses, next(responses)
            except StopIteration:
                return responses, None
            except self._grpc.RpcError as exc:
                raise self._map(exc) from None

        responses, head = self.retry.call(first, what=f"{what} @ {self.target}",
                                          budget=self.budget)
        if head is None:
            return
        yield head
        try:
            yield from responses
        except self._grpc.RpcError as exc:
            raise self._map(exc) from None
