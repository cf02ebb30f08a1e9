"""BatchHandler: the shared base of this bundle's TorchServe handlers, for any kind of model.

Why a standalone base (initialize + handle) rather than TorchServe's BaseHandler stages:
BaseHandler.handle runs preprocess -> inference -> postprocess on the whole batch, so one request
that fails any stage fails every request of the batch, and its initialize assumes a TorchScript or
model.py archive. Isolating each request needs its own loop in handle(), and then the inherited
stages would only be dead names a subclass could override to no effect. TorchServe needs just
`initialize(context)` and `handle(data, context)` from a handler class (ts/model_loader.py), so
the base provides exactly those and a small contract of its own, below.

Per-request isolation, the base's main job:
  - anything raised while decoding, validating or preprocessing one request answers that request
    alone: its RequestError's 4xx, or 500 InternalError (traceback logged) for a bug of ours;
  - if the model call fails for a batch, the batch is bisected (halves, down to single items)
    so only the culprits fail; the worker never sees an exception;
  - the answer is serialised here (strict JSON: no NaN), so a bad value cannot fail the batch
    in TorchServe's own serialiser; reason phrases are the short ASCII standard ones.

One Item per input travels from preprocessing to formatting: preprocess_item fills item.input
(and item.meta, e.g. the original image size), predict returns one output per item, and
format_output sees the whole item, so a detector can map boxes back to the original image.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from ts.metrics.metric_type_enum import MetricTypes

from handlers import envelopes, runtimes
from handlers.errors import InternalError, RequestError, reason_phrase

logger = logging.getLogger(__name__)

RUNTIMES = runtimes.RUNTIMES


def choose_device(gpu_id: Any) -> torch.device:
    """cuda:<gpu_id> when TorchServe assigned a GPU and CUDA works, else the CPU."""
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{int(gpu_id)}")
    return torch.device("cpu")


@dataclass
class Request:
    """One client request of the batch and what became of it."""

    index: int
    batched: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    items: list["Item"] = field(default_factory=list)
    error: RequestError | None = None


@dataclass
class Item:
    """One input of one request, from its raw bytes/text to the model's output."""

    request: Request
    position: int  # index in the request's instances/inputs list (0 for a single input)
    data: Any  # what the codec decoded: image bytes, a text
    input: Any = None  # set by preprocess_item: what predict() batches
    meta: dict[str, Any] = field(default_factory=dict)  # set by preprocess_item, for formatting
    output: Any = None  # set from predict()


