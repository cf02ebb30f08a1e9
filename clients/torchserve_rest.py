"""TorchServe REST client: inference, management, health and metrics APIs.

    with TorchServeClient(key_file=".run/torchserve/key_file.json") as ts:
        print(ts.classify_image("samples/cat.jpg", "efficientnet_lite0", topk=3))

Auth: the inference key is sent to the inference API, the management key to the management
API (see clients.transport.TokenSource). Thread-safe: share one client across threads.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from clients import endpoints, errors
from clients._http import HttpTransport
from clients.base import Client
from clients.inputs import ImageInput, Prediction, content_type, image_bytes
from clients.transport import RetryPolicy, Timeouts, TokenSource, resolve_address


@dataclass(frozen=True)
class ModelHealth:
    """Readiness of one model: ready means at least one worker and all workers READY;
    `workers` counts workers by TorchServe state (READY, UNLOADING, STARTING...)."""

    model: str
    ready: bool
    version: str | None = None
    workers: dict[str, int] = field(default_factory=dict)
    reason: str = ""


def check_health(describe: Any, name: str, version: str | None) -> ModelHealth:
    """health() of both TorchServe clients, given the client's describe_model."""
    try:
        entries = describe(name, version)
    except errors.NotFound as exc:
        return ModelHealth(name, False, version, reason=exc.message)
    return model_health(name, version, entries)


def model_health(name: str, version: str | None, entries: list[dict[str, Any]]) -> ModelHealth:
    """ModelHealth from TorchServe's describe-model answer (same JSON over REST and gRPC),
    by the bundle's one readiness rule (clients.endpoints.is_ready)."""
    counts: dict[str, int] = {}
    for state in endpoints.worker_states(entries, version):
        counts[state] = counts.get(state, 0) + 1
    entry = next((e for e in entries if version is None or e.get("modelVersion") == version),
                 entries[0] if entries else {})
    reason = endpoints.not_ready_reason(entries, version)
    return ModelHealth(name, not reason, entry.get("modelVersion"), counts, reason)


def _path(*parts: str | None) -> str:
    return "/" + "/".join(quote(str(p), safe="") for p in parts if p not in (None, ""))


def _query(params: Mapping[str, Any]) -> str:
    clean = {k: (str(v).lower() if isinstance(v, bool) else v)
             for k, v in params.items() if v is not None}
    return f"?{urlencode(clean)}" if clean else ""


