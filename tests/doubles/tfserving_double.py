"""A TEST DOUBLE of TF Serving (tensorflow_model_server cannot run here): the documented REST
paths and the official gRPC PredictionService/ModelService servicers, over the real SavedModel
loaded with tf.saved_model.load.

What is faithful: URL layout (/v1/models/<m>[/versions/<v>|/labels/<l>][:predict|:classify|
:regress|/metadata]), row and columnar JSON forms with {"b64": ...}, the {"error": "..."} body,
HTTP status from the TF status code (INVALID_ARGUMENT -> 400, NOT_FOUND -> 404), TF's own error
message for bad input, SignatureDefs read from saved_model.pb as the real server reports them,
servicers subclassing tensorflow_serving.apis' generated base classes.
What is not: batching, model reloading, warmup, monitoring, multiple models per config file.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
HTTP_OF = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
           grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.UNIMPLEMENTED: 501,
           grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.UNAVAILABLE: 503}


class ServingStatus(Exception):
    """A TF status: gRPC code + message; REST turns it into HTTP status + {"error": message}."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def invalid(message: str) -> ServingStatus:
    return ServingStatus(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass
class Servable:
    name: str
    version: int
    path: Path
    loaded: Any = None
    signature_defs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Servable:
        self.loaded = tf.saved_model.load(str(self.path))
        # The SignatureDefs as written in saved_model.pb: what the real server reports.
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((self.path / "saved_model.pb").read_bytes())
        meta = next(m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags)
        self.signature_defs = {k: v for k, v in meta.signature_def.items()
                               if not k.startswith("__")}
        return self


class Models:
    """Servables by name and version, version labels, and the TF-Serving-like operations."""

    def __init__(self) -> None:
        self.servables: dict[str, dict[int, Servable]] = {}
        self.labels: dict[str, dict[str, int]] = {}

    def add(self, name: str, version: int, path: Path, labels: dict[str, int] | None = None
            ) -> None:
        self.servables.setdefault(name, {})[int(version)] = Servable(name, version, path).load()
        self.labels.setdefault(name, {}).update(labels or {})

    def resolve(self, name: str, version: int | None = None, label: str | None = None
                ) -> Servable:
        versions = self.servables.get(name)
        if not versions:
            what = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise ServingStatus(grpc.StatusCode.NOT_FOUND,
                                f"Servable not found for request: {what}")
        if label:
            if label not in self.labels.get(name, {}):
                raise invalid(f"Unrecognized servable version label: {label}")
            version = self.labels[name][label]
        if version is None:
            return versions[max(versions)]
        if int(version) not in versions:
            raise ServingStatus(grpc.StatusCode.NOT_FOUND,
                                f"Servable not found for request: Specific({name}, {version})")
        return versions[int(version)]

    def status(self, name: str, version: int | None = None) -> list[tuple[int, str]]:
        versions = self.servables.get(name)
        if not versions:
            raise ServingStatus(grpc.StatusCode.NOT_FOUND,
                                f"Could not find any versions of model {name}")
        if version is not None and int(version) not in versions:
            raise ServingStatus(grpc.StatusCode.NOT_FOUND,
                                f"Could not find version {version} of model {name}")
        chosen = [int(version)] if version is not None else sorted(versions, reverse=True)
        return [(v, "AVAILABLE") for v in chosen]

    @staticmethod
    def signature(servable: Servable, name: str, method: str) -> Any:
        name = name or "serving_default"
        if name not in servable.signature_defs:
            raise invalid(f'Serving signature key "{name}" not found.')
        sig = servable.signature_defs[name]
        if sig.method_name != method:
            kind = {PREDICT: "predict", CLASSIFY: "classification", REGRESS: "regression"}[method]
            raise invalid(f"Expected {kind} signature method_name to be {method}. "
                          f"Was: {sig.method_name}")
        return sig

    @staticmethod
    def run(servable: Servable, sig_name: str, sig: Any, inputs: dict[str, np.ndarray],
            output_filter: list[str] | None = None) -> dict[str, np.ndarray]:
        missing = set(sig.inputs) - set(inputs)
        extra = set(inputs) - set(sig.inputs)
        if extra or missing:
            alias = sorted(extra or missing)[0]
            raise invalid(f"input tensor alias not found in signature: {alias}. Inputs "
                          f"expected to be in the set {{{','.join(sorted(sig.inputs))}}}.")
        tensors = {}
        for key, value in inputs.items():
            dtype = tf.dtypes.as_dtype(sig.inputs[key].dtype)
            try:
                tensors[key] = tf.constant(value, dtype=dtype)
            except (TypeError, ValueError, tf.errors.InvalidArgumentError) as exc:
                raise invalid(f"Expected tensor '{key}' of type {dtype.name}: {exc}") from None
        fn = servable.loaded.signatures[sig_name or "serving_default"]
        try:
            outputs = fn(**tensors)
        except tf.errors.OpError as exc:
            code = grpc.StatusCode.INVALID_ARGUMENT if isinstance(
                exc, tf.errors.InvalidArgumentError) else grpc.StatusCode.INTERNAL
            raise ServingStatus(code, _op_message(exc.message)) from None
        if output_filter:
            unknown = set(output_filter) - set(outputs)
            if unknown:
                raise invalid(f"output tensor alias not found in signature: {sorted(unknown)[0]}")
            outputs = {k: v for k, v in outputs.items() if k in output_filter}
        return {k: v.numpy() for k, v in outputs.items()}


def _op_message(message: str) -> str:
    """The op's own message, without eager mode's "Graph execution error" preamble (the real
    server runs the graph in a session and reports only the op error)."""
    marker = "<stack traces unavailable>\n"
    if message.startswith("Graph execution error") and marker in message:
        message = message.split(marker, 1)[1]
    return message.split(" [Op:__inference", 1)[0].strip()


# ------------------------------------------------------------------------------------ REST

def _decode_json_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError as exc:
                raise invalid(f"Unable to base64 decode: {exc}") from None
        return {k: _decode_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_json_value(v) for v in value]
    if isinstance(value, str):
        return value.encode()
    return value


def _encode_json_value(name: str, value: np.ndarray | bytes) -> Any:
    if isinstance(value, bytes):  # one instance's element of a per-instance string output
        value = np.asarray(value, dtype=object)
    if value.dtype == object or value.dtype.kind == "S":
        def enc(v: Any) -> Any:
            if isinstance(v, list):
                return [enc(x) for x in v]
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(v).decode()}
            return v.decode("utf-8", "replace")
        return enc(value.tolist())
    return value.tolist()


