"""BatchHandler: the shared base of this bundle's TorchServe handlers."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from handlers import payloads
from handlers.errors import RequestError

logger = logging.getLogger(__name__)


def choose_device(gpu_id: Any) -> torch.device:
    """cuda:<gpu_id> when TorchServe assigned a GPU and CUDA works, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


class BatchHandler(BaseHandler):
    """Shared base: request decoding, batching, per-request errors, device choice.

    TorchServe calls handle() with a batch of requests. For each request the base decodes the
    payload (handlers.payloads), validates its parameters and preprocesses each input; a request
    that fails gets its own 4xx status and JSON error body while the rest of the batch runs
    through the model as one tensor batch (requests with several instances are flattened into
    it). Everything is done under torch.inference_mode() on the device chosen once in initialize.

    Subclasses implement:
      load_model(model_dir)          build self.model on self.device (called once, in initialize)
      parse_params(raw) -> dict      validate a request's parameters; raise RequestError
      preprocess_item(data) -> item  one input's bytes -> model input; raise RequestError
      predict(items) -> list         the model on a batch of items; one output per item
      format_output(out, params)     one output -> its JSON-serialisable answer
    Settings come from the `handler:` section of the archive's model-config.yaml, generated from
    the catalog (config/models.yaml) and available as self.config.
    """

    # Request parameters a subclass understands; each may also come as an X-<name> header.
    PARAMETERS: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self.config: dict[str, Any] = {}
        self.model_name = "model"
        self.max_instances = 32

    # -- lifecycle ---------------------------------------------------------------------------
    def initialize(self, context):
        properties = context.system_properties
        self.context = context
        self.manifest = context.manifest
        self.model_name = self.manifest["model"]["modelName"]
        self.config = dict((getattr(context, "model_yaml_config", None) or {}).get("handler", {}))
        self.max_instances = int(self.config.get("max_instances_per_request", 32))
        self.device = choose_device(properties.get("gpu_id"))
        started = time.perf_counter()
        with torch.inference_mode():
            self.load_model(Path(properties["model_dir"]))
        logger.info("%s loaded on %s in %.2fs", self.model_name, self.device,
                    time.perf_counter() - started)
        self._batch_size_metric = context.metrics.add_metric_to_cache(
            "BatchSize", unit="Count", dimension_names=["ModelName"],
            metric_type=MetricTypes.HISTOGRAM,
        )
        self._error_metric = context.metrics.add_metric_to_cache(
            "RequestErrors", unit="Count", dimension_names=["ModelName"],
            metric_type=MetricTypes.COUNTER,
        )
        self.initialized = True

    def weights_path(self, model_dir: Path) -> Path:
        """The archive's serialized file (the state dict)."""
        return model_dir / self.manifest["model"]["serializedFile"]

    # -- the subclass contract ----------------------------------------------------------------
    def load_model(self, model_dir: Path) -> None:
        raise NotImplementedError

    def parse_params(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Validated parameters, from the JSON body, multipart fields, the query string (on
        TorchServe's /<model>/predict route) or X-<name> headers, in that order of precedence."""
        return {}

    def preprocess_item(self, data: bytes) -> Any:
        raise NotImplementedError

    def predict(self, items: list[Any]) -> list[Any]:
        raise NotImplementedError

    def format_output(self, output: Any, params: dict[str, Any]) -> Any:
        return output

    # -- request handling ---------------------------------------------------------------------
    @staticmethod
    def _headers(context, idx: int) -> dict[str, Any]:
        try:
            return context.request_processor[idx].get_request_properties() or {}
        except (AttributeError, IndexError, TypeError):
            return {}

    @staticmethod
    def _is_grpc(headers: dict[str, Any]) -> bool:
        """A REST request carries its HTTP headers (Host, Content-Length, ...) as strings; a gRPC
        request only has the per-input content-type entries, which are dicts."""
        return bool(headers) and not any(isinstance(v, str) for v in headers.values())

    def _header_params(self, headers: dict[str, Any]) -> dict[str, str]:
        """Parameters sent as X-<Name> headers (TorchServe drops the query string of
        /predictions requests, so a header is the way to pass one alongside a raw body)."""
        wanted = {f"x-{name}": name for name in self.PARAMETERS}
        return {wanted[k.lower()]: v for k, v in headers.items() if k.lower() in wanted}

    def _decode(self, row: Any, header_params: dict) -> tuple[payloads.Request, dict, list]:
        request = payloads.parse(row, self.max_instances)
        params = self.parse_params({**header_params, **request.params})
        items = []
        for index, data in enumerate(request.inputs):
            try:
                items.append(self.preprocess_item(data))
            except RequestError as err:
                if request.instances:
                    err.message = f"instances[{index}]: {err.message}"
                raise
        return request, params, items

    def handle(self, data, context):
        started = time.perf_counter()
        self.context = context
        responses: list[Any] = [None] * len(data)
        accepted = []
        for idx, row in enumerate(data):
            context.set_response_content_type(idx, "application/json")
            headers = self._headers(context, idx)
            if self._is_grpc(headers):
                # TorchServe 0.12's gRPC StreamPredictions needs this header or its frontend
                # hits a NullPointerException and restarts the worker; on REST it must be absent
                # (REST answers would hang).
                context.set_response_header(idx, "ts_stream_next", "false")
            try:
                accepted.append((idx, *self._decode(row, self._header_params(headers))))
            except RequestError as err:
                responses[idx] = err.body()
                context.set_response_status(err.status, err.message, idx)
                self._error_metric.add_or_update(1, [self.model_name])
                logger.info("request %d rejected (%d): %s", idx, err.status, err.message)
        if accepted:
            items = [item for *_, batch_items in accepted for item in batch_items]
            with torch.inference_mode():
                outputs = self.predict(items)
            position = 0
            for idx, request, params, batch_items in accepted:
                mine = outputs[position:position + len(batch_items)]
                position += len(batch_items)
                answers = [self.format_output(out, params) for out in mine]
                responses[idx] = {"predictions": answers} if request.instances else answers[0]
            self._batch_size_metric.add_or_update(len(accepted), [self.model_name])
        context.metrics.add_time("HandlerTime", round((time.perf_counter() - started) * 1000, 2),
                                 None, "ms")
        return responses
