"""Build every model artifact the catalog asks for: TorchServe .mar archives, TF Serving
SavedModels, and the sample photos used by the README and the tests.

    python -m scripts.build [--model NAME] [--force]

Idempotent: each artifact carries a fingerprint of everything it was built from (catalog entry,
handler sources, weights, labels, tool versions); an artifact whose fingerprint is unchanged is
skipped, so a second `make archive` does no work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch  # noqa: F401  (import torch before tensorflow: the reverse order segfaults)
import yaml

from scripts import catalog
from scripts.build import export_runtimes, samples
from scripts.catalog import ROOT, Model

STAMPS = ROOT / "build" / "stamps"
HANDLERS = ROOT / "handlers"


def fingerprint(model: Model, server: str, extra_files: list[Path] = ()) -> str:
    """A digest of everything an artifact depends on."""
    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(model), sort_keys=True, default=str).encode())
    digest.update(server.encode())
    for dist in ("torch", "torch-model-archiver", "tensorflow-cpu", "keras",
                 "efficientnet-lite-pytorch", "transformers", "tokenizers", "facenet-pytorch"):
        try:
            digest.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            pass
    for path in sorted(extra_files):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _stamp(model: Model, server: str) -> Path:
    return STAMPS / f"{model.name}.{server}.sha256"


def up_to_date(model: Model, server: str, output: Path, digest: str) -> bool:
    stamp = _stamp(model, server)
    return output.exists() and stamp.is_file() and stamp.read_text().strip() == digest


def mark_built(model: Model, server: str, digest: str) -> None:
    STAMPS.mkdir(parents=True, exist_ok=True)
    _stamp(model, server).write_text(digest + "\n")


def handler_sources() -> list[Path]:
    return sorted(p for p in HANDLERS.glob("*.py")) + export_runtimes.sources()


def handler_module(model: Model) -> Path:
    """The model's handler module; checked here rather than at catalog load, so tools that only
    read the catalog (the Docker config renderer) do not need handlers/."""
    path = HANDLERS / f"{model.handler}.py"
    if not path.is_file():
        raise catalog.CatalogError(
            f"model {model.name!r}: handler handlers/{model.handler}.py does not exist")
    return path


def build_mar(model: Model, store: Path | None = None) -> Path:
    """Package the catalog's files, model-config.yaml and the handlers package into a .mar
    (into the model store, or `store`: the benchmark's and tests' variants go elsewhere)."""
    handler = handler_module(model)
    stage = Path(tempfile.mkdtemp(prefix=f"{model.name}-", dir=ROOT / "build"))
    try:
        extra = stage / "extra"
        shutil.copytree(HANDLERS, extra / "handlers", ignore=shutil.ignore_patterns("__pycache__"))
        for archive_path, source in model.files.items():
            source.copy_into(extra / archive_path)
        export_runtimes.prepare(model, extra)  # the runtime's files (ONNX), checked vs eager
        config = stage / "model-config.yaml"
        config.write_text(yaml.safe_dump(model.model_config_yaml(), sort_keys=False))
        tmp_store = stage / "out"
        tmp_store.mkdir()
        archiver = Path(sys.executable).with_name("torch-model-archiver")
        # The archiver stages files in $TMPDIR/<model name>: one TMPDIR per build, so two
        # builds at once (make archive beside a test session) cannot collide.
        env = {**os.environ, "TMPDIR": str(stage)}
        subprocess.run(
            [
                str(archiver),
                "--model-name", model.name,
                "--version", model.version,
                "--handler", str(handler),
                "--extra-files", str(extra),
                "--config-file", str(config),
                "--export-path", str(tmp_store),
                "--force",
            ],
            check=True,
            env=env,
        )
        target = Path(store) / model.mar_path.name if store else model.mar_path
        target.parent.mkdir(parents=True, exist_ok=True)
        # Replace atomically: a server reading the store never sees a half-written archive.
        (tmp_store / f"{model.name}.mar").replace(target)
        return target
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def build_savedmodel(model: Model) -> None:
    # In a process of its own: once TensorFlow is loaded, a later import of triton (through
    # torch._dynamo, which the ONNX export and torchvision.ops reach) segfaults this process.
    subprocess.run([sys.executable, "-m", "scripts.build.export_tf", "--model", model.name],
                   check=True, cwd=ROOT)


def tf_sources() -> list[Path]:
    from scripts.build import export_tf

    return export_tf.sources()


def build(models: list[Model], force: bool = False, servers: tuple[str, ...] = catalog.SERVERS
          ) -> None:
    (ROOT / "build").mkdir(exist_ok=True)
    for model in models:
        steps = []
        if "torchserve" in model.servers:
            steps.append(("torchserve", model.mar_path, build_mar, handler_sources))
        if "tfserving" in model.servers:
            steps.append(("tfserving", model.savedmodel_dir, build_savedmodel, tf_sources))
        for server, output, step, sources in steps:
            if server not in servers:
                continue
            digest = fingerprint(model, server, sources())
            if not force and up_to_date(model, server, output, digest):
                print(f"[build] {model.name} ({server}): up to date, {output.relative_to(ROOT)}")
                continue
            started = time.monotonic()
            print(f"[build] {model.name} ({server}): building {output.relative_to(ROOT)}")
            step(model)
            mark_built(model, server, digest)
            print(f"[build] {model.name} ({server}): done in {time.monotonic() - started:.1f}s")
    samples.write_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.build",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="build only this model (repeatable)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    models = catalog.load()
    if args.model:
        missing = set(args.model) - set(models)
        if missing:
            parser.error(f"not in the catalog: {', '.join(sorted(missing))}")
        models = {name: models[name] for name in args.model}
    build(list(models.values()), force=args.force)
    return 0