def rest_predict(models: Models, servable: Servable, body: dict) -> dict:
    sig_name = body.get("signature_name") or "serving_default"
    sig = models.signature(servable, sig_name, PREDICT)
    if ("instances" in body) == ("inputs" in body):
        raise invalid("Missing 'inputs' or 'instances' key" if "instances" not in body else
                      "Not both 'instances' and 'inputs' can be specified")
    aliases = sorted(sig.inputs)
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise invalid("Expected 'instances' to be a non-empty list")
        rows = [_decode_json_value(r) for r in rows]
        if all(isinstance(r, dict) for r in rows):
            inputs = {k: np.array([r.get(k) for r in rows], dtype=object) for k in rows[0]}
        elif len(aliases) == 1:
            inputs = {aliases[0]: np.array(rows, dtype=object)}
        else:
            raise invalid("instances must be objects naming the inputs of a "
                          "multi-input signature")
    else:
        raw = _decode_json_value(body["inputs"])
        if isinstance(raw, dict):
            inputs = {k: np.array(v, dtype=object) for k, v in raw.items()}
        elif len(aliases) == 1:
            inputs = {aliases[0]: np.array(raw, dtype=object)}
        else:
            raise invalid("inputs must be an object naming the inputs of a "
                          "multi-input signature")
    for key, value in inputs.items():
        if key in sig.inputs and sig.inputs[key].dtype != tf.string.as_datatype_enum:
            try:
                inputs[key] = value.astype(tf.dtypes.as_dtype(sig.inputs[key].dtype)
                                           .as_numpy_dtype)
            except (TypeError, ValueError) as exc:
                raise invalid(f"JSON Value for input '{key}' is not of expected type "
                              f"{tf.dtypes.as_dtype(sig.inputs[key].dtype).name}: {exc}") from None
    outputs = models.run(servable, sig_name, sig, inputs)
    if "instances" in body:
        n = next(iter(outputs.values())).shape[0]
        if len(outputs) == 1:
            (name, value), = outputs.items()
            return {"predictions": _encode_json_value(name, value)}
        return {"predictions": [{k: _encode_json_value(k, v[i]) for k, v in outputs.items()}
                                for i in range(n)]}
    if len(outputs) == 1:
        (name, value), = outputs.items()
        return {"outputs": _encode_json_value(name, value)}
    return {"outputs": {k: _encode_json_value(k, v) for k, v in outputs.items()}}


