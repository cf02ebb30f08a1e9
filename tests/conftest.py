"""Shared fixtures: the real TorchServe, started once per test session on free loopback ports
with token authorization on, through the same launcher `make serve` uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import catalog
from scripts.build import artifacts as builder
from scripts.build import samples
from scripts.serve import torchserve as launcher

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def models() -> dict[str, catalog.Model]:
    return catalog.load()


@pytest.fixture(scope="session")
def artifacts(models):
    """Build (or reuse, when up to date) every artifact of the catalog."""
    builder.build(list(models.values()))
    return models


@pytest.fixture(scope="session")
def mar_archives(models):
    """Only the TorchServe archives (what the handler tests and the server need)."""
    builder.build(list(models.values()), servers=("torchserve",))
    return {m.name: m.mar_path for m in models.values() if "torchserve" in m.servers}


@pytest.fixture(scope="session")
def sample_images() -> dict[str, Path]:
    """The classifier's sample photos (cat, coffee) and the face photo (astronaut)."""
    return samples.write_all()


@pytest.fixture(scope="session")
def classifier_photos(sample_images) -> dict[str, Path]:
    """Only the photos with a known ImageNet class (samples.PHOTOS)."""
    return {name: path for name, path in sample_images.items() if name in samples.PHOTOS}


@pytest.fixture(scope="session")
def torchserve(mar_archives, tmp_path_factory) -> launcher.Server:
    """A real TorchServe with every catalog model READY; stopped at the end of the session."""
    run_dir = tmp_path_factory.mktemp("torchserve")
    server = launcher.start(run_dir=run_dir, ports=launcher.Ports.free())
    yield server
    launcher.stop(run_dir)
