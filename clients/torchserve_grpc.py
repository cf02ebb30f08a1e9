"""TorchServe gRPC client: inference (Ping, Predictions, StreamPredictions) and management
(ListModels, DescribeModel, ScaleWorker, SetDefault, Register/UnregisterModel).

Stubs come from clients._generated, produced by `python -m clients.build_protos` from the
.proto files inside TorchServe's model-server.jar and shipped in the client wheel.
Needs the `grpc` extra. Thread-safe: one channel per API, shared by all threads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from clients import errors
from clients._grpc import GRPC_EXTRA_HINT, GrpcTransport
from clients.torchserve_common import Body, TorchServeBase, as_body, check_answer, with_params
from clients.transport import TLS, RetryPolicy, Timeouts, TokenSource, resolve_address


def _stubs():
    try:
        from clients._generated import (
            inference_pb2,
            inference_pb2_grpc,
            management_pb2,
            management_pb2_grpc,
        )
    except ImportError as exc:
        if "grpc" in str(exc) or "google" in str(exc):
            raise ImportError(f"gRPC support is an extra: {GRPC_EXTRA_HINT} ({exc})") from None
        raise ImportError(
            "the TorchServe gRPC stubs were not generated: run `python -m clients.build_protos` "
            "(needs torchserve and grpcio-tools) or install the client wheel, which ships them"
        ) from None
    return inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc


def _status(msg: str) -> str:
    """The "status" of a management reply's JSON message, or the message itself."""
    try:
        return json.loads(msg).get("status", msg)
    except (ValueError, AttributeError):
        return msg