def _example(features: dict) -> bytes:
    feats = {}
    for key, value in _decode_json_value(features).items():
        values = value if isinstance(value, list) else [value]
        if all(isinstance(v, bytes) for v in values):
            feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def rest_classify_or_regress(models: Models, servable: Servable, body: dict, method: str
                             ) -> dict:
    sig_name = body.get("signature_name") or "serving_default"
    sig = models.signature(servable, sig_name, method)
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid("'examples' must be a non-empty list")
    context = body.get("context") or {}
    serialized = np.array([_example({**context, **e}) for e in examples], dtype=object)
    (alias,) = sig.inputs
    out = models.run(servable, sig_name, sig, {alias: serialized})
    if method == REGRESS:
        return {"results": [float(v) for v in np.reshape(out["outputs"], (-1,))]}
    scores = out.get("scores")
    classes = out.get("classes")
    rows = []
    for i in range(len(examples)):
        row_scores = scores[i].tolist() if scores is not None else []
        row_classes = ([c.decode() for c in classes[i]] if classes is not None
                       else [str(j) for j in range(len(row_scores))])
        row_scores = row_scores or [0.0] * len(row_classes)
        rows.append([[c, s] for c, s in zip(row_classes, row_scores, strict=False)])
    return {"results": rows}


PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|"
                  r"/labels/(?P<label>[^/:]+))?(?P<tail>/metadata|:predict|:classify|:regress)?$")


