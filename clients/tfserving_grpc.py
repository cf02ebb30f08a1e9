"""TF Serving gRPC client: Predict, GetModelMetadata and GetModelStatus through
tensorflow-serving-api's official stubs.

Needs the `tfserving-grpc` extra: tensorflow-serving-api's messages are built on TensorFlow's
own protos (TensorProto, SignatureDef), so it pulls in TensorFlow itself; tensors are converted
with tf.make_tensor_proto / tf.make_ndarray. Thread-safe: one channel per client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from clients import errors
from clients._grpc import GrpcTransport
from clients.tfserving_common import (
    Signature,
    TensorSpec,
    TFServingBase,
    VersionStatus,
    as_array,
)
from clients.transport import TLS, RetryPolicy, Timeouts, TokenSource, resolve_address

DEFAULT_SIGNATURE = TFServingBase.DEFAULT_SIGNATURE

EXTRA_HINT = "pip install 'serving-bundle-client[tfserving-grpc]' (pulls in tensorflow)"


def _apis():
    try:
        import tensorflow as tf
        from tensorflow_serving.apis import (
            get_model_metadata_pb2,
            get_model_status_pb2,
            model_service_pb2_grpc,
            predict_pb2,
            prediction_service_pb2_grpc,
        )
    except ImportError as exc:
        raise ImportError(f"TF Serving gRPC needs {EXTRA_HINT}: {exc}") from None
    return tf, predict_pb2, get_model_metadata_pb2, get_model_status_pb2, \
        prediction_service_pb2_grpc, model_service_pb2_grpc


class TFServingGrpcClient(TFServingBase):
    """gRPC client for one TF Serving (target host:port, default port 8500)."""

    def __init__(self, target: str | None = None, *, model: str | None = None,
                 version: int | None = None, label: str | None = None, token: str | None = None,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None,
                 tls: TLS | None = None) -> None:
        (self._tf, self._predict_pb2, self._meta_pb2, self._status_pb2, prediction_grpc,
         model_grpc) = _apis()
        super().__init__(model, version, label)
        self.target = resolve_address(target, "TFSERVING_GRPC_TARGET")
        self.tokens = TokenSource(token, None, "TFSERVING")
        self._transport = GrpcTransport(self.target, timeouts, retry, tls)
        self._predictions = prediction_grpc.PredictionServiceStub(self._transport.channel)
        self._models = model_grpc.ModelServiceStub(self._transport.channel)

    def close(self) -> None:
        self._transport.close()

    def _spec(self, spec: Any, model: str | None, version: int | None, label: str | None,
              signature_name: str | None = None) -> None:
        version, label = self._selection(version, label)
        spec.name = self._model(model)
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name

    def _call(self, rpc: Any, request: Any, what: str) -> Any:
        return self._transport.call(rpc, request, metadata=self.tokens.grpc_metadata("inference"),
                                    what=what)

    # -- status and metadata -----------------------------------------------------------------
    def status(self, model: str | None = None, version: int | None = None,
               label: str | None = None) -> list[VersionStatus]:
        request = self._status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, label)
        reply = self._call(self._models.GetModelStatus, request, "GetModelStatus")
        states = self._status_pb2.ModelVersionStatus.State
        return [VersionStatus(int(v.version), states.Name(v.state),
                              _enum_name(v.status, "error_code"), v.status.error_message)
                for v in reply.model_version_status]

    def metadata(self, model: str | None = None, version: int | None = None,
                 label: str | None = None) -> Any:
        """The GetModelMetadataResponse (signature_def metadata unpacked by signatures())."""
        request = self._meta_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version, label)
        return self._call(self._predictions.GetModelMetadata, request, "GetModelMetadata")

    def _fetch_signatures(self, model: str | None, version: int | None,
                          label: str | None) -> dict[str, Signature]:
        sig_map = self._meta_pb2.SignatureDefMap()
        self.metadata(model, version, label).metadata["signature_def"].Unpack(sig_map)
        return {name: _signature(name, d, self._tf) for name, d in sig_map.signature_def.items()}

    # -- predict -----------------------------------------------------------------------------
    def predict(self, inputs: Any, model: str | None = None, *,
                signature_name: str = DEFAULT_SIGNATURE, version: int | None = None,
                label: str | None = None, output_filter: Iterable[str] = ()
                ) -> dict[str, np.ndarray]:
        """Predict. inputs: {name: array} (or one array for a single-input signature, whose
        input name is then read from the signature). Arrays are cast to the declared dtypes."""
        tf = self._tf
        lookup_error: errors.ServingError | None = None
        try:
            signature = self.signature(signature_name, model, version, label)
        except errors.ServingError as exc:
            # Unknown signature or no metadata: let the server give its own answer.
            signature, lookup_error = None, exc
        if not isinstance(inputs, Mapping):
            if lookup_error is not None:
                raise lookup_error
            if signature is None or len(signature.inputs) != 1:
                raise ValueError("pass inputs as {name: array} for this signature")
            inputs = {next(iter(signature.inputs)): inputs}
        request = self._predict_pb2.PredictRequest(output_filter=list(output_filter))
        self._spec(request.model_spec, model, version, label, signature_name)
        for name, value in inputs.items():
            spec = signature.inputs.get(name) if signature else None
            array = as_array(value)
            if spec is not None and spec.dtype != "DT_STRING" and array.dtype != object:
                array = array.astype(spec.numpy_dtype, copy=False)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        reply = self._call(self._predictions.Predict, request, "Predict")
        return {name: tf.make_ndarray(t) for name, t in reply.outputs.items()}


def _signature(name: str, sig: Any, tf: Any) -> Signature:  # noqa: ARG001
    def specs(section: Any) -> dict[str, TensorSpec]:
        out = {}
        for key, info in section.items():
            shape = None if info.tensor_shape.unknown_rank else tuple(
                int(d.size) for d in info.tensor_shape.dim)
            out[key] = TensorSpec(key, _enum_name(info, "dtype"), shape)
        return out

    return Signature(name, sig.method_name, specs(sig.inputs), specs(sig.outputs))


def _enum_name(message: Any, field: str) -> str:
    """The enum value name of message.field, from the message's own descriptor."""
    enum = message.DESCRIPTOR.fields_by_name[field].enum_type
    value = getattr(message, field)
    return enum.values_by_number[value].name if value in enum.values_by_number else str(value)
