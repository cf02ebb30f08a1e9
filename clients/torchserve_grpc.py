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
from clients._grpc import GrpcTransport
from clients.base import Client
from clients.inputs import ImageInput, Prediction, image_bytes
from clients.torchserve_rest import ModelHealth, check_health
from clients.transport import RetryPolicy, Timeouts, TokenSource, resolve_address


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
            raise errors.ConfigurationError(
                f"gRPC support is an extra: pip install 'serving-bundle-client[grpc]' ({exc})"
            ) from None
        raise errors.ConfigurationError(
            "the TorchServe gRPC stubs were not generated: run `python -m clients.build_protos` "
            "(needs torchserve and grpcio-tools) or install the client wheel, which ships them"
        ) from None
    return inference_pb2, inference_pb2_grpc, management_pb2, management_pb2_grpc


class TorchServeGrpcClient(Client):
    """gRPC client for one TorchServe (inference and management targets, host:port)."""

    def __init__(self, target: str | None = None, management_target: str | None = None, *,
                 token: str | Mapping[str, str] | None = None,
                 key_file: str | os.PathLike | None = None, model: str | None = None,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None,
                 tls: bool = False) -> None:
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
        try:
            return json.loads(reply.health).get("status", reply.health)
        except (ValueError, AttributeError):
            return reply.health

    def _request(self, image: ImageInput, model: str | None, version: str | None,
                 topk: int | None, extra: Mapping[str, bytes] | None = None):
        inputs = {"data": image_bytes(image)}
        if topk is not None:
            inputs["topk"] = str(topk).encode()
        inputs.update(extra or {})
        return self._pb.PredictionsRequest(model_name=self._model(model),
                                           model_version=version or "", input=inputs)

    def predict_raw(self, inputs: Mapping[str, bytes], model: str | None = None, *,
                    version: str | None = None) -> bytes:
        """Predictions with arbitrary named inputs; returns the raw prediction bytes."""
        request = self._pb.PredictionsRequest(model_name=self._model(model),
                                              model_version=version or "", input=dict(inputs))
        return self._inference.call(self._infer.Predictions, request,
                                    metadata=self.tokens.grpc_metadata("inference"),
                                    what="Predictions").prediction

    def predict(self, image: ImageInput, model: str | None = None, *, version: str | None = None,
                topk: int | None = None) -> Any:
        """One image -> the handler's JSON answer (same as REST)."""
        reply = self._inference.call(self._infer.Predictions,
                                     self._request(image, model, version, topk),
                                     metadata=self.tokens.grpc_metadata("inference"),
                                     what="Predictions")
        return self._decode(reply.prediction)

    def _decode(self, prediction: bytes) -> Any:
        doc = json.loads(prediction)
        error = errors.from_payload(doc, self.target)
        if error is not None:
            raise error
        return doc

    def classify_image(self, image: ImageInput, model: str | None = None, *,
                       version: str | None = None, topk: int | None = None) -> list[Prediction]:
        return [Prediction.from_json(p) for p in self.predict(image, model, version=version,
                                                              topk=topk)]

    def stream_predict(self, image: ImageInput, model: str | None = None, *,
                       version: str | None = None, topk: int | None = None) -> Iterator[Any]:
        """StreamPredictions: yields each decoded JSON chunk the handler sends (one for a
        non-streaming handler). An error status inside a chunk is raised as a typed error."""
        for reply in self._inference.stream(self._infer.StreamPredictions,
                                            self._request(image, model, version, topk),
                                            metadata=self.tokens.grpc_metadata("inference"),
                                            what="StreamPredictions"):
            if reply.HasField("status") and reply.status.code != 0:
                from grpc import StatusCode

                name = next((c.name for c in StatusCode if c.value[0] == reply.status.code),
                            "UNKNOWN")
                raise errors.from_grpc_code(name, reply.status.message, self.target)
            yield self._decode(reply.prediction)

    # -- management --------------------------------------------------------------------------
    def _mcall(self, rpc: str, request: Any, idempotent: bool = True) -> str:
        reply = self._management.call(getattr(self._manage, rpc), request,
                                      metadata=self.tokens.grpc_metadata("management"),
                                      idempotent=idempotent, what=rpc)
        return reply.msg

    @staticmethod
    def _status(msg: str) -> str:
        try:
            return json.loads(msg).get("status", msg)
        except (ValueError, AttributeError):
            return msg

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
        return self._status(self._mcall("ScaleWorker", request))

    def set_default(self, model: str | None, version: str) -> str:
        return self._status(self._mcall("SetDefault", self._mpb.SetDefaultRequest(
            model_name=self._model(model), model_version=version)))

    def register_model(self, url: str, *, model_name: str | None = None,
                       initial_workers: int = 1, synchronous: bool = True) -> str:
        """Needs enable_model_api=true on the server. Not retried (not idempotent)."""
        return self._status(self._mcall("RegisterModel", self._mpb.RegisterModelRequest(
            url=url, model_name=model_name or "", initial_workers=initial_workers,
            synchronous=synchronous), idempotent=False))

    def unregister_model(self, model: str, version: str | None = None) -> str:
        """Needs enable_model_api=true on the server. Not retried (not idempotent)."""
        return self._status(self._mcall("UnregisterModel", self._mpb.UnregisterModelRequest(
            model_name=model, model_version=version or ""), idempotent=False))

    def health(self, model: str | None = None, version: str | None = None) -> ModelHealth:
        """Same contract as TorchServeClient.health, over gRPC."""
        return check_health(self.describe_model, self._model(model), version)
