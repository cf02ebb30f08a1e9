"""Fixtures of the client tests: clients bound to the session's real TorchServe, the TF Serving
test double over the real SavedModel, and generated gRPC stubs."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients import build_protos
from scripts.build import samples

ROOT = Path(__file__).resolve().parents[2]
MODEL = "efficientnet_lite0"
# Sample photo -> ImageNet classes a correct classifier may answer as top-1.
EXPECTED = {name: classes for name, (_, classes) in samples.PHOTOS.items()}


@pytest.fixture(scope="session", autouse=True)
def grpc_stubs():
    """The build step `make` runs (idempotent): a fresh clone has no stubs until it ran."""
    return build_protos.generate()


@pytest.fixture(scope="session")
def ts_env(torchserve) -> dict[str, str]:
    """The environment variables that point a client at the session's TorchServe."""
    return {
        "TORCHSERVE_URL": torchserve.inference_url,
        "TORCHSERVE_MANAGEMENT_URL": torchserve.management_url,
        "TORCHSERVE_METRICS_URL": torchserve.metrics_url,
        "TORCHSERVE_GRPC_TARGET": f"127.0.0.1:{torchserve.ports.grpc_inference}",
        "TORCHSERVE_GRPC_MANAGEMENT_TARGET": f"127.0.0.1:{torchserve.ports.grpc_management}",
        "TORCHSERVE_KEY_FILE": str(torchserve.key_file),
    }


@pytest.fixture(scope="session")
def ts_rest(torchserve):
    from clients import TorchServeClient

    with TorchServeClient(torchserve.inference_url, torchserve.management_url,
                          torchserve.metrics_url, key_file=torchserve.key_file,
                          model=MODEL) as client:
        yield client


@pytest.fixture(scope="session")
def ts_grpc(torchserve):
    from clients import TorchServeGrpcClient

    with TorchServeGrpcClient(f"127.0.0.1:{torchserve.ports.grpc_inference}",
                              f"127.0.0.1:{torchserve.ports.grpc_management}",
                              key_file=torchserve.key_file, model=MODEL) as client:
        yield client


@pytest.fixture(scope="session")
def savedmodel_dir(artifacts, models) -> Path:
    path = models[MODEL].savedmodel_dir
    assert (path / "saved_model.pb").is_file(), f"no SavedModel at {path}: make archive"
    return path


@pytest.fixture(scope="session")
def tfserving_double(savedmodel_dir, models):
    """The TF Serving TEST DOUBLE (tests/doubles/tfserving_double.py) serving the real
    SavedModel with the catalog's version and labels."""
    from tests.doubles.tfserving_double import Models, TFServingDouble

    model = models[MODEL]
    servables = Models()
    servables.add(MODEL, model.tf_version, savedmodel_dir,
                  model.tfserving.get("version_labels") or {})
    double = TFServingDouble(servables).start()
    yield double
    double.stop()
