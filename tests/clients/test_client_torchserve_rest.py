"""TorchServeClient (REST) against the session's real TorchServe, token auth on."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from clients import TorchServeClient, endpoints, errors
from clients.transport import RetryPolicy
from tests.clients.conftest import EXPECTED, MODEL


@pytest.mark.parametrize("form", ["raw", "json"])
@pytest.mark.parametrize("photo", sorted(EXPECTED))
def test_predict_sample_photos_in_both_forms(ts_rest, sample_images, photo, form):
    data = sample_images[photo].read_bytes()
    body = data if form == "raw" else {"data": base64.b64encode(data).decode()}
    answer = ts_rest.predict(body, params={"topk": 3})
    assert len(answer) == 3
    assert answer[0]["class_index"] in EXPECTED[photo]
    probabilities = [p["probability"] for p in answer]
    assert probabilities == sorted(probabilities, reverse=True)


def test_classify_image_typed_with_version_and_default_topk(ts_rest, sample_images):
    predictions = ts_rest.classify_image(sample_images["coffee"], version="1.0")
    assert len(predictions) == 5  # the catalog's default topk
    assert predictions[0].class_index in EXPECTED["coffee"]
    assert predictions[0].label and 0 < predictions[0].probability <= 1


def test_inputs_bytes_file_pil_and_numpy_agree(ts_rest, sample_images):
    path = sample_images["cat"]
    pixels = np.asarray(Image.open(path).convert("RGB"))
    with open(path, "rb") as fh:
        from_file = ts_rest.classify_image(fh, topk=1)[0].class_index
    answers = {
        "path": ts_rest.classify_image(str(path), topk=1)[0].class_index,
        "bytes": ts_rest.classify_image(path.read_bytes(), topk=1)[0].class_index,
        "file": from_file,
        "pil": ts_rest.classify_image(Image.open(path), topk=1)[0].class_index,
        "numpy": ts_rest.classify_image(pixels, topk=1)[0].class_index,
    }
    assert set(answers.values()) <= EXPECTED["cat"], answers


def test_batch_of_instances(ts_rest, sample_images):
    rows = ts_rest.classify_images([sample_images["cat"], sample_images["coffee"]], topk=2)
    assert [len(r) for r in rows] == [2, 2]
    assert rows[0][0].class_index in EXPECTED["cat"]
    assert rows[1][0].class_index in EXPECTED["coffee"]


def test_bad_image_is_invalid_input_with_the_servers_message(ts_rest):
    with pytest.raises(errors.InvalidInput) as info:
        ts_rest.predict(b"definitely not an image")
    assert info.value.status_code == 400
    assert "image" in info.value.message.lower()
    assert info.value.attempts == 1  # a 4xx is never retried


@pytest.mark.parametrize("topk", [0, 1001])
def test_out_of_range_topk_is_invalid_input(ts_rest, sample_images, topk):
    with pytest.raises(errors.InvalidInput, match="topk"):
        ts_rest.classify_image(sample_images["cat"], topk=topk)


def test_unknown_model_and_version_are_not_found(ts_rest, sample_images):
    with pytest.raises(errors.NotFound) as info:
        ts_rest.classify_image(sample_images["cat"], model="no_such_model")
    assert info.value.status_code == 404
    assert "no_such_model" in info.value.message
    assert info.value.error_type == "ModelNotFoundException"
    with pytest.raises(errors.NotFound, match="9.9"):
        ts_rest.classify_image(sample_images["cat"], version="9.9")


def test_wrong_or_missing_token_is_unauthorized_and_not_retried(torchserve, sample_images,
                                                                 monkeypatch, tmp_path):
    # Outside any repo with a run directory, and no key in the environment: no key at all.
    monkeypatch.chdir(tmp_path)
    for name in ("TORCHSERVE_TOKEN", "TORCHSERVE_INFERENCE_TOKEN", "TORCHSERVE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    for token in ("wrong-token", None):
        with TorchServeClient(torchserve.inference_url, token=token) as client:
            with pytest.raises(errors.Unauthorized, match="Token Authorization failed") as info:
                client.classify_image(sample_images["cat"])
            assert info.value.attempts == 1


def test_management_key_is_not_the_inference_key(torchserve, sample_images):
    keys = torchserve.keys()
    with TorchServeClient(torchserve.inference_url, torchserve.management_url,
                          token=keys["management"]) as client:
        assert client.list_models()
        with pytest.raises(errors.Unauthorized):
            client.classify_image(sample_images["cat"])


def test_environment_configures_everything(ts_env, monkeypatch, sample_images):
    for name, value in ts_env.items():
        monkeypatch.setenv(name, value)
    with TorchServeClient(model=MODEL) as client:
        assert client.ping() == "Healthy"
        assert client.classify_image(sample_images["cat"], topk=1)[0].class_index in EXPECTED["cat"]
        assert client.health().ready


def test_list_and_describe(ts_rest):
    assert MODEL in [m["modelName"] for m in ts_rest.list_models()]
    assert [m["modelName"] for m in ts_rest.list_models(page_size=1)] == [
        m["modelName"] for m in ts_rest.list_models()]  # pagination follows nextPageToken
    (entry,) = ts_rest.describe_model()
    assert entry["modelVersion"] == "1.0" and entry["workers"]


def test_scale_workers_and_set_default(ts_rest):
    assert "Workers scaled" in ts_rest.scale_workers(min_workers=1, max_workers=1)
    assert "successfully updated" in ts_rest.set_default(MODEL, "1.0")
    with pytest.raises(errors.NotFound):
        ts_rest.set_default(MODEL, "7.7")


def test_register_and_unregister_need_the_model_api(ts_rest):
    # The bundle runs with enable_model_api=false: TorchServe refuses, and the client does not
    # retry these non-idempotent calls.
    with pytest.raises(errors.InvalidInput) as info:
        ts_rest.register_model(f"{MODEL}.mar")
    assert info.value.attempts == 1 and info.value.status_code == 405
    with pytest.raises(errors.InvalidInput):
        ts_rest.unregister_model(MODEL)


def test_health_follows_the_one_readiness_rule(ts_rest):
    for entry in ts_rest.list_models():
        name = entry["modelName"]
        describe = ts_rest.describe_model(name)
        health = ts_rest.health(name)
        assert health.ready and endpoints.is_ready(describe), (name, describe)
        assert health.workers == {"READY": len(describe[0]["workers"])}
    assert ts_rest.health().version == "1.0"
    missing = ts_rest.health("no_such_model")
    assert not missing.ready and "no_such_model" in missing.reason


def test_scaled_to_zero_workers_is_not_ready(ts_rest):
    # A registered model without workers: /ping still says Healthy, health() does not.
    try:
        ts_rest.scale_workers(min_workers=0, max_workers=0)
        health = ts_rest.health()
        assert not health.ready and health.reason == "no workers"
        assert ts_rest.ping() == "Healthy"
    finally:
        ts_rest.scale_workers(min_workers=1, max_workers=1)
    assert ts_rest.health().ready


def test_metrics_are_parsed_and_count_requests(ts_rest, sample_images):
    def served() -> float:
        family = ts_rest.metrics(["ts_inference_requests_total"]).get(
            "ts_inference_requests")
        return sum(s.value for s in family.samples) if family else 0.0

    before = served()
    ts_rest.classify_image(sample_images["cat"])
    assert served() >= before + 1
    families = ts_rest.metrics()
    assert "ts_inference_latency_microseconds" in families


def test_one_client_is_shared_by_threads(ts_rest, sample_images):
    data = sample_images["coffee"].read_bytes()
    with ThreadPoolExecutor(8) as pool:
        tops = list(pool.map(lambda _: ts_rest.classify_image(data, topk=1)[0].class_index,
                             range(16)))
    assert set(tops) <= EXPECTED["coffee"]


def test_context_manager_closes_the_pool(torchserve):
    with TorchServeClient(torchserve.inference_url, key_file=torchserve.key_file,
                          retry=RetryPolicy.none()) as client:
        assert client.ping() == "Healthy"
    assert client._http._pool.pools is not None and len(client._http._pool.pools) == 0


def test_predict_needs_a_model_name_and_a_body(torchserve):
    with TorchServeClient(torchserve.inference_url, key_file=torchserve.key_file) as client:
        with pytest.raises(ValueError, match="no model name"):
            client.predict(b"x")
        with pytest.raises(TypeError, match="embed"):
            client.predict("some text", MODEL)
