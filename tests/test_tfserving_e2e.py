"""End to end against a real TF Serving (opt-in): REST and gRPC predict on both signatures, model
status, metadata, version labels, bad bytes, Prometheus metrics.

Runs when TFSERVING_REST_URL (e.g. http://127.0.0.1:8501) and/or TFSERVING_GRPC_TARGET
(e.g. 127.0.0.1:8500) point at a TF Serving that serves model_store/tf with
config/tfserving/models.config, for instance:

    make archive
    docker compose -f docker/compose.yaml --profile cpu up -d tfserving
    TFSERVING_REST_URL=http://127.0.0.1:8501 TFSERVING_GRPC_TARGET=127.0.0.1:8500 \\
        .venv/bin/python -m pytest tests/test_tfserving_e2e.py -ra

Skipped, with the reason in the summary, when neither variable is set.
"""

from __future__ import annotations

import base64
import os

import pytest

REST_URL = os.environ.get("TFSERVING_REST_URL", "").rstrip("/")
GRPC_TARGET = os.environ.get("TFSERVING_GRPC_TARGET", "")
if not (REST_URL or GRPC_TARGET):
    pytest.skip(
        "TF Serving e2e: set TFSERVING_REST_URL (e.g. http://127.0.0.1:8501) and/or "
        "TFSERVING_GRPC_TARGET (e.g. 127.0.0.1:8500) to test a running TF Serving "
        "(README: run it with docker compose)",
        allow_module_level=True,
    )

import numpy as np  # noqa: E402
import requests  # noqa: E402

from scripts import catalog  # noqa: E402
from scripts.build import export_tf, samples, tf_configs

pytestmark = pytest.mark.e2e_tfserving
MODELS = catalog.for_server("tfserving")
TIMEOUT = 60
needs_rest = pytest.mark.skipif(not REST_URL, reason="TFSERVING_REST_URL is not set")
needs_grpc = pytest.mark.skipif(not GRPC_TARGET, reason="TFSERVING_GRPC_TARGET is not set")


@pytest.fixture(scope="module", params=MODELS, ids=[m.name for m in MODELS])
def model(request) -> catalog.Model:
    return request.param


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in samples.write_all().items()
            if name in samples.PHOTOS}


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def _check_answer(model, class_ids, labels, probabilities, photo: str) -> None:
    k = model.topk
    assert len(class_ids) == len(labels) == len(probabilities) == k
    names = catalog.labels(model)
    assert list(labels) == [names[i] for i in class_ids]
    assert all(a >= b for a, b in zip(probabilities, probabilities[1:]))
    assert class_ids[0] in samples.PHOTOS[photo][1]


