"""Retry and timeout behaviour against real local servers that fail N times, then answer.

HTTP: a real ThreadingHTTPServer on a loopback port, and a raw socket that resets the
connection after reading the request; gRPC: a real grpc.server implementing the generated
TorchServe InferenceAPIsService. The same RetryPolicy serves both.

The rule under test: retry only what provably did no work (never sent, or the server said 503 /
UNAVAILABLE), never faster than Retry-After, and never more than the retry budget allows.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest

from clients import TorchServeClient, TorchServeGrpcClient, errors
from clients.transport import RetryPolicy, Timeouts

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.05, max_backoff=0.2, jitter=0.5)


class Script:
    """What the fake server answers: `failures` times (status, message), then 200."""

    def __init__(self, failures: int = 0, status: int = 503, delay: float = 0.0,
                 error_type: str = "ServiceUnavailableException",
                 retry_after: str | None = None) -> None:
        self.failures, self.status, self.delay = failures, status, delay
        self.error_type, self.retry_after = error_type, retry_after
        self.times: list[float] = []
        self.requests = 0
        self.lock = threading.Lock()


def _handler(script: Script):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            with script.lock:
                script.requests += 1
                script.times.append(time.monotonic())
                n = script.requests
            if script.delay:
                time.sleep(script.delay)
            if n <= script.failures:
                status = script.status
                body = {"code": status, "type": script.error_type, "message": f"failure #{n}"}
            else:
                status, body = 200, [{"class_index": 1, "label": "goldfish", "probability": 1.0}]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if script.retry_after is not None and status != 200:
                self.send_header("Retry-After", script.retry_after)
            try:
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (the timeout test): expected

        do_GET = do_POST = do_PUT = do_DELETE = _answer

    return Handler


@pytest.fixture
def http_server():
    servers = []

    def start(script: Script, port: int = 0) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(script))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client(url: str, retry: RetryPolicy = FAST, read: float = 5.0) -> TorchServeClient:
    return TorchServeClient(url, url, url, token="t", model="m", retry=retry,
                            timeouts=Timeouts(connect=1.0, read=read))


def test_503_is_retried_until_success(http_server):
    script = Script(failures=2, status=503)
    with _client(http_server(script)) as client:
        assert client.predict(b"img")[0]["label"] == "goldfish"
    assert script.requests == 3


@pytest.mark.parametrize("status,error_type,cls", [
    (400, "InvalidImage", errors.InvalidInput),
    (401, "Unauthorized", errors.Unauthorized),
    (400, "InvalidKeyException", errors.Unauthorized),  # TorchServe 0.12's bad-key answer
    (429, "TooManyRequests", errors.Unavailable),
    (500, "InternalServerException", errors.ServingError),
    (504, "GatewayTimeout", errors.ServingError),  # a worker may still be computing it
])
def test_other_errors_are_not_retried(http_server, status, error_type, cls):
    script = Script(failures=5, status=status, error_type=error_type)
    with _client(http_server(script)) as client:
        with pytest.raises(cls, match="failure #1") as info:
            client.predict(b"img")
    assert script.requests == 1 and info.value.attempts == 1


def test_retry_after_is_honoured(http_server):
    script = Script(failures=1, status=503, retry_after="1")
    with _client(http_server(script)) as client:
        assert client.predict(b"img")[0]["label"] == "goldfish"
    assert script.requests == 2
    assert script.times[1] - script.times[0] >= 1.0  # FAST alone would wait <= 0.05 s


def test_retry_after_beyond_the_limit_gives_up_at_once(http_server):
    script = Script(failures=5, status=503, retry_after="120")
    with _client(http_server(script)) as client:
        with pytest.raises(errors.Unavailable) as info:
            client.predict(b"img")
    assert script.requests == 1 and info.value.retry_after == 120.0


def test_retry_budget_bounds_the_load_on_a_failing_server(http_server):
    script = Script(failures=10_000, status=503)
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.002,
                         budget_ratio=0.1, budget_reserve=3.0)
    requests = 40
    with _client(http_server(script), policy) as client:
        for _ in range(requests):
            with pytest.raises(errors.Unavailable):
                client.predict(b"img")
    # Without a budget: 40 * 4 = 160 tries. With it: 40 + the 3 reserve + ~10 % of 40.
    assert requests < script.requests <= requests + 3 + requests * 0.1 + 1


def _resetting_server(accepted: list[int]) -> tuple[str, socket.socket]:
    """A socket that reads each request, then resets the connection (RST, no answer): the
    request reached the server, which may have acted on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", listener


def test_reset_after_sending_is_not_retried():
    accepted: list[int] = []
    url, listener = _resetting_server(accepted)
    try:
        with _client(url) as client:
            with pytest.raises(errors.ServingError, match="after sending") as info:
                client.predict(b"img")
        assert not isinstance(info.value, errors.ConnectionFailed)
        assert info.value.attempts == 1 and len(accepted) == 1
    finally:
        listener.close()


