"""The benchmark's archives, built into build/bench/store (never into model_store/).

Every served target gets the classifier's batching and worker settings from the catalog, so the
rows differ only in what runs inside the worker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from scripts.build import artifacts
from scripts import catalog
from scripts.catalog import Model

CLASSIFIER = "efficientnet_lite0"

NOOP_HANDLER = '''"""No-op handler: answers every request of the batch without reading it (the server's floor)."""


def handle(data, context):
    if data is None:
        return None
    return [{"ok": True}] * len(data)
'''


@dataclass(frozen=True)
class Target:
    """One served target: its results.json name and its archive's model name."""

    name: str       # noop | stock | handler:<runtime> | model:<catalog name>
    model: str      # TorchServe model name
    payload: str    # image | text | face


def _archive(stage: Path, store: Path, name: str, handler: Path, config: dict,
             serialized: Path | None = None, extra: list[Path] = ()) -> Path:
    (stage / "model-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [str(Path(sys.executable).with_name("torch-model-archiver")), "--model-name", name,
           "--version", "1.0", "--handler", str(handler),
           "--config-file", str(stage / "model-config.yaml"), "--export-path", str(store),
           "--force"]
    if serialized:
        cmd += ["--serialized-file", str(serialized)]
    if extra:
        cmd += ["--extra-files", ",".join(str(p) for p in extra)]
    subprocess.run(cmd, check=True, env={**os.environ, "TMPDIR": str(stage)},
                   stdout=subprocess.DEVNULL)
    return store / f"{name}.mar"


def server_settings(model: Model) -> dict:
    """TorchServe's batching/worker keys of a catalog model's model-config.yaml."""
    config = model.model_config_yaml()
    return {k: v for k, v in config.items() if k not in ("handler", "bundle")}


def noop_archive(store: Path, settings: dict) -> Target:
    with tempfile.TemporaryDirectory(dir=store.parent) as tmp:
        handler = Path(tmp) / "noop_handler.py"
        handler.write_text(NOOP_HANDLER)
        _archive(Path(tmp), store, "noop", handler, settings)
    return Target("noop", "noop", "image")


def stock_archive(store: Path, model: Model, settings: dict) -> Target:
    """TorchServe's image_classifier on the same weights, traced to TorchScript as it expects."""
    from scripts.build.export_tf import torch_network

    size = int(model.input["size"])
    with tempfile.TemporaryDirectory(dir=store.parent) as tmp:
        stage = Path(tmp)
        with torch.no_grad():
            traced = torch.jit.trace(torch_network(model), torch.zeros(1, 3, size, size))
        traced.save(str(stage / "model.pt"))
        labels = catalog.labels(model)
        (stage / "index_to_name.json").write_text(
            json.dumps({str(i): label for i, label in enumerate(labels)}))
        _archive(stage, store, "stock", Path("image_classifier"), settings,
                 serialized=stage / "model.pt", extra=[stage / "index_to_name.json"])
    return Target("stock", "stock", "image")


def handler_archive(store: Path, model: Model, runtime: str, **overrides) -> Target:
    """The bundle's archive of `model` with its runtime (and any catalog field) overridden."""
    name = f"bench_{model.name}_{runtime}"
    variant = _variant(model, name, runtime, **overrides)
    artifacts.build_mar(variant, store)
    return Target(f"handler:{runtime}", name, "image")


def tuning_archive(store: Path, model: Model, runtime: str, batch_size: int, delay_ms: int,
                   workers: int) -> Target:
    """The handler with other batching/worker settings (the --tune grid)."""
    name = f"tune_{runtime}_b{batch_size}_d{delay_ms}_w{workers}"
    variant = _variant(
        model, name, runtime,
        batching=dataclasses.replace(model.batching, batch_size=batch_size,
                                     max_batch_delay_ms=delay_ms),
        workers=dataclasses.replace(model.workers, min=workers, max=workers))
    artifacts.build_mar(variant, store)
    return Target(f"tune:{runtime}:batch{batch_size}:delay{delay_ms}ms:workers{workers}", name,
                  "image")


def _variant(model: Model, name: str, runtime: str, **overrides) -> Model:
    return dataclasses.replace(model, name=name, runtime=runtime, **overrides)


def catalog_archive(store: Path, model: Model, payload: str) -> Target:
    """A catalog model as `make archive` builds it (its own runtime and settings)."""
    artifacts.build([model], servers=("torchserve",))
    shutil.copy2(model.mar_path, store / model.mar_path.name)
    return Target(f"model:{model.name}", model.name, payload)


def bench_store(out: Path) -> Path:
    store = out / "store"
    if store.exists():
        shutil.rmtree(store)
    store.mkdir(parents=True)
    return store



# The classifier as served before runtimes and tuning: eager, one worker, 10 ms batch window.
TODAY = {"runtime": "eager", "batch_size": 8, "delay_ms": 10, "workers": 1}


def baseline_archive(store: Path, model: Model) -> Target:
    """Today's handler settings, for the issue's "x times today's eager handler" ratios."""
    target = tuning_archive(store, model, TODAY["runtime"], TODAY["batch_size"],
                            TODAY["delay_ms"], TODAY["workers"])
    return dataclasses.replace(target, name="baseline:eager")
