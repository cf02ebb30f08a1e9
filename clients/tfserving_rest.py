"""TF Serving REST client: :predict (row and columnar), :classify, :regress, model status and
metadata, with version or label selection.

    with TFServingClient("http://tfserving:8501", model="efficientnet_lite0") as tfs:
        out = tfs.predict({"pixels": batch})           # {"class_ids": int32 array, ...}

numpy in and out: inputs are encoded per clients.tfserving_common; outputs are cast to the
dtypes of the signature (fetched once from the metadata API and cached per model/version).
No TensorFlow needed. Thread-safe.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from clients import errors
from clients._http import HttpTransport
from clients.base import TFServingClientBase
from clients.inputs import ImageInput, Prediction, image_bytes
from clients.tfserving_common import (
    Signature,
    VersionStatus,
    decode_response,
    encode_request,
    model_path,
)
from clients.transport import RetryPolicy, Timeouts, TokenSource, resolve_address

DEFAULT_SIGNATURE = TFServingClientBase.DEFAULT_SIGNATURE


class TFServingClient(TFServingClientBase):
    """REST client for one TF Serving. model/version/label given here are call defaults."""

    def __init__(self, url: str | None = None, *, model: str | None = None,
                 version: int | None = None, label: str | None = None,
                 token: str | None = None, timeouts: Timeouts | None = None,
                 retry: RetryPolicy | None = None) -> None:
        super().__init__(model, version, label)
        self.url = resolve_address(url, "TFSERVING_URL")
        # TF Serving has no auth of its own; the token is for a proxy/gateway in front of it.
        self.tokens = TokenSource(token, None, "TFSERVING")
        self._http = HttpTransport(timeouts, retry)

    def close(self) -> None:
        self._http.close()

    def _path(self, model: str | None, version: int | None, label: str | None) -> str:
        version, label = self._selection(version, label)
        return model_path(self._model(model), version, label)

    def _get(self, path: str) -> Any:
        return self._http.request("GET", f"{self.url}{path}",
                                  headers=self.tokens.headers("inference")).json()

    def _post(self, path: str, body: Any) -> Any:
        return self._http.request("POST", f"{self.url}{path}", json=body,
                                  headers=self.tokens.headers("inference")).json()

    # -- status and metadata -----------------------------------------------------------------
    def status(self, model: str | None = None, version: int | None = None,
               label: str | None = None) -> list[VersionStatus]:
        """GET /v1/models/<m>[...]: the state of each (or the selected) version."""
        doc = self._get(self._path(model, version, label))
        return [VersionStatus(int(v["version"]), v["state"],
                              v.get("status", {}).get("error_code", "OK"),
                              v.get("status", {}).get("error_message", ""))
                for v in doc.get("model_version_status", [])]

    def metadata(self, model: str | None = None, version: int | None = None,
                 label: str | None = None) -> dict[str, Any]:
        """GET .../metadata: the raw answer (model_spec and signature_def)."""
        return self._get(self._path(model, version, label) + "/metadata")

    def _fetch_signatures(self, model: str | None, version: int | None,
                          label: str | None) -> dict[str, Signature]:
        doc = self.metadata(model, version, label)
        defs = doc.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        return {name: Signature.from_json(name, d) for name, d in defs.items()}

    # -- predict / classify / regress --------------------------------------------------------
    def predict(self, inputs: Any, model: str | None = None, *,
                signature_name: str = DEFAULT_SIGNATURE, version: int | None = None,
                label: str | None = None, columnar: bool = False) -> dict[str, np.ndarray]:
        """:predict. inputs: {input name: array} or one array for a single-input signature.
        Returns {output name: array} with the signature's dtypes and the answer's shapes."""
        path = self._path(model, version, label) + ":predict"
        sig_name = None if signature_name == DEFAULT_SIGNATURE else signature_name
        doc = self._post(path, encode_request(inputs, columnar=columnar,
                                              signature_name=sig_name))
        try:
            signature = self.signature(signature_name, model, version, label)
        except errors.ServingError:
            signature = None  # metadata unavailable (e.g. a gateway blocks it): JSON dtypes
        return decode_response(doc, signature)

    def predict_raw(self, body: Mapping[str, Any], model: str | None = None, *,
                    version: int | None = None, label: str | None = None) -> Any:
        """POST any :predict JSON body and return the JSON answer unchanged."""
        return self._post(self._path(model, version, label) + ":predict", body)

    def classify(self, examples: list[Mapping[str, Any]], model: str | None = None, *,
                 signature_name: str = DEFAULT_SIGNATURE, context: Mapping[str, Any] | None = None,
                 version: int | None = None, label: str | None = None
                 ) -> list[list[tuple[str, float]]]:
        """:classify over tf.Example-like feature dicts; needs a signature whose method is
        tensorflow/serving/classify (else InvalidInput with TF Serving's message)."""
        body: dict[str, Any] = {"examples": [_encode_features(e) for e in examples]}
        if signature_name != DEFAULT_SIGNATURE:
            body["signature_name"] = signature_name
        if context:
            body["context"] = _encode_features(context)
        doc = self._post(self._path(model, version, label) + ":classify", body)
        return [[(str(c[0]), float(c[1])) for c in row] for row in doc["results"]]

    def regress(self, examples: list[Mapping[str, Any]], model: str | None = None, *,
                signature_name: str = DEFAULT_SIGNATURE, context: Mapping[str, Any] | None = None,
                version: int | None = None, label: str | None = None) -> list[float]:
        """:regress; needs a tensorflow/serving/regress signature."""
        body: dict[str, Any] = {"examples": [_encode_features(e) for e in examples]}
        if signature_name != DEFAULT_SIGNATURE:
            body["signature_name"] = signature_name
        if context:
            body["context"] = _encode_features(context)
        doc = self._post(self._path(model, version, label) + ":regress", body)
        return [float(v) for v in doc["results"]]

    # -- images ------------------------------------------------------------------------------
    def classify_images(self, images: Iterable[ImageInput], model: str | None = None, *,
                        version: int | None = None, label: str | None = None,
                        topk: int | None = None, signature_name: str = DEFAULT_SIGNATURE
                        ) -> list[list[Prediction]]:
        """Top-k of encoded images through an image signature (one DT_STRING input, outputs
        class_ids/labels/probabilities). The input key is read from the signature, not assumed.
        topk can only shrink the k fixed in the exported graph."""
        signature = self.signature(signature_name, model, version, label)
        key = image_input_key(signature)
        batch = np.array([image_bytes(i) for i in images], dtype=object)
        out = self.predict({key: batch}, model, signature_name=signature_name,
                           version=version, label=label)
        return predictions_from_outputs(out, topk)

    def classify_image(self, image: ImageInput, model: str | None = None, **kw: Any
                       ) -> list[Prediction]:
        return self.classify_images([image], model, **kw)[0]


def image_input_key(signature: Signature) -> str:
    strings = [k for k, spec in signature.inputs.items() if spec.dtype == "DT_STRING"]
    if len(strings) != 1:
        raise errors.ConfigurationError(
            f"signature {signature.name!r} is not an image signature (inputs "
            f"{ {k: s.dtype for k, s in signature.inputs.items()} })")
    return strings[0]


def predictions_from_outputs(out: Mapping[str, np.ndarray], topk: int | None
                             ) -> list[list[Prediction]]:
    """Rows of Prediction from class_ids/labels/probabilities outputs (shared with gRPC)."""
    missing = {"class_ids", "labels", "probabilities"} - set(out)
    if missing:
        raise errors.ServingError(f"the signature lacks outputs {sorted(missing)}")
    rows = []
    columns = (out["class_ids"], out["labels"], out["probabilities"])
    for ids, labels, probs in zip(*columns, strict=True):
        row = [Prediction(int(i), lab.decode() if isinstance(lab, bytes) else str(lab), float(p))
               for i, lab, p in zip(ids, labels, probs, strict=True)]
        rows.append(row[:topk] if topk else row)
    return rows


def _encode_features(example: Mapping[str, Any]) -> dict[str, Any]:
    """A tf.Example as TF Serving's REST JSON: bytes features become {"b64": ...}."""
    def enc(v: Any) -> Any:
        if isinstance(v, (bytes, bytearray)):
            return {"b64": base64.b64encode(bytes(v)).decode()}
        if isinstance(v, np.ndarray):
            return [enc(x) for x in v.tolist()] if v.dtype.kind in "OS" else v.tolist()
        if isinstance(v, (list, tuple)):
            return [enc(x) for x in v]
        return v.item() if isinstance(v, np.generic) else v
    return {k: enc(v) for k, v in example.items()}
