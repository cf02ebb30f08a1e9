"""What the TF Serving REST and gRPC clients share: model addressing, signatures, version
status, the client base (version/label defaults, signature cache, the image classifier helper
and its per-instance errors), and the REST JSON <-> numpy codec. No TensorFlow import: the
REST client must run without it.

Per-instance errors: the bundle's SavedModel signatures have an `error` output (one string per
instance, "" when fine). classify_images() turns a non-empty one into an InstanceError for that
instance: by default the first is raised, carrying every instance's result in `.results`
(InstanceError objects in place of the failed ones); with on_error="return" the list is returned
as it is. predict() returns the raw outputs, `error` included.

JSON codec contract (TF Serving's REST API):
  - bytes become {"b64": "<base64>"}; str stays text; numbers and bools stay JSON scalars.
  - Row ("instances") form needs every input to share the leading batch dimension.
  - Outputs are cast back to the dtype the signature declares, so float32 stays float32,
    int32 stays int32 and DT_STRING comes back as an object array of bytes (as over gRPC).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients import errors
from clients.base import Client
from clients.images import ImageInput, Prediction, image_bytes

# TF DataType enum names -> numpy dtypes (the ones TF Serving's REST API can carry).
DTYPES: dict[str, Any] = {
    "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_HALF": np.float16,
    "DT_INT8": np.int8, "DT_INT16": np.int16, "DT_INT32": np.int32, "DT_INT64": np.int64,
    "DT_UINT8": np.uint8, "DT_UINT16": np.uint16, "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64, "DT_BOOL": np.bool_, "DT_STRING": object,
}
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class TensorSpec:
    """dtype is the TF enum name ("DT_FLOAT"); shape uses -1 for unknown dims, None if the rank
    is unknown."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None

    @property
    def numpy_dtype(self) -> Any:
        return DTYPES.get(self.dtype, object)


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)

    @classmethod
    def from_json(cls, name: str, doc: Mapping[str, Any]) -> Signature:
        """From the protobuf-JSON SignatureDef of the REST metadata answer."""
        def specs(section: Mapping[str, Any]) -> dict[str, TensorSpec]:
            out = {}
            for key, info in (section or {}).items():
                shape_doc = info.get("tensor_shape", {})
                shape = None if shape_doc.get("unknown_rank") else tuple(
                    int(d.get("size", -1)) for d in shape_doc.get("dim", []))
                out[key] = TensorSpec(key, info.get("dtype", "DT_INVALID"), shape)
            return out

        return cls(name, doc.get("method_name", ""), specs(doc.get("inputs", {})),
                   specs(doc.get("outputs", {})))


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""

    @property
    def available(self) -> bool:
        return self.state == "AVAILABLE"


def model_path(model: str, version: int | str | None = None, label: str | None = None) -> str:
    """/v1/models/<m>[/versions/<v>|/labels/<l>] (version and label are exclusive)."""
    if version is not None and label is not None:
        raise ValueError("pass a version or a label, not both")
    path = f"/v1/models/{model}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{label}"
    return path


def is_available(statuses: list[VersionStatus], version: int | None = None) -> bool:
    """True when `version` (or, without one, any version) is AVAILABLE."""
    return any(s.available and (version is None or s.version == int(version)) for s in statuses)


# ----------------------------------------------------------------------------- JSON codec