def _pixels(model, data: bytes) -> np.ndarray:
    """NHWC pixels for the `pixels` signature, preprocessed by the torch reference of the input
    contract (the TorchServe handler's arithmetic)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = np.asarray(image.convert("RGB"))
    return export_tf.torch_pixels(rgb, model).permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------- REST


@needs_rest
def test_rest_status_every_served_version_available(model):
    reply = requests.get(f"{REST_URL}/v1/models/{model.name}", timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    states = {int(v["version"]): v["state"] for v in reply.json()["model_version_status"]}
    for version in tf_configs.served_versions(model):
        assert states.get(version) == "AVAILABLE", states


@needs_rest
def test_rest_metadata_signatures(model):
    reply = requests.get(f"{REST_URL}/v1/models/{model.name}/metadata", timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    defs = reply.json()["metadata"]["signature_def"]["signature_def"]
    images, pixels = defs[export_tf.SIGNATURE_IMAGES], defs[export_tf.SIGNATURE_PIXELS]
    assert images["inputs"]["images"]["dtype"] == "DT_STRING"
    assert pixels["inputs"]["pixels"]["dtype"] == "DT_FLOAT"
    dims = [int(d["size"]) for d in pixels["inputs"]["pixels"]["tensor_shape"]["dim"]]
    size = int(model.input["size"])
    assert dims == [-1, size, size, 3]
    for signature in (images, pixels):
        outputs = signature["outputs"]
        assert set(outputs) == set(export_tf.OUTPUTS)
        assert outputs["class_ids"]["dtype"] == "DT_INT32"
        assert outputs["labels"]["dtype"] == "DT_STRING"
        assert outputs["probabilities"]["dtype"] == "DT_FLOAT"


@needs_rest
def test_rest_predict_row_instances(model, photos):
    names = sorted(photos)
    body = {"instances": [_b64(photos[n]) for n in names]}
    reply = requests.post(f"{REST_URL}/v1/models/{model.name}:predict", json=body,
                          timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert len(predictions) == len(names)
    for name, row in zip(names, predictions):
        _check_answer(model, row["class_ids"], row["labels"], row["probabilities"], name)


@needs_rest
def test_rest_predict_columnar_inputs(model, photos):
    body = {"signature_name": "serving_default", "inputs": {"images": [_b64(photos["coffee"])]}}
    reply = requests.post(f"{REST_URL}/v1/models/{model.name}:predict", json=body,
                          timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    out = reply.json()["outputs"]
    _check_answer(model, out["class_ids"][0], out["labels"][0], out["probabilities"][0],
                  "coffee")


@needs_rest
def test_rest_predict_by_label_and_version(model, photos):
    labels = tf_configs.version_labels(model)
    paths = [f"versions/{v}" for v in tf_configs.served_versions(model)]
    paths += [f"labels/{label}" for label in sorted(labels)]
    for path in paths:
        reply = requests.post(f"{REST_URL}/v1/models/{model.name}/{path}:predict",
                              json={"instances": [_b64(photos["cat"])]}, timeout=TIMEOUT)
        assert reply.status_code == 200, f"{path}: {reply.text}"
    reply = requests.post(f"{REST_URL}/v1/models/{model.name}/labels/no-such-label:predict",
                          json={"instances": [_b64(photos["cat"])]}, timeout=TIMEOUT)
    assert reply.status_code in (400, 404), reply.text


@needs_rest
def test_rest_pixels_signature(model, photos):
    body = {"signature_name": export_tf.SIGNATURE_PIXELS,
            "instances": _pixels(model, photos["cat"]).tolist()}
    reply = requests.post(f"{REST_URL}/v1/models/{model.name}:predict", json=body,
                          timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    (row,) = reply.json()["predictions"]
    _check_answer(model, row["class_ids"], row["labels"], row["probabilities"], "cat")


@needs_rest
def test_rest_bad_bytes_is_a_400_with_a_clear_message(model, photos):
    body = {"instances": [_b64(photos["cat"]), _b64(b"this is not an image")]}
    reply = requests.post(f"{REST_URL}/v1/models/{model.name}:predict", json=body,
                          timeout=TIMEOUT)
    assert reply.status_code == 400, reply.text
    assert f"images[1] is not a {export_tf.FORMATS} image" in reply.json()["error"]


@needs_rest
def test_rest_prometheus_metrics():
    reply = requests.get(f"{REST_URL}{tf_configs.PROMETHEUS_PATH}", timeout=TIMEOUT)
    assert reply.status_code == 200
    assert ":tensorflow:serving:" in reply.text


# --------------------------------------------------------------------------- gRPC


@pytest.fixture(scope="module")
def channel():
    import grpc

    with grpc.insecure_channel(GRPC_TARGET) as chan:
        grpc.channel_ready_future(chan).result(timeout=TIMEOUT)
        yield chan


def _predict_request(model, signature: str, key: str, value, label: str | None = None):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model.name
    request.model_spec.signature_name = signature
    if label:
        request.model_spec.version_label = label
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def _outputs(response) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return {key: tf.make_ndarray(t) for key, t in response.outputs.items()}


@needs_grpc
def test_grpc_predict_images(model, photos, channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    names = sorted(photos)
    request = _predict_request(model, "serving_default", "images",
                               np.array([photos[n] for n in names], dtype=object))
    out = _outputs(stub.Predict(request, timeout=TIMEOUT))
    for i, name in enumerate(names):
        labels = [s.decode() for s in out["labels"][i]]
        _check_answer(model, list(out["class_ids"][i]), labels, list(out["probabilities"][i]),
                      name)


@needs_grpc
def test_grpc_predict_pixels_and_labels(model, photos, channel):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for label in [None, *sorted(tf_configs.version_labels(model))]:
        request = _predict_request(model, export_tf.SIGNATURE_PIXELS, "pixels",
                                   _pixels(model, photos["coffee"]), label)
        out = _outputs(stub.Predict(request, timeout=TIMEOUT))
        _check_answer(model, list(out["class_ids"][0]), [s.decode() for s in out["labels"][0]],
                      list(out["probabilities"][0]), "coffee")


@needs_grpc
def test_grpc_bad_bytes_is_invalid_argument(model, photos, channel):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = _predict_request(model, "serving_default", "images",
                               np.array([b"not an image", photos["cat"]], dtype=object))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"images[0] is not a {export_tf.FORMATS} image" in err.value.details()


@needs_grpc
def test_grpc_status_and_metadata(model, channel):
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        prediction_service_pb2_grpc,
    )

    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": model.name}),
        timeout=TIMEOUT,
    )
    available = {s.version for s in status.model_version_status
                 if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE}
    assert set(tf_configs.served_versions(model)) <= available

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = model.name
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(
        request, timeout=TIMEOUT
    )
    defs = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(defs)
    assert {export_tf.SIGNATURE_IMAGES, export_tf.SIGNATURE_PIXELS} <= set(defs.signature_def)
    assert set(defs.signature_def["serving_default"].outputs) == set(export_tf.OUTPUTS)