class TorchServeClient(Client):
    """REST client for one TorchServe (inference, management and metrics addresses)."""

    def __init__(self, url: str | None = None, management_url: str | None = None,
                 metrics_url: str | None = None, *, token: str | Mapping[str, str] | None = None,
                 key_file: str | os.PathLike | None = None, model: str | None = None,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None) -> None:
        self.url = resolve_address(url, "TORCHSERVE_URL")
        self.management_url = resolve_address(management_url, "TORCHSERVE_MANAGEMENT_URL")
        self.metrics_url = resolve_address(metrics_url, "TORCHSERVE_METRICS_URL")
        self.model = model
        self.tokens = TokenSource(token, key_file, "TORCHSERVE")
        self._http = HttpTransport(timeouts, retry)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    # -- inference API -----------------------------------------------------------------------
    def ping(self) -> str:
        """TorchServe's /ping status ("Healthy"). Says nothing about models: see health()."""
        return self._http.request("GET", f"{self.url}/ping",
                                  headers=self.tokens.headers("inference")).json()["status"]

    def predict(self, image: ImageInput, model: str | None = None, *, version: str | None = None,
                topk: int | None = None, form: str = "raw") -> Any:
        """One image -> the handler's JSON answer, unchanged.

        form: "raw" (the bytes as the body, topk as the X-TopK header: TorchServe drops the
        query string of /predictions before the handler sees it), "multipart" (fields `data`
        and `topk`) or "json" ({"data": "<base64>", "topk": k}).
        """
        data = image_bytes(image)
        url = f"{self.url}/predictions{_path(self._model(model), version)}"
        headers = self.tokens.headers("inference")
        params = {} if topk is None else {"topk": topk}
        if form == "raw":
            headers["Content-Type"] = content_type(data)
            if topk is not None:
                headers["X-TopK"] = str(topk)
            resp = self._http.request("POST", url, body=data, headers=headers)
        elif form == "multipart":
            fields: dict[str, Any] = {"data": ("image", data, content_type(data))}
            fields.update({k: str(v) for k, v in params.items()})
            resp = self._http.request("POST", url, headers=headers, fields=fields)
        elif form == "json":
            resp = self._http.request("POST", url, headers=headers,
                                      json={"data": base64.b64encode(data).decode(), **params})
        else:
            raise ValueError(f"form must be raw, multipart or json, not {form!r}")
        return resp.json()

    def predict_json(self, payload: Any, model: str | None = None, *,
                     version: str | None = None, topk: int | None = None) -> Any:
        """Send any JSON document (e.g. {"instances": [...]}) and return the JSON answer;
        topk, when given, is added as a top-level field of a JSON object."""
        url = f"{self.url}/predictions{_path(self._model(model), version)}"
        if topk is not None and isinstance(payload, dict):
            payload = {**payload, "topk": topk}
        return self._http.request("POST", url, json=payload,
                                  headers=self.tokens.headers("inference")).json()

    def classify_image(self, image: ImageInput, model: str | None = None, *,
                       version: str | None = None, topk: int | None = None) -> list[Prediction]:
        """Top-k classes of one image."""
        return [Prediction.from_json(p) for p in self.predict(image, model, version=version,
                                                              topk=topk)]

    def classify_images(self, images: Iterable[ImageInput], model: str | None = None, *,
                        version: str | None = None, topk: int | None = None
                        ) -> list[list[Prediction]]:
        """Top-k classes of several images in one request (the {"instances": [...]} form)."""
        instances = [{"b64": base64.b64encode(image_bytes(i)).decode()} for i in images]
        doc = self.predict_json({"instances": instances}, model, version=version, topk=topk)
        return [[Prediction.from_json(p) for p in row] for row in doc["predictions"]]

    # -- management API ----------------------------------------------------------------------
    def _mgmt(self, method: str, path: str, *, idempotent: bool = True, **kw: Any) -> Any:
        resp = self._http.request(method, f"{self.management_url}{path}",
                                  headers=self.tokens.headers("management"),
                                  idempotent=idempotent, **kw)
        return resp.json()

    def list_models(self, page_size: int = 100) -> list[dict[str, str]]:
        """Every registered model ({"modelName", "modelUrl"}), following nextPageToken."""
        models: list[dict[str, str]] = []
        token: str | None = None
        while True:
            query = _query({"limit": page_size, "next_page_token": token})
            doc = self._mgmt("GET", f"/models{query}")
            models.extend(doc.get("models", []))
            token = doc.get("nextPageToken")
            if not token:
                return models

    def describe_model(self, model: str | None = None, version: str | None = None
                       ) -> list[dict[str, Any]]:
        """TorchServe's model description(s); version "all" describes every version."""
        return self._mgmt("GET", f"/models{_path(self._model(model), version)}")

    def scale_workers(self, model: str | None = None, min_workers: int | None = None,
                      max_workers: int | None = None, *, version: str | None = None,
                      synchronous: bool = True, timeout: int | None = None) -> str:
        """Set the worker range; returns TorchServe's status message. PUT is idempotent, so
        this call is retried like a read."""
        query = _query({"min_worker": min_workers, "max_worker": max_workers,
                        "synchronous": synchronous, "timeout": timeout})
        return self._mgmt("PUT", f"/models{_path(self._model(model), version)}{query}",
                          ok=(202,))["status"]

    def set_default(self, model: str | None, version: str) -> str:
        """Make `version` the default version of `model`."""
        return self._mgmt("PUT", f"/models{_path(self._model(model), version)}/set-default"
                          )["status"]

    def register_model(self, url: str, *, model_name: str | None = None,
                       initial_workers: int | None = 1, synchronous: bool = True,
                       batch_size: int | None = None, max_batch_delay: int | None = None,
                       response_timeout: int | None = None) -> str:
        """Register an archive (needs enable_model_api=true on the server, else
        MethodNotAllowed). Not retried: a repeated POST would register twice or fail."""
        query = _query({"url": url, "model_name": model_name, "initial_workers": initial_workers,
                        "synchronous": synchronous, "batch_size": batch_size,
                        "max_batch_delay": max_batch_delay, "response_timeout": response_timeout})
        return self._mgmt("POST", f"/models{query}", idempotent=False, ok=(202,))["status"]

    def unregister_model(self, model: str, version: str | None = None) -> str:
        """Unregister a model (version). Not retried (needs enable_model_api=true)."""
        return self._mgmt("DELETE", f"/models{_path(model, version)}", idempotent=False,
                          ok=(202,))["status"]

    def health(self, model: str | None = None, version: str | None = None) -> ModelHealth:
        """Whether `model` can serve now: registered and at least one worker READY.

        /ping alone is not trusted: it answers Healthy while every worker of a model is dead.
        A model TorchServe does not know is reported not ready (with the server's message);
        other errors (auth, connection) are raised.
        """
        return check_health(self.describe_model, self._model(model), version)

    # -- metrics API -------------------------------------------------------------------------
    def metrics_text(self, names: Iterable[str] = ()) -> str:
        """The Prometheus exposition text (optionally only the metrics `names`).

        No token is sent: TorchServe's metrics API has no token authorization, and keys are not
        handed to endpoints that do not need them."""
        query = "?" + "&".join(f"name[]={quote(n)}" for n in names) if names else ""
        return self._http.request("GET", f"{self.metrics_url}/metrics{query}").text

    def metrics(self, names: Iterable[str] = ()) -> dict[str, Any]:
        """Metric families by name, parsed by prometheus_client's own parser."""
        from prometheus_client.parser import text_string_to_metric_families

        return {f.name: f for f in text_string_to_metric_families(self.metrics_text(names))}