class BatchHandler:
    """Shared base: request decoding, batching, per-request errors, device and runtime choice.

    Subclasses set:
      CODEC                          the wire format (handlers.envelopes.IMAGE or TEXT)
      PARAMETERS                     request parameter names (each may also be an X-<Name> header)
    and implement:
      load_model(model_dir)          build self.model on self.device, through load_network()
      parse_params(raw) -> dict      validate a request's parameters; raise RequestError
      preprocess_item(item)          item.data -> item.input (+ item.meta); raise RequestError
      predict(items) -> list         self.model on a batch of items; one output per item
      format_output(item, params)    item.output (+ item.meta) -> its JSON-serialisable answer
    Settings: self.config is the catalog's free-form `handler:` mapping (model-config.yaml's
    `handler:` section); self.limits and self.runtime come from the catalog's typed fields.
    """

    CODEC: envelopes.Codec = envelopes.IMAGE
    PARAMETERS: tuple[str, ...] = ()

    def __init__(self):
        self.config: dict[str, Any] = {}
        self.limits: dict[str, Any] = {}
        self.runtime = "eager"
        self.workers = 1
        self.model_name = "model"
        self.max_instances = 32
        self.model: Any = None
        self.device = torch.device("cpu")
        self.context = None
        self.manifest: dict[str, Any] = {}
        self.initialized = False

    # -- lifecycle ---------------------------------------------------------------------------
    def initialize(self, context):
        properties = context.system_properties
        self.context = context
        self.manifest = context.manifest
        self.model_name = self.manifest["model"]["modelName"]
        model_yaml = getattr(context, "model_yaml_config", None) or {}
        self.config = dict(model_yaml.get("handler") or {})
        bundle = model_yaml.get("bundle") or {}
        self.limits = dict(bundle.get("limits") or {})
        self.runtime = str(bundle.get("runtime", "eager"))
        self.workers = int(model_yaml.get("maxWorkers", 1))
        self.max_instances = int(self.limits.get("max_instances_per_request", 32))
        self.device = choose_device(properties.get("gpu_id"))
        started = time.perf_counter()
        with torch.inference_mode():
            self.load_model(Path(properties["model_dir"]))
        logger.info("%s loaded on %s (%s) in %.2fs", self.model_name, self.device, self.runtime,
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

    def load_network(self, model_dir: Path, eager: Callable[[], Any],
                     example: tuple[torch.Tensor, ...] = ()) -> Any:
        """The network forward the kind handler calls (self.model), for the catalog's runtime.

        The one place a runtime is chosen (handlers/runtimes.py): eager() builds the PyTorch
        module; example is one input batch (TorchScript traces with it). Every runtime is a
        callable taking the eager module's tensors and returning its first output as a float32
        CPU tensor; it gets cores // maxWorkers threads."""
        return runtimes.load(self.runtime, eager, example, model_dir, self.device, self.workers)

    # -- the subclass contract ----------------------------------------------------------------
    def load_model(self, model_dir: Path) -> None:
        raise NotImplementedError

    def parse_params(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Validated parameters, from the JSON body, multipart fields, the query string (on
        TorchServe's /<model>/predict route) or X-<name> headers, in that order of precedence."""
        return {}

    def preprocess_item(self, item: Item) -> None:
        raise NotImplementedError

    def predict(self, items: list[Item]) -> list[Any]:
        raise NotImplementedError

    def format_output(self, item: Item, params: dict[str, Any]) -> Any:
        return item.output

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

    def _header_params(self, headers: dict[str, Any]) -> dict[str, Any]:
        """Parameters sent as X-<Name> headers, case-insensitive, `-` for `_` (X-Min-Score for
        min_score): TorchServe drops the query string of /predictions requests, so a header is
        the way to pass one alongside a raw body."""
        wanted = {f"x-{name}".lower().replace("_", "-"): name for name in self.PARAMETERS}
        found = {}
        for key, value in headers.items():
            name = wanted.get(key.lower().replace("_", "-")) if isinstance(key, str) else None
            if name is not None:
                found[name] = value
        return found

    def _fail(self, request: Request, error: RequestError) -> None:
        if request.error is None:
            request.error = error

    def _prepare(self, idx: int, row: Any, headers: dict[str, Any]) -> Request:
        """Decode, validate and preprocess one request; never raises."""
        request = Request(idx)
        stage = "decoding"
        try:
            envelope = self.CODEC.decode(row, self.max_instances)
            request.batched = envelope.batched
            stage = "validating"
            request.params = self.parse_params({**self._header_params(headers),
                                                **envelope.params})
            stage = "preprocessing"
            for position, data in enumerate(envelope.inputs):
                item = Item(request, position, data)
                try:
                    self.preprocess_item(item)
                except RequestError as err:
                    if envelope.batched:
                        err.message = f"{envelope.key}[{position}]: {err.message}"
                    raise
                request.items.append(item)
        except RequestError as err:
            self._fail(request, err)
        except Exception:  # a bug of ours, or a library failing on odd input: this request only
            logger.exception("request %d: unexpected error while %s it", idx, stage)
            self._fail(request, InternalError(stage))
        return request

    def _run(self, items: list[Item]) -> None:
        """Run the model on items, setting item.output; on failure bisect so that only the
        failing items' requests fail."""
        items = [item for item in items if item.request.error is None]
        if not items:
            return
        try:
            outputs = self.predict(items)
            if len(outputs) != len(items):
                raise RuntimeError(f"predict returned {len(outputs)} outputs for {len(items)}")
        except Exception as exc:
            if len(items) == 1:
                request = items[0].request
                if isinstance(exc, RequestError):
                    self._fail(request, exc)
                else:
                    logger.error("request %d: the model failed on it", request.index,
                                 exc_info=True)
                    self._fail(request, InternalError("running the model on"))
                return
            logger.warning("the model failed on a batch of %d items (%s: %s); retrying halves",
                           len(items), type(exc).__name__, str(exc)[:200])
            middle = len(items) // 2
            self._run(items[:middle])
            self._run(items[middle:])
            return
        for item, output in zip(items, outputs):
            item.output = output

    def _answer(self, request: Request) -> bytes:
        if request.error is None:
            try:
                answers = [self.format_output(item, request.params) for item in request.items]
                body = {"predictions": answers} if request.batched else answers[0]
                return json.dumps(body, allow_nan=False).encode()
            except RequestError as err:
                self._fail(request, err)
            except Exception:
                logger.exception("request %d: unexpected error while formatting its answer",
                                 request.index)
                self._fail(request, InternalError("formatting the answer to"))
        return json.dumps(request.error.body()).encode()

    def handle(self, data, context):
        started = time.perf_counter()
        self.context = context
        requests = []
        for idx, row in enumerate(data):
            context.set_response_content_type(idx, "application/json")
            headers = self._headers(context, idx)
            if self._is_grpc(headers):
                # TorchServe 0.12's gRPC StreamPredictions needs this header or its frontend
                # hits a NullPointerException and restarts the worker; on REST it must be absent
                # (REST answers would hang).
                context.set_response_header(idx, "ts_stream_next", "false")
            requests.append(self._prepare(idx, row, headers))
        ready = [r for r in requests if r.error is None]
        items = [item for r in ready for item in r.items]
        if items:
            with torch.inference_mode():
                self._run(items)
            self._batch_size_metric.add_or_update(len(ready), [self.model_name])
        responses = [self._answer(r) for r in requests]
        for request in requests:
            if request.error is not None:
                error = request.error
                context.set_response_status(error.status, reason_phrase(error.status),
                                            request.index)
                self._error_metric.add_or_update(1, [self.model_name])
                logger.info("request %d rejected (%d %s): %s", request.index, error.status,
                            error.type, error.message[:200])
        context.metrics.add_time("HandlerTime", round((time.perf_counter() - started) * 1000, 2),
                                 None, "ms")
        return responses
