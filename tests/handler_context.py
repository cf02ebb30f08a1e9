"""The project's handler test context: a real ts.context.Context around an unpacked archive, so
handler tests run the handler exactly as a TorchServe worker would, without a server."""

from __future__ import annotations

import json
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Answer:
    """One request's outcome: the HTTP status the worker would send and the decoded body."""

    status: int
    message: str | None  # the HTTP reason phrase
    body: Any  # the JSON-decoded answer


def unpack(mar: Path, target: Path) -> Path:
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(target)
    return target


def make_context(model_dir: Path, gpu: int | None = None) -> Context:
    """The context of an unpacked archive, as TorchServe builds it for a worker."""
    manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    model_yaml = yaml.safe_load((model_dir / manifest["model"]["configFile"]).read_text())
    return context_for(model_dir, manifest, model_yaml, gpu)


def context_for(model_dir: Path, manifest: dict, model_yaml: dict,
                gpu: int | None = None) -> Context:
    """A worker's context from its parts (for toy models with no archive)."""
    metrics = MetricsCacheYamlImpl(str(ROOT / "config" / "metrics.yaml"))
    metrics.initialize_cache()
    return Context(
        manifest["model"]["modelName"], str(model_dir), manifest,
        batch_size=model_yaml.get("batchSize", 1), gpu=gpu, mms_version="0.12.0",
        metrics=metrics, model_yaml_config=model_yaml,
    )


def as_torchserve_row(body: bytes, content_type: str = "application/json") -> dict:
    """A request as TorchServe's worker hands it over: JSON bodies decoded when they parse
    (ts/protocol/otf_message_handler.py), text/* decoded to str when UTF-8, else bytes."""
    value: Any = bytearray(body)
    try:
        if content_type == "application/json":
            value = json.loads(body.decode("utf-8"))
        elif content_type.startswith("text"):
            value = body.decode("utf-8")
    except Exception:  # TorchServe forwards the bytes when decoding fails
        pass
    return {"body": value}


def run_batch(handler, context: Context, rows: list[dict],
              headers: list[dict] | None = None) -> list[Answer]:
    """Send one batch through handler.handle() as the worker does; one Answer per row."""
    # A REST request as TorchServe passes it: HTTP headers as strings (gRPC ones have none).
    headers = [{"Host": "127.0.0.1", **h} for h in (headers or [{} for _ in rows])]
    ids = {i: str(uuid.uuid4()) for i in range(len(rows))}
    context.request_ids = ids
    context.request_processor = [RequestProcessor(h) for h in headers]
    context.metrics.set_request_ids(ids)
    bodies = handler.handle(rows, context)
    assert isinstance(bodies, list) and len(bodies) == len(rows), \
        "the handler must answer every request of the batch"
    answers = []
    for idx, body in enumerate(bodies):
        status, phrase = context.get_response_status(idx)
        # What TorchServe sends: bytes as they are, anything else through json.dumps.
        assert isinstance(body, (bytes, bytearray)), type(body)
        if phrase is not None:
            assert phrase.isascii() and len(phrase) < 40, phrase
        answers.append(Answer(status or 200, phrase, json.loads(body)))
    return answers