class TorchServeGrpcClient(TorchServeBase):
    """gRPC client for one TorchServe (inference and management targets, host:port)."""

    def __init__(self, target: str | None = None, management_target: str | None = None, *,
                 token: str | None = None, key_file: str | os.PathLike | None = None,
                 model: str | None = None, timeouts: Timeouts | None = None,
                 retry: RetryPolicy | None = None, tls: TLS | None = None) -> None:
        self._pb, inference_grpc, self._mpb, management_grpc = _stubs()
        self.target = resolve_address(target, "TORCHSERVE_GRPC_TARGET")
        self.management_target = resolve_address(management_target,
                                                 "TORCHSERVE_GRPC_MANAGEMENT_TARGET")
        self.model = model
        self.tokens = TokenSource(token, key_file, "TORCHSERVE")
        self._inference = GrpcTransport(self.target, timeouts, retry, tls)
        self._management = GrpcTransport(self.management_target, timeouts, retry, tls)
        self._infer = inference_grpc.InferenceAPIsServiceStub(self._inference.channel)
        self._manage = management_grpc.ManagementAPIsServiceStub(self._management.channel)

    def close(self) -> None:
        self._inference.close()
        self._management.close()

    # -- inference ---------------------------------------------------------------------------
    def ping(self) -> str:
        """The server's health string ("Healthy"); says nothing about models: see health()."""
        from google.protobuf import empty_pb2

        reply = self._inference.call(self._infer.Ping, empty_pb2.Empty(),
                                     metadata=self.tokens.grpc_metadata("inference"),
                                     what="Ping")
        return _status(reply.health)

    def _request(self, model: str, version: str | None, body: Body,
                 params: Mapping[str, Any]) -> Any:
        # The handler reads named inputs like REST's multipart fields: the input under "data",
        # parameters beside it. A JSON body carries its parameters inside.
        if isinstance(body, bytes):
            inputs = {"data": body, **{k: str(v).encode() for k, v in params.items()}}
        else:
            inputs = {"data": json.dumps(with_params(body, params)).encode()}
        return self._pb.PredictionsRequest(model_name=model, model_version=version or "",
                                           input=inputs)

    def _send(self, model: str, version: str | None, body: Body,
              params: Mapping[str, Any]) -> Any:
        reply = self._inference.call(self._infer.Predictions,
                                     self._request(model, version, body, params),
                                     metadata=self.tokens.grpc_metadata("inference"),
                                     what="Predictions")
        return check_answer(json.loads(reply.prediction), self.target)

    def stream_predict(self, data: bytes | dict | list, model: str | None = None, *,
                       version: str | None = None, params: Mapping[str, Any] | None = None
                       ) -> Iterator[Any]:
        """StreamPredictions: yields each decoded JSON chunk the handler sends (one for a
        non-streaming handler). An error status inside a chunk is raised as a typed error."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._request(self._model(model), version, as_body(data), clean)
        for reply in self._inference.stream(self._infer.StreamPredictions, request,
                                            metadata=self.tokens.grpc_metadata("inference"),
                                            what="StreamPredictions"):
            if reply.HasField("status") and reply.status.code != 0:
                from grpc import StatusCode

                name = next((c.name for c in StatusCode if c.value[0] == reply.status.code),
                            "UNKNOWN")
                raise errors.from_grpc(name, reply.status.message, self.target)
            yield check_answer(json.loads(reply.prediction), self.target)

    # -- management --------------------------------------------------------------------------
    def _mcall(self, rpc: str, request: Any, idempotent: bool = True) -> str:
        reply = self._management.call(getattr(self._manage, rpc), request,
                                      metadata=self.tokens.grpc_metadata("management"),
                                      idempotent=idempotent, what=rpc)
        return reply.msg

    def list_models(self, page_size: int = 100) -> list[dict[str, str]]:
        """Every registered model. ListModels' `limit` defaults to 0 in proto3, which would
        return no model: a real page size is always sent, and pages are followed."""
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be 1..1000 (TorchServe's bounds)")
        models: list[dict[str, str]] = []
        token = 0
        while True:
            doc = json.loads(self._mcall("ListModels", self._mpb.ListModelsRequest(
                limit=page_size, next_page_token=token)))
            models.extend(doc.get("models", []))
            next_token = doc.get("nextPageToken")
            if not next_token:
                return models
            token = int(next_token)

    def describe_model(self, model: str | None = None, version: str | None = None
                       ) -> list[dict[str, Any]]:
        return json.loads(self._mcall("DescribeModel", self._mpb.DescribeModelRequest(
            model_name=self._model(model), model_version=version or "")))

    def scale_workers(self, model: str | None = None, min_workers: int | None = None,
                      max_workers: int | None = None, *, version: str | None = None,
                      synchronous: bool = True, timeout: int | None = None) -> str:
        # proto3's unset timeout is 0, which TorchServe reads as "kill busy workers now";
        # send REST's documented default instead: -1, wait for pending requests.
        request = self._mpb.ScaleWorkerRequest(
            model_name=self._model(model), model_version=version or "",
            min_worker=min_workers or 0, max_worker=max_workers or 0, synchronous=synchronous,
            timeout=-1 if timeout is None else timeout)
        return _status(self._mcall("ScaleWorker", request))

    def set_default(self, model: str | None, version: str) -> str:
        return _status(self._mcall("SetDefault", self._mpb.SetDefaultRequest(
            model_name=self._model(model), model_version=version)))

    def register_model(self, url: str, *, model_name: str | None = None,
                       initial_workers: int = 1, synchronous: bool = True) -> str:
        """Needs enable_model_api=true on the server. Retried only when never sent."""
        return _status(self._mcall("RegisterModel", self._mpb.RegisterModelRequest(
            url=url, model_name=model_name or "", initial_workers=initial_workers,
            synchronous=synchronous), idempotent=False))

    def unregister_model(self, model: str, version: str | None = None) -> str:
        """Needs enable_model_api=true on the server. Retried only when never sent."""
        return _status(self._mcall("UnregisterModel", self._mpb.UnregisterModelRequest(
            model_name=model, model_version=version or ""), idempotent=False))