def _encode_value(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [_encode_value(v) for v in value]
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_encode_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item() if not isinstance(value, np.bytes_) else _encode_value(bytes(value))
    return value


def as_array(value: Any) -> np.ndarray:
    """numpy array of a value; bytes (nested in lists or not) become an object array, as TF's
    DT_STRING wants them."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (bytes, str)):
        return np.array(value, dtype=object)
    return np.asarray(value, dtype=object if _has_bytes(value) else None)


def _has_bytes(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray)):
        return True
    if isinstance(value, (list, tuple)) and value:
        return _has_bytes(value[0])
    return False


def encode_features(example: Mapping[str, Any]) -> dict[str, Any]:
    """A tf.Example-like feature dict as TF Serving's REST JSON (bytes become {"b64": ...})."""
    return {k: _encode_value(v) for k, v in example.items()}


def encode_request(inputs: Any, *, columnar: bool, signature_name: str | None = None
                   ) -> dict[str, Any]:
    """The :predict JSON body. inputs: one array (single-input signature) or {name: array}."""
    body: dict[str, Any] = {}
    if signature_name:
        body["signature_name"] = signature_name
    if columnar:
        body["inputs"] = ({k: _encode_value(as_array(v)) for k, v in inputs.items()}
                          if isinstance(inputs, Mapping) else _encode_value(as_array(inputs)))
        return body
    if isinstance(inputs, Mapping):
        arrays = {k: as_array(v) for k, v in inputs.items()}
        sizes = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(f"the row format needs one batch size for every input, got {sizes};"
                             " use columnar=True")
        n = next(iter(sizes.values()))
        body["instances"] = [{k: _encode_value(a[i]) for k, a in arrays.items()}
                             for i in range(n)]
    else:
        array = as_array(inputs)
        if not array.ndim:
            raise ValueError("the row format needs a batch dimension; use columnar=True")
        body["instances"] = [_encode_value(array[i]) for i in range(array.shape[0])]
    return body


def _decode_strings(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    return value


def _to_array(value: Any, spec: TensorSpec | None) -> np.ndarray:
    if spec is not None and spec.dtype == "DT_STRING":
        return np.array(_decode_strings(value), dtype=object)
    if spec is not None:
        return np.asarray(value, dtype=spec.numpy_dtype)
    return np.asarray(_decode_strings(value) if _contains_b64(value) else value)


def _contains_b64(value: Any) -> bool:
    if isinstance(value, dict):
        return set(value) == {"b64"}
    if isinstance(value, list) and value:
        return _contains_b64(value[0])
    return False


def decode_response(doc: Mapping[str, Any], signature: Signature | None) -> dict[str, np.ndarray]:
    """{output name: array} from a :predict answer (row "predictions" or columnar "outputs")."""
    outputs = signature.outputs if signature else {}
    only = next(iter(outputs)) if len(outputs) == 1 else "output"
    if "outputs" in doc:
        raw = doc["outputs"]
        columns = raw if isinstance(raw, dict) else {only: raw}
    elif "predictions" in doc:
        rows = doc["predictions"]
        if rows and isinstance(rows[0], dict) and not _contains_b64(rows[0]):
            columns = {k: [row[k] for row in rows] for k in rows[0]}
        else:
            columns = {only: rows}
    else:
        raise ValueError(f"no 'predictions' or 'outputs' in the answer: {list(doc)}")
    return {k: _to_array(v, outputs.get(k)) for k, v in columns.items()}


# ------------------------------------------------------------------ image classifier helper

def image_input_key(signature: Signature) -> str:
    strings = [k for k, spec in signature.inputs.items() if spec.dtype == "DT_STRING"]
    if len(strings) != 1:
        raise errors.ServingError(
            f"signature {signature.name!r} is not an image signature (inputs "
            f"{ {k: s.dtype for k, s in signature.inputs.items()} })")
    return strings[0]


def predictions_from_outputs(out: Mapping[str, np.ndarray], topk: int | None
                             ) -> list[list[Prediction] | errors.InstanceError]:
    """One row per instance from class_ids/labels/probabilities, or an InstanceError where
    the `error` output names why that instance failed."""
    missing = {"class_ids", "labels", "probabilities"} - set(out)
    if missing:
        raise errors.ServingError(f"the signature lacks outputs {sorted(missing)}")
    columns = (out["class_ids"], out["labels"], out["probabilities"])
    marks = out.get("error")
    rows: list[list[Prediction] | errors.InstanceError] = []
    for index, (ids, labels, probs) in enumerate(zip(*columns, strict=True)):
        mark = marks[index] if marks is not None else b""
        mark = mark.decode("utf-8", "replace") if isinstance(mark, bytes) else str(mark)
        if mark:
            rows.append(errors.InstanceError(mark, index=index, status_code=400))
            continue
        row = [Prediction(int(i), lab.decode() if isinstance(lab, bytes) else str(lab), float(p))
               for i, lab, p in zip(ids, labels, probs, strict=True)]
        rows.append(row[:topk] if topk else row)
    return rows


class TFServingBase(Client):
    """The TF Serving REST and gRPC clients' shared half: version/label defaults,
    availability, signatures fetched once per model/version/label, and the image classifier
    helpers. Subclasses implement status(), predict() and _fetch_signatures()."""

    DEFAULT_SIGNATURE = "serving_default"

    def __init__(self, model: str | None, version: int | None, label: str | None) -> None:
        self.model, self.version, self.label = model, version, label
        self._signatures: dict[tuple, dict[str, Signature]] = {}
        self._lock = threading.Lock()

    def _selection(self, version: int | None, label: str | None
                   ) -> tuple[int | None, str | None]:
        """The call's version/label, else the client's defaults."""
        if version is not None and label is not None:
            raise ValueError("pass a version or a label, not both")
        if version is None and label is None:
            return self.version, self.label
        return version, label

    def status(self, model: str | None = None, version: int | None = None,
               label: str | None = None) -> list[VersionStatus]:
        raise NotImplementedError

    def predict(self, inputs: Any, model: str | None = None, *,
                signature_name: str = DEFAULT_SIGNATURE, version: int | None = None,
                label: str | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _fetch_signatures(self, model: str | None, version: int | None,
                          label: str | None) -> dict[str, Signature]:
        raise NotImplementedError

    def is_available(self, model: str | None = None, version: int | None = None) -> bool:
        """Is version N (or any version) AVAILABLE? False, not an error, for unknown models
        or versions, so it can back a readiness probe."""
        try:
            return is_available(self.status(model, version), version)
        except errors.NotFound:
            return False

    def signatures(self, model: str | None = None, version: int | None = None,
                   label: str | None = None) -> dict[str, Signature]:
        """Signatures by name (cached per model/version/label)."""
        key = (model or self.model, version, label, self.version, self.label)
        with self._lock:
            if key in self._signatures:
                return self._signatures[key]
        sigs = {name: sig for name, sig in self._fetch_signatures(model, version, label).items()
                if not name.startswith("__")}
        with self._lock:
            self._signatures[key] = sigs
        return sigs

    def signature(self, name: str = DEFAULT_SIGNATURE, model: str | None = None,
                  version: int | None = None, label: str | None = None) -> Signature:
        sigs = self.signatures(model, version, label)
        if name not in sigs:
            raise errors.NotFound(f"model has no signature {name!r}; it has {sorted(sigs)}")
        return sigs[name]

    def classify_images(self, images: Iterable[ImageInput], model: str | None = None, *,
                        version: int | None = None, label: str | None = None,
                        topk: int | None = None, signature_name: str = DEFAULT_SIGNATURE,
                        on_error: str = "raise") -> list[list[Prediction]]:
        """Top-k of encoded images through an image signature (one DT_STRING input, outputs
        class_ids/labels/probabilities[/error]); the input key is read from the signature.
        topk can only shrink the k fixed in the exported graph. A failed instance: see the
        module docstring (on_error="raise" or "return")."""
        if on_error not in ("raise", "return"):
            raise ValueError('on_error must be "raise" or "return"')
        signature = self.signature(signature_name, model, version, label)
        batch = np.array([image_bytes(i) for i in images], dtype=object)
        out = self.predict({image_input_key(signature): batch}, model,
                           signature_name=signature_name, version=version, label=label)
        rows = predictions_from_outputs(out, topk)
        failed = [r for r in rows if isinstance(r, Exception)]
        for error in failed:
            error.results = rows
        if failed and on_error == "raise":
            raise failed[0]
        return rows  # type: ignore[return-value]

    def classify_image(self, image: ImageInput, model: str | None = None, **kw: Any
                       ) -> list[Prediction]:
        """Top-k of one image; its error marker, if any, is raised as an InstanceError."""
        return self.classify_images([image], model, **kw)[0]
