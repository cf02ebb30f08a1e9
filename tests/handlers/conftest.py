"""Handlers loaded from the archives the build produced, once per session, driven in-process."""

from __future__ import annotations

import importlib

import pytest

from tests.handler_context import make_context, run_batch, unpack


@pytest.fixture(scope="session")
def loaded_handlers(mar_archives, tmp_path_factory):
    """name -> (handler, context), loaded on first use like a TorchServe worker does."""
    cache = {}

    def load(name: str):
        if name not in cache:
            from scripts import catalog

            module = importlib.import_module(f"handlers.{catalog.load()[name].handler}")
            (cls,) = [c for c in vars(module).values()
                      if isinstance(c, type) and c.__module__ == module.__name__]
            model_dir = unpack(mar_archives[name], tmp_path_factory.mktemp(name))
            context = make_context(model_dir)
            handler = cls()
            handler.initialize(context)
            cache[name] = (handler, context)
        return cache[name]

    return load


@pytest.fixture(scope="session")
def sender(loaded_handlers):
    """sender(name)(rows, headers=None) -> one Answer per row."""

    def for_model(name: str):
        handler, context = loaded_handlers(name)

        def run(rows, headers=None):
            return run_batch(handler, context, rows, headers)

        return run

    return for_model
