"""Protocol-neutral TF Serving pieces: model addressing, signatures, version status, and the
REST JSON <-> numpy codec. No TensorFlow import: the REST client must run without it.

JSON codec contract (TF Serving's REST API):
  - bytes become {"b64": "<base64>"}; str stays text; numbers and bools stay JSON scalars.
  - Row ("instances") form needs every input to share the leading batch dimension.
  - Outputs are cast back to the dtype the signature declares, so float32 stays float32,
    int32 stays int32 and DT_STRING comes back as an object array of bytes (as over gRPC).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


def _as_array(value: Any) -> np.ndarray:
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


def encode_request(inputs: Any, *, columnar: bool, signature_name: str | None = None
                   ) -> dict[str, Any]:
    """The :predict JSON body. inputs: one array (single-input signature) or {name: array}."""
    body: dict[str, Any] = {}
    if signature_name:
        body["signature_name"] = signature_name
    if columnar:
        body["inputs"] = ({k: _encode_value(_as_array(v)) for k, v in inputs.items()}
                          if isinstance(inputs, Mapping) else _encode_value(_as_array(inputs)))
        return body
    if isinstance(inputs, Mapping):
        arrays = {k: _as_array(v) for k, v in inputs.items()}
        sizes = {k: (a.shape[0] if a.ndim else None) for k, a in arrays.items()}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(f"the row format needs one batch size for every input, got {sizes};"
                             " use columnar=True")
        n = next(iter(sizes.values()))
        body["instances"] = [{k: _encode_value(a[i]) for k, a in arrays.items()}
                             for i in range(n)]
    else:
        array = _as_array(inputs)
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
