"""A toy handler on the shared base, for unit tests with no archive and no server.

Each input is a text holding a number; the "model" doubles a batch of numbers at once. Magic
texts make each stage misbehave, the way a real model or a bug of ours could:
  "bug"       preprocess_item raises KeyError (a bug of ours)      -> that request: 500
  "bad"       preprocess_item raises InvalidText                   -> that request: 400
  "poison"    the model raises for any batch that contains it      -> bisected; only it fails
  "nan"       the model answers NaN (not valid JSON)               -> that request: 500
  "fmt"       format_output raises TypeError                       -> that request: 500
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from handlers import envelopes
from handlers.base import BatchHandler, Item
from handlers.errors import InvalidParameter, InvalidText, echo
from tests.handler_context import context_for


class ToyModel:
    """Stands for a network: called once per batch, remembers the batch sizes it saw."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, batch: list[Any]) -> list[float]:
        self.calls.append(len(batch))
        if "poison" in batch:
            raise RuntimeError("the network choked on this batch")
        return [math.nan if x == "nan" else (x if isinstance(x, str) else 2 * x) for x in batch]


class ToyHandler(BatchHandler):
    CODEC = envelopes.TEXT
    PARAMETERS = ("offset",)

    def load_model(self, model_dir: Path) -> None:
        self.model = self.load_network(model_dir, ToyModel)

    def parse_params(self, raw: dict[str, Any]) -> dict[str, Any]:
        offset = raw.get("offset", 0)
        if envelopes.integer(offset) is None:
            raise InvalidParameter(f"offset must be an integer, got {echo(offset)}")
        return {"offset": envelopes.integer(offset)}

    def preprocess_item(self, item: Item) -> None:
        text = item.data.strip()
        if text == "bug":
            raise KeyError("a bug of ours")
        if text == "bad":
            raise InvalidText("bad text")
        if text in ("poison", "nan", "fmt"):
            item.input = text
        else:
            item.input = envelopes.number(text)
            if item.input is None:
                raise InvalidText(f"not a number: {echo(text)}")
        item.meta["original"] = item.data

    def predict(self, items: list[Item]) -> list[Any]:
        return self.model([item.input for item in items])

    def format_output(self, item: Item, params: dict[str, Any]) -> Any:
        if item.output == "fmt":
            raise TypeError("formatting bug")
        if item.output == "poison":  # never reached: the model fails on it
            raise AssertionError
        if isinstance(item.output, float) and math.isnan(item.output):
            return item.output
        return {"value": item.output + params["offset"], "text": item.meta["original"]}


def toy(tmp_path: Path, runtime: str = "eager", max_instances: int = 4):
    """(handler, context) of an initialized toy model."""
    manifest = {"model": {"modelName": "toy", "modelVersion": "1", "handler": "toy.py"}}
    model_yaml = {"batchSize": 8, "handler": {"module": "toy"},
                  "bundle": {"runtime": runtime,
                             "limits": {"max_instances_per_request": max_instances}}}
    context = context_for(tmp_path, manifest, model_yaml)
    handler = ToyHandler()
    handler.initialize(context)
    return handler, context