def _make_handler(models: Models):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _send(self, status: int, doc: Any) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _dispatch(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            match = PATH.match(self.path.split("?", 1)[0])
            try:
                if not match:
                    raise ServingStatus(grpc.StatusCode.NOT_FOUND, f"Malformed request: "
                                        f"{method} {self.path}")
                name, tail = match["name"], match["tail"]
                version = int(match["version"]) if match["version"] else None
                if method == "GET" and tail is None:
                    if match["label"]:
                        version = models.resolve(name, label=match["label"]).version
                    statuses = models.status(name, version)
                    self._send(200, {"model_version_status": [
                        {"version": str(v), "state": s,
                         "status": {"error_code": "OK", "error_message": ""}}
                        for v, s in statuses]})
                    return
                servable = models.resolve(name, version, match["label"])
                if method == "GET" and tail == "/metadata":
                    sig_map = get_model_metadata_pb2.SignatureDefMap()
                    for key, sig in servable.signature_defs.items():
                        sig_map.signature_def[key].CopyFrom(sig)
                    self._send(200, {
                        "model_spec": {"name": name, "signature_name": "",
                                       "version": str(servable.version)},
                        "metadata": {"signature_def": json_format.MessageToDict(
                            sig_map, preserving_proto_field_name=True)}})
                    return
                if method != "POST" or tail not in (":predict", ":classify", ":regress"):
                    raise ServingStatus(grpc.StatusCode.NOT_FOUND,
                                        f"Malformed request: {method} {self.path}")
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise invalid(f"JSON Parse error: {exc}") from None
                if not isinstance(body, dict):
                    raise invalid("JSON Parse error: expected an object")
                if tail == ":predict":
                    self._send(200, rest_predict(models, servable, body))
                else:
                    method_name = CLASSIFY if tail == ":classify" else REGRESS
                    self._send(200, rest_classify_or_regress(models, servable, body, method_name))
            except ServingStatus as exc:
                self._send(HTTP_OF.get(exc.code, 500), {"error": exc.message})

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

    return Handler


# ------------------------------------------------------------------------------------ gRPC

def _spec_args(spec: Any) -> tuple[str, int | None, str | None]:
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
    return spec.name, version, label


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """The official PredictionService base class, implemented over the loaded SavedModel."""

    def __init__(self, models: Models) -> None:
        self.models = models

    def Predict(self, request, context):  # noqa: N802
        try:
            servable = self.models.resolve(*_spec_args(request.model_spec))
            sig_name = request.model_spec.signature_name or "serving_default"
            sig = self.models.signature(servable, sig_name, PREDICT)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = self.models.run(servable, sig_name, sig, inputs,
                                      list(request.output_filter))
        except ServingStatus as exc:
            context.abort(exc.code, exc.message)
        reply = predict_pb2.PredictResponse()
        reply.model_spec.name = servable.name
        reply.model_spec.version.value = servable.version
        reply.model_spec.signature_name = sig_name
        for key, value in outputs.items():
            reply.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return reply

    def GetModelMetadata(self, request, context):  # noqa: N802
        try:
            servable = self.models.resolve(*_spec_args(request.model_spec))
            if list(request.metadata_field) != ["signature_def"]:
                raise invalid("Metadata field(s) not supported: "
                              + ",".join(f for f in request.metadata_field
                                         if f != "signature_def"))
        except ServingStatus as exc:
            context.abort(exc.code, exc.message)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in servable.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(sig)
        reply = get_model_metadata_pb2.GetModelMetadataResponse()
        reply.model_spec.name = servable.name
        reply.model_spec.version.value = servable.version
        reply.metadata["signature_def"].Pack(sig_map)
        return reply

    def _unimplemented(self, request, context, method: str, name: str) -> None:
        """Model/signature errors as the real server gives them, then UNIMPLEMENTED."""
        try:
            servable = self.models.resolve(*_spec_args(request.model_spec))
            self.models.signature(servable, request.model_spec.signature_name, method)
        except ServingStatus as exc:
            context.abort(exc.code, exc.message)
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} over gRPC: not in this double")

    def Classify(self, request, context):  # noqa: N802
        self._unimplemented(request, context, CLASSIFY, "Classify")
        return classification_pb2.ClassificationResponse()

    def Regress(self, request, context):  # noqa: N802
        self._unimplemented(request, context, REGRESS, "Regress")
        return regression_pb2.RegressionResponse()


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """The official ModelService base class: GetModelStatus (config reload is not offered)."""

    def __init__(self, models: Models) -> None:
        self.models = models

    def GetModelStatus(self, request, context):  # noqa: N802
        name, version, label = _spec_args(request.model_spec)
        try:
            if label:
                version = self.models.resolve(name, label=label).version
            statuses = self.models.status(name, version)
        except ServingStatus as exc:
            context.abort(exc.code, exc.message)
        reply = get_model_status_pb2.GetModelStatusResponse()
        for v, state in statuses:
            entry = reply.model_version_status.add()
            entry.version = v
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
        return reply


class TFServingDouble:
    """Start with .start(); .rest_url and .grpc_target address it; .stop() shuts both down."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self._http: ThreadingHTTPServer | None = None
        self._grpc: grpc.Server | None = None

    def start(self) -> TFServingDouble:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self.models))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, daemon=True,
                         name="tfserving-double-rest").start()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self.models), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self.models), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        return self

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        if self._grpc:
            self._grpc.stop(grace=None)
