"""TF Serving REST client: :predict (row and columnar), :classify, :regress, model status and
metadata, with version or label selection.

    with TFServingClient("http://tfserving:8501", model="efficientnet_lite0") as tfs:
        out = tfs.predict({"pixels": batch})           # {"class_ids": int32 array, ...}

numpy in and out: inputs are encoded per clients.tfserving_common; outputs are cast to the
dtypes of the signature (fetched once from the metadata API and cached per model/version).
No TensorFlow needed. Thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from clients import errors
from clients._http import HttpTransport
from clients.tfserving_common import (
    Signature,
    TFServingBase,
    VersionStatus,
    decode_response,
    encode_features,
    encode_request,
    model_path,
)
from clients.transport import TLS, RetryPolicy, Timeouts, TokenSource, resolve_address

DEFAULT_SIGNATURE = TFServingBase.DEFAULT_SIGNATURE


class TFServingClient(TFServingBase):
    """REST client for one TF Serving. model/version/label given here are call defaults."""

    def __init__(self, url: str | None = None, *, model: str | None = None,
                 version: int | None = None, label: str | None = None,
                 token: str | None = None, timeouts: Timeouts | None = None,
                 retry: RetryPolicy | None = None, tls: TLS | None = None) -> None:
        super().__init__(model, version, label)
        self.url = resolve_address(url, "TFSERVING_URL")
        # TF Serving has no auth of its own; the token is for a proxy/gateway in front of it.
        self.tokens = TokenSource(token, None, "TFSERVING")
        self._http = HttpTransport(timeouts, retry, tls)

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

    def _examples(self, method: str, examples: list[Mapping[str, Any]], model: str | None,
                  signature_name: str, context: Mapping[str, Any] | None, version: int | None,
                  label: str | None) -> list:
        body: dict[str, Any] = {"examples": [encode_features(e) for e in examples]}
        if signature_name != DEFAULT_SIGNATURE:
            body["signature_name"] = signature_name
        if context:
            body["context"] = encode_features(context)
        return self._post(self._path(model, version, label) + f":{method}", body)["results"]

    def classify(self, examples: list[Mapping[str, Any]], model: str | None = None, *,
                 signature_name: str = DEFAULT_SIGNATURE, context: Mapping[str, Any] | None = None,
                 version: int | None = None, label: str | None = None
                 ) -> list[list[tuple[str, float]]]:
        """:classify over tf.Example-like feature dicts; needs a signature whose method is
        tensorflow/serving/classify (else InvalidInput with TF Serving's message)."""
        results = self._examples("classify", examples, model, signature_name, context,
                                 version, label)
        return [[(str(c[0]), float(c[1])) for c in row] for row in results]

    def regress(self, examples: list[Mapping[str, Any]], model: str | None = None, *,
                signature_name: str = DEFAULT_SIGNATURE, context: Mapping[str, Any] | None = None,
                version: int | None = None, label: str | None = None) -> list[float]:
        """:regress; needs a tensorflow/serving/regress signature."""
        results = self._examples("regress", examples, model, signature_name, context,
                                 version, label)
        return [float(v) for v in results]
