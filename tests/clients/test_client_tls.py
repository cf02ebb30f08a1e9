"""TLS options of the REST and gRPC clients against real TLS servers on loopback ports that
require a client certificate. Certificates come from a throwaway CA made by trustme."""

from __future__ import annotations

import json
import ssl
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
import trustme

from clients import TLS, TorchServeClient, TorchServeGrpcClient, errors
from clients.transport import RetryPolicy

ANSWER = [{"class_index": 1, "label": "goldfish", "probability": 1.0}]
ONCE = RetryPolicy.none()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """CA bundle, server certificate for localhost/127.0.0.1, client certificate: PEM files."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client.example")
    files = {"ca": root / "ca.pem", "server": root / "server.pem",
             "client_cert": root / "client.pem", "client_key": root / "client.key"}
    ca.cert_pem.write_to_path(files["ca"])
    server.private_key_and_cert_chain_pem.write_to_path(files["server"])
    client.cert_chain_pems[0].write_to_path(files["client_cert"])
    client.private_key_pem.write_to_path(files["client_key"])
    other = trustme.CA()  # a CA that signed nothing of ours
    files["other_ca"] = root / "other.pem"
    other.cert_pem.write_to_path(files["other_ca"])
    return files


@pytest.fixture(scope="module")
def https_url(pki):
    served = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _answer(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            served.append(self.path)
            body = json.dumps({"status": "Healthy"} if self.path == "/ping" else ANSWER).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["ca"])
    context.load_cert_chain(pki["server"])
    context.verify_mode = ssl.CERT_REQUIRED  # a client certificate is required
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


def _rest(url: str, tls: TLS | None) -> TorchServeClient:
    return TorchServeClient(url, url, url, token="t", model="m", tls=tls, retry=ONCE)


def test_rest_with_ca_and_client_certificate(pki, https_url):
    url, served = https_url
    tls = TLS(pki["ca"], pki["client_cert"], pki["client_key"])
    with _rest(url, tls) as client:
        assert client.ping() == "Healthy"
        assert client.classify_image(b"\xff\xd8\xff-bytes")[0].label == "goldfish"
    assert served[-2:] == ["/ping", "/predictions/efficientnet_lite0"]


def test_rest_refuses_a_server_its_ca_did_not_sign(pki, https_url):
    url, served = https_url
    before = len(served)
    tls = TLS(pki["other_ca"], pki["client_cert"], pki["client_key"])
    with _rest(url, tls) as client:
        with pytest.raises(errors.ConnectionFailed, match="certificate verify failed"):
            client.ping()
    assert len(served) == before  # nothing was sent


def test_rest_without_client_certificate_is_refused_by_the_server(pki, https_url):
    url, served = https_url
    before = len(served)
    with _rest(url, TLS(pki["ca"])) as client:
        with pytest.raises(errors.ConnectionFailed):
            client.ping()
    assert len(served) == before


def test_tls_needs_both_halves_of_a_client_certificate(pki):
    with pytest.raises(ValueError, match="both"):
        TLS(pki["ca"], cert_file=pki["client_cert"])


@pytest.fixture(scope="module")
def grpc_tls_target(pki, grpc_stubs):
    from clients._generated import inference_pb2, inference_pb2_grpc

    class Servicer(inference_pb2_grpc.InferenceAPIsServiceServicer):
        def Predictions(self, request, context):  # noqa: N802
            return inference_pb2.PredictionResponse(prediction=json.dumps(ANSWER).encode())

    pem = pki["server"].read_bytes()
    credentials = grpc.ssl_server_credentials(
        [(pem, pem)], root_certificates=pki["ca"].read_bytes(), require_client_auth=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    inference_pb2_grpc.add_InferenceAPIsServiceServicer_to_server(Servicer(), server)
    port = server.add_secure_port("localhost:0", credentials)
    server.start()
    yield f"localhost:{port}"
    server.stop(None)


def test_grpc_with_ca_and_client_certificate(pki, grpc_tls_target):
    tls = TLS(pki["ca"], pki["client_cert"], pki["client_key"])
    with TorchServeGrpcClient(grpc_tls_target, grpc_tls_target, token="t", model="m",
                              tls=tls, retry=ONCE) as client:
        assert client.classify_image(b"img")[0].label == "goldfish"


@pytest.mark.parametrize("which", ["other_ca", "no_client_cert"])
def test_grpc_tls_failures_are_connection_failures(pki, grpc_tls_target, which):
    tls = (TLS(pki["other_ca"], pki["client_cert"], pki["client_key"]) if which == "other_ca"
           else TLS(pki["ca"]))
    with TorchServeGrpcClient(grpc_tls_target, grpc_tls_target, token="t", model="m",
                              tls=tls, retry=ONCE) as client:
        with pytest.raises(errors.ConnectionFailed) as info:
            client.classify_image(b"img")
    assert isinstance(info.value, errors.ConnectionFailed) and info.value.grpc_code == "UNAVAILABLE"
