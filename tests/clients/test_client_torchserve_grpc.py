"""TorchServeGrpcClient against the session's real TorchServe (gRPC, token auth on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients import TorchServeGrpcClient, errors
from tests.clients.conftest import EXPECTED, MODEL, ROOT


@pytest.mark.parametrize("photo", sorted(EXPECTED))
def test_predictions(ts_grpc, sample_images, photo):
    predictions = ts_grpc.classify_image(sample_images[photo], topk=3)
    assert len(predictions) == 3
    assert predictions[0].class_index in EXPECTED[photo]


def test_rest_and_grpc_agree(ts_grpc, ts_rest, sample_images):
    data = sample_images["cat"].read_bytes()
    rest = ts_rest.predict(data, params={"topk": 5})
    grpc_answer = ts_grpc.predict(data, params={"topk": 5}, version="1.0")
    assert [p["class_index"] for p in rest] == [p["class_index"] for p in grpc_answer]
    assert [p["probability"] for p in rest] == pytest.approx(
        [p["probability"] for p in grpc_answer], abs=1e-5)


def test_one_channel_is_shared_by_threads(ts_grpc, sample_images):
    from concurrent.futures import ThreadPoolExecutor

    data = sample_images["cat"].read_bytes()
    with ThreadPoolExecutor(8) as pool:
        tops = list(pool.map(lambda _: ts_grpc.classify_image(data, topk=1)[0].class_index,
                             range(16)))
    assert set(tops) <= EXPECTED["cat"]


def test_ping(ts_grpc):
    assert ts_grpc.ping() == "Healthy"


def test_stream_predictions(ts_grpc, sample_images):
    # TorchServe 0.12 kills the worker here unless the handler sets ts_stream_next on gRPC
    # requests (handlers/base.py); the REST tests check that REST answers stay unaffected.
    chunks = list(ts_grpc.stream_predict(sample_images["coffee"].read_bytes(),
                                         params={"topk": 2}))
    assert chunks and chunks[-1][0]["class_index"] in EXPECTED["coffee"]


def test_bad_input_is_invalid_input(ts_grpc):
    # TorchServe's gRPC frontend returns the handler's error JSON with status OK; the client
    # raises it exactly like the REST 400.
    with pytest.raises(errors.InvalidInput) as info:
        ts_grpc.predict(b"not an image")
    assert info.value.status_code == 400 and "image" in info.value.message.lower()
    with pytest.raises(errors.InvalidInput, match="topk"):
        ts_grpc.classify_image(Path(ROOT / "samples" / "cat.jpg"), topk=0)


def test_unknown_model_and_version_are_not_found(ts_grpc, sample_images):
    with pytest.raises(errors.NotFound) as info:
        ts_grpc.classify_image(sample_images["cat"], model="no_such_model")
    assert "no_such_model" in info.value.message and info.value.grpc_code == "INTERNAL"
    assert info.value.attempts == 1
    with pytest.raises(errors.NotFound):
        ts_grpc.classify_image(sample_images["cat"], version="9.9")


def test_wrong_token_is_unauthorized(torchserve, sample_images):
    with TorchServeGrpcClient(f"127.0.0.1:{torchserve.ports.grpc_inference}",
                              f"127.0.0.1:{torchserve.ports.grpc_management}",
                              token="wrong", model=MODEL) as client:
        with pytest.raises(errors.Unauthorized) as info:
            client.classify_image(sample_images["cat"])
        assert info.value.attempts == 1  # never retried
        with pytest.raises(errors.Unauthorized) as info:
            client.list_models()
        assert info.value.attempts == 1


def test_list_models_sends_a_real_limit(ts_grpc, models):
    served = sorted(m.name for m in models.values() if "torchserve" in m.servers)
    assert len(served) > 1  # so that page_size=1 has pages to follow
    assert [m["modelName"] for m in ts_grpc.list_models()] == served
    assert [m["modelName"] for m in ts_grpc.list_models(page_size=1)] == served
    with pytest.raises(ValueError):
        ts_grpc.list_models(page_size=0)


def test_describe_scale_set_default_health(ts_grpc):
    (entry,) = ts_grpc.describe_model()
    assert entry["modelName"] == MODEL and entry["workers"]
    assert "Workers scaled" in ts_grpc.scale_workers(min_workers=1, max_workers=1)
    assert "successfully updated" in ts_grpc.set_default(MODEL, "1.0")
    assert ts_grpc.health().ready
    assert not ts_grpc.health("no_such_model").ready


def test_register_is_refused_when_the_model_api_is_off(ts_grpc):
    with pytest.raises(errors.InvalidInput, match="Model API disabled") as info:
        ts_grpc.register_model(f"{MODEL}.mar")
    assert info.value.attempts == 1 and info.value.grpc_code == "PERMISSION_DENIED"
    with pytest.raises(errors.InvalidInput):
        ts_grpc.unregister_model(MODEL)


def test_stubs_are_the_generated_ones(grpc_stubs, tmp_path):
    """The shipped stubs are exactly what build_protos makes from the installed jar."""
    from clients import build_protos

    fresh = build_protos.generate(out=tmp_path, force=True)
    for path in fresh:
        assert path.read_bytes() == (build_protos.GENERATED / path.name).read_bytes(), path.name
