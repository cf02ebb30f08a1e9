"""Opt-in: the TF Serving clients against a REAL TF Serving serving the bundle's SavedModel.

Enabled by TFSERVING_REST_URL (e.g. http://127.0.0.1:8501) and/or TFSERVING_GRPC_TARGET
(e.g. 127.0.0.1:8500); skipped otherwise (tensorflow_model_server cannot run here).
"""

from __future__ import annotations

import os

import pytest

from clients import errors
from tests.clients.conftest import EXPECTED, MODEL

REST_URL = os.environ.get("TFSERVING_REST_URL")
GRPC_TARGET = os.environ.get("TFSERVING_GRPC_TARGET")

if not (REST_URL or GRPC_TARGET):
    pytest.skip("set TFSERVING_REST_URL and/or TFSERVING_GRPC_TARGET to test against a real "
                "TF Serving (none can run in this environment)", allow_module_level=True)

pytestmark = pytest.mark.e2e_tfserving

PROTOCOLS = [p for p, on in (("rest", REST_URL), ("grpc", GRPC_TARGET)) if on]


@pytest.fixture(scope="module", params=PROTOCOLS)
def tfs(request):
    if request.param == "rest":
        from clients import TFServingClient
        client = TFServingClient(REST_URL, model=MODEL)
    else:
        from clients import TFServingGrpcClient
        client = TFServingGrpcClient(GRPC_TARGET, model=MODEL)
    with client:
        yield client


def test_model_is_available(tfs, models):
    assert tfs.is_available(version=models[MODEL].tf_version)


def test_sample_photos(tfs, sample_images):
    rows = tfs.classify_images([sample_images["cat"], sample_images["coffee"]], topk=2)
    assert rows[0][0].class_index in EXPECTED["cat"]
    assert rows[1][0].class_index in EXPECTED["coffee"]


def test_a_bad_instance_fails_alone(tfs, sample_images):
    rows = tfs.classify_images([b"not an image", sample_images["coffee"]], on_error="return")
    assert isinstance(rows[0], errors.InstanceError) and rows[0].message
    assert rows[1][0].class_index in EXPECTED["coffee"]


def test_unknown_model_is_not_found(tfs):
    with pytest.raises(errors.NotFound):
        tfs.status("no_such_model")
