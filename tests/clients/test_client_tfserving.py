"""TF Serving clients (REST and gRPC) against the TF Serving TEST DOUBLE
(tests/doubles/tfserving_double.py) serving the real SavedModel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import urllib3

from clients import TFServingClient, TFServingGrpcClient, errors
from tests.clients.conftest import EXPECTED, MODEL


@pytest.fixture(scope="module", params=["rest", "grpc"])
def tfs(request, tfserving_double):
    if request.param == "rest":
        client = TFServingClient(tfserving_double.rest_url, model=MODEL)
    else:
        client = TFServingGrpcClient(tfserving_double.grpc_target, model=MODEL)
    with client:
        yield client


@pytest.fixture(scope="module")
def tf_rest(tfserving_double):
    with TFServingClient(tfserving_double.rest_url, model=MODEL) as client:
        yield client


def test_status_and_version_availability(tfs, models):
    version = models[MODEL].tf_version
    (status,) = tfs.status()
    assert (status.version, status.state) == (version, "AVAILABLE")
    assert tfs.is_available(version=version)
    assert not tfs.is_available(version=version + 1)
    assert not tfs.is_available("no_such_model")
    assert tfs.status(label="stable")[0].version == version


def test_signatures_come_from_metadata(tfs):
    signature = tfs.signature("serving_default")
    (key,) = signature.inputs
    assert signature.inputs[key].dtype == "DT_STRING"
    assert {"class_ids", "labels", "probabilities"} <= set(signature.outputs)
    assert tfs.signature("pixels").inputs["pixels"].shape[1:] == (224, 224, 3)


def test_classify_sample_photos(tfs, sample_images):
    rows = tfs.classify_images([sample_images["cat"], sample_images["coffee"]], topk=3)
    assert [len(r) for r in rows] == [3, 3]
    assert rows[0][0].class_index in EXPECTED["cat"]
    assert rows[1][0].class_index in EXPECTED["coffee"]
    assert rows[1][0].label == "espresso"


@pytest.mark.parametrize("selector", [{"version": 1}, {"label": "stable"}])
def test_version_or_label_selection(tfs, sample_images, selector):
    (top,) = tfs.classify_image(sample_images["coffee"], topk=1, **selector)
    assert top.class_index in EXPECTED["coffee"]


def test_numpy_in_and_out_keeps_dtypes_and_shapes(tfs):
    pixels = np.random.default_rng(0).normal(size=(3, 224, 224, 3)).astype(np.float32)
    out = tfs.predict({"pixels": pixels}, signature_name="pixels")
    assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == (3, 5)
    assert out["class_ids"].dtype == np.int32 and out["class_ids"].shape == (3, 5)
    assert out["labels"].dtype == object and isinstance(out["labels"][0, 0], bytes)
    assert np.all(np.diff(out["probabilities"], axis=1) <= 0)


@pytest.mark.parametrize("columnar", [False, True])
def test_rest_row_and_columnar_forms_agree(tf_rest, columnar):
    pixels = np.zeros((2, 224, 224, 3), np.float32)
    baseline = tf_rest.predict(pixels, signature_name="pixels")
    out = tf_rest.predict({"pixels": pixels}, signature_name="pixels", columnar=columnar)
    np.testing.assert_array_equal(out["class_ids"], baseline["class_ids"])
    np.testing.assert_allclose(out["probabilities"], baseline["probabilities"], rtol=1e-6)


def test_rest_and_grpc_agree(tfserving_double, sample_images):
    data = np.array([sample_images["cat"].read_bytes()], dtype=object)
    with TFServingClient(tfserving_double.rest_url, model=MODEL) as rest, \
            TFServingGrpcClient(tfserving_double.grpc_target, model=MODEL) as grpc_client:
        key = next(iter(rest.signature().inputs))
        a, b = rest.predict({key: data}), grpc_client.predict({key: data})
    np.testing.assert_array_equal(a["class_ids"], b["class_ids"])
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], rtol=1e-6)
    np.testing.assert_array_equal(a["labels"], b["labels"])


def test_a_bad_instance_fails_alone(tfs, sample_images):
    """The SavedModel answers a bad image with its `error` output; the neighbours are answered."""
    batch = [sample_images["cat"], b"not an image", sample_images["coffee"]]
    with pytest.raises(errors.InstanceError) as info:
        tfs.classify_images(batch, topk=1)
    error = info.value
    assert error.index == 1 and error.message and error.status_code == 400
    assert error.results[0][0].class_index in EXPECTED["cat"]
    assert error.results[1] is error
    assert error.results[2][0].class_index in EXPECTED["coffee"]
    rows = tfs.classify_images(batch, topk=1, on_error="return")
    assert isinstance(rows[1], errors.InstanceError) and rows[1].message == error.message
    assert [r[0].class_index for r in (rows[0], rows[2])] == [
        r[0].class_index for r in (error.results[0], error.results[2])]
    with pytest.raises(errors.InstanceError):
        tfs.classify_image(b"not an image")


ZEROS = np.zeros((1, 224, 224, 3), np.float32)
BAD_CALLS = {
    # name: (call, error type, HTTP status, gRPC code)
    "unknown input": (lambda c: c.predict({"nope": ZEROS}, signature_name="pixels"),
                      errors.InvalidInput, 400, "INVALID_ARGUMENT"),
    "unknown signature": (lambda c: c.predict({"pixels": ZEROS}, signature_name="nope"),
                          errors.InvalidInput, 400, "INVALID_ARGUMENT"),
    "unknown model": (lambda c: c.status("no_such_model"), errors.NotFound, 404, "NOT_FOUND"),
    "unknown version": (lambda c: c.status(version=42), errors.NotFound, 404, "NOT_FOUND"),
    "unknown label": (lambda c: c.status(label="canary"), errors.InvalidInput, 400,
                      "INVALID_ARGUMENT"),
    "predict unknown model": (lambda c: c.predict(ZEROS, signature_name="pixels",
                                                  model="no_such_model"),
                              errors.NotFound, 404, "NOT_FOUND"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_errors_are_typed_per_protocol_and_not_retried(tfs, case):
    call, cls, status, code = BAD_CALLS[case]
    with pytest.raises(cls) as info:
        call(tfs)
    assert info.value.status_code == status and info.value.attempts == 1
    assert info.value.grpc_code == (None if isinstance(tfs, TFServingClient) else code)
    assert info.value.message


@pytest.mark.parametrize("case", ["unknown model", "unknown version", "unknown label"])
def test_rest_error_message_is_the_servers_own(tf_rest, case):
    call = BAD_CALLS[case][0]
    with pytest.raises(errors.ServingError) as info:
        call(tf_rest)
    raw = urllib3.request("GET", info.value.url, retries=False)
    assert raw.status == info.value.status_code
    assert info.value.message == json.loads(raw.data)["error"]


def test_row_form_needs_one_batch_size(tf_rest):
    with pytest.raises(ValueError, match="columnar"):
        tf_rest.predict({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))})