def test_gives_up_after_the_limit_with_the_last_error(http_server):
    script = Script(failures=100, status=503)
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.05, max_backoff=0.1, jitter=0.0)
    started = time.monotonic()
    with _client(http_server(script), policy) as client:
        with pytest.raises(errors.Unavailable) as info:
            client.predict(b"img")
    assert script.requests == 3 and info.value.attempts == 3
    assert info.value.message == "failure #3"  # the last answer, not the first
    assert time.monotonic() - started >= 0.05 + 0.1  # backoff waited between tries


def test_non_idempotent_calls_are_not_retried(http_server):
    script = Script(failures=100, status=503)
    with _client(http_server(script)) as client:
        with pytest.raises(errors.Unavailable):
            client.register_model("m.mar")
        assert script.requests == 1
        with pytest.raises(errors.Unavailable):
            client.unregister_model("m")
        assert script.requests == 2
        with pytest.raises(errors.Unavailable):
            client.scale_workers(min_workers=1)  # PUT: idempotent, so retried
        assert script.requests == 2 + FAST.max_attempts


def test_connection_refused_is_retried_until_the_server_is_up(http_server):
    port = _free_port()
    script = Script()
    threading.Timer(0.3, lambda: http_server(script, port)).start()
    policy = RetryPolicy(max_attempts=10, initial_backoff=0.1, max_backoff=0.2, jitter=0.01)
    with _client(f"http://127.0.0.1:{port}", policy) as client:
        assert client.predict(b"img")[0]["label"] == "goldfish"
    assert script.requests == 1


def test_connection_refused_gives_up_after_the_limit():
    url = f"http://127.0.0.1:{_free_port()}"
    with _client(url, RetryPolicy(max_attempts=3, initial_backoff=0.01, jitter=0.0)) as client:
        with pytest.raises(errors.ConnectionFailed, match="refused") as info:
            client.ping()
    assert info.value.attempts == 3


def test_read_timeout_is_raised_and_not_retried(http_server):
    script = Script(delay=1.5)
    with _client(http_server(script), read=0.3) as client:
        with pytest.raises(errors.Timeout) as info:
            client.predict(b"img")
    assert info.value.attempts == 1
    assert script.requests == 1


# ------------------------------------------------------------------------------------ gRPC

@pytest.fixture
def grpc_server(grpc_stubs):
    from clients._generated import inference_pb2, inference_pb2_grpc

    servers = []

    def start(failures: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
              delay: float = 0.0):
        calls = {"n": 0}

        class Servicer(inference_pb2_grpc.InferenceAPIsServiceServicer):
            def Predictions(self, request, context):  # noqa: N802
                calls["n"] += 1
                time.sleep(delay)
                if calls["n"] <= failures:
                    context.abort(code, f"failure #{calls['n']}")
                return inference_pb2.PredictionResponse(
                    prediction=b'[{"class_index": 1, "label": "goldfish", "probability": 1.0}]')

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        inference_pb2_grpc.add_InferenceAPIsServiceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", calls

    yield start
    for server in servers:
        server.stop(None)


def test_grpc_unavailable_is_retried(grpc_server):
    target, calls = grpc_server(failures=2)
    with TorchServeGrpcClient(target, target, token="t", model="m", retry=FAST) as client:
        assert client.predict(b"img")[0]["label"] == "goldfish"
    assert calls["n"] == 3


def test_grpc_invalid_argument_is_not_retried(grpc_server):
    target, calls = grpc_server(failures=5, code=grpc.StatusCode.INVALID_ARGUMENT)
    with TorchServeGrpcClient(target, target, token="t", model="m", retry=FAST) as client:
        with pytest.raises(errors.InvalidInput, match="failure #1"):
            client.predict(b"img")
    assert calls["n"] == 1


def test_grpc_gives_up_with_the_last_error(grpc_server):
    target, calls = grpc_server(failures=100)
    with TorchServeGrpcClient(target, target, model="m", retry=FAST) as client:
        with pytest.raises(errors.Unavailable, match="failure #4") as info:
            client.predict(b"img")
    assert calls["n"] == 4 and info.value.attempts == 4


def test_grpc_deadline_is_a_timeout(grpc_server):
    target, calls = grpc_server(failures=0, delay=1.0)
    with TorchServeGrpcClient(target, target, model="m", retry=FAST,
                              timeouts=Timeouts(connect=0.1, read=0.2)) as client:
        with pytest.raises(errors.Timeout):
            client.predict(b"img")
    assert calls["n"] == 1


def test_grpc_connection_refused_is_retried_then_raised():
    target = f"127.0.0.1:{_free_port()}"
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, jitter=0.0)
    with TorchServeGrpcClient(target, target, model="m", retry=policy) as client:
        with pytest.raises(errors.ConnectionFailed) as info:
            client.predict(b"img")
    assert info.value.attempts == 2
