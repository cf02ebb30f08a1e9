"""TorchServe REST client: inference, management, health and metrics APIs.

    with TorchServeClient() as ts:     # addresses and key: clients.endpoints' lookup order
        print(ts.classify_image("samples/cat.jpg", topk=3))

Auth: the inference key is sent to the inference API, the management key to the management
API, none to the metrics API. Thread-safe: share one client across threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from clients._http import HttpTransport
from clients.images import content_type
from clients.torchserve_common import Body, TorchServeBase, with_params
from clients.transport import TLS, RetryPolicy, Timeouts, TokenSource, resolve_address


def _path(*parts: str | None) -> str:
    return "/" + "/".join(quote(str(p), safe="") for p in parts if p not in (None, ""))


def _query(params: Mapping[str, Any]) -> str:
    clean = {k: (str(v).lower() if isinstance(v, bool) else v)
             for k, v in params.items() if v is not None}
    return f"?{urlencode(clean)}" if clean else ""


class TorchServeClient(TorchServeBase):
    """REST client for one TorchServe (inference, management and metrics addresses)."""

    def __init__(self, url: str | None = None, management_url: str | None = None,
                 metrics_url: str | None = None, *, token: str | None = None,
                 key_file: str | os.PathLike | None = None, model: str | None = None,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None,
                 tls: TLS | None = None) -> None:
        self.url = resolve_address(url, "TORCHSERVE_URL")
        self.management_url = resolve_address(management_url, "TORCHSERVE_MANAGEMENT_URL")
        self.metrics_url = resolve_address(metrics_url, "TORCHSERVE_METRICS_URL")
        self.model = model
        self.tokens = TokenSource(token, key_file, "TORCHSERVE")
        self._http = HttpTransport(timeouts, retry, tls)

    def close(self) -> None:
        self._http.close()

    # -- inference API -----------------------------------------------------------------------
    def ping(self) -> str:
        """TorchServe's /ping status ("Healthy"). Says nothing about models: see health()."""
        return self._http.request("GET", f"{self.url}/ping",
                                  headers=self.tokens.headers("inference")).json()["status"]

    def _send(self, model: str, version: str | None, body: Body,
              params: Mapping[str, Any]) -> Any:
        url = f"{self.url}/predictions{_path(model, version)}"
        headers = self.tokens.headers("inference")
        if isinstance(body, bytes):
            # TorchServe drops the query string of /predictions before the handler sees it:
            # parameters beside a raw body travel as X-<name> headers.
            headers["Content-Type"] = content_type(body)
            headers.update({f"X-{k}": str(v) for k, v in params.items()})
            return self._http.request("POST", url, body=body, headers=headers).json()
        return self._http.request("POST", url, json=with_params(body, params),
                                  headers=headers).json()

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
            doc = self._mgmt("GET", f"/models{_query({'limit': page_size, 'next_page_token': token})}")
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
        """Set the worker range; returns TorchServe's status message (PUT: idempotent)."""
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
        """Register an archive (needs enable_model_api=true on the server; the bundle keeps it
        off, so this answers InvalidInput 405). Retried only when it was never sent."""
        query = _query({"url": url, "model_name": model_name, "initial_workers": initial_workers,
                        "synchronous": synchronous, "batch_size": batch_size,
                        "max_batch_delay": max_batch_delay, "response_timeout": response_timeout})
        return self._mgmt("POST", f"/models{query}", idempotent=False, ok=(202,))["status"]

    def unregister_model(self, model: str, version: str | None = None) -> str:
        """Unregister a model (version); needs enable_model_api=true."""
        return self._mgmt("DELETE", f"/models{_path(model, version)}", idempotent=False,
                          ok=(202,))["status"]

    # -- metrics API -------------------------------------------------------------------------
    def metrics_text(self, names: Iterable[str] = ()) -> str:
        """The Prometheus exposition text (optionally only the metrics `names`). No key is
        sent: TorchServe's metrics API has no token authorization."""
        query = "?" + "&".join(f"name[]={quote(n)}" for n in names) if names else ""
        return self._http.request("GET", f"{self.metrics_url}/metrics{query}").text

    def metrics(self, names: Iterable[str] = ()) -> dict[str, Any]:
        """Metric families by name, parsed by prometheus_client's own parser."""
        from prometheus_client.parser import text_string_to_metric_families

        return {f.name: f for f in text_string_to_metric_families(self.metrics_text(names))}
