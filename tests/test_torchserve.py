"""The real TorchServe (token auth on, free loopback ports) serving the catalog's models."""

from __future__ import annotations

import base64
import concurrent.futures
import json

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests import fuzz, images

MODEL = "efficientnet_lite0"


def predict(server, data: bytes, headers: dict | None = None, **kwargs) -> requests.Response:
    return requests.post(f"{server.inference_url}/predictions/{MODEL}", data=data,
                         headers={**server.auth(), "Content-Type": "application/octet-stream",
                                  **(headers or {})}, timeout=60, **kwargs)


def metric_samples(server, name: str) -> list:
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name]


def assert_client_error(resp: requests.Response, status: int, word: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["code"] == status and word in body["message"], body


def test_cat(torchserve, sample_images):
    resp = predict(torchserve, sample_images["cat"].read_bytes())
    assert resp.status_code == 200, resp.text
    top5 = resp.json()
    assert len(top5) == 5
    assert top5[0]["class_index"] in images.CAT_CLASSES
    assert {"class_index", "label", "probability"} == set(top5[0])


def test_coffee_is_espresso(torchserve, sample_images):
    top5 = predict(torchserve, sample_images["coffee"].read_bytes()).json()
    assert top5[0]["class_index"] == images.ESPRESSO
    assert top5[0]["label"] == "espresso"


def test_put_like_curl_T_with_topk_header(torchserve, sample_images):
    resp = requests.put(f"{torchserve.inference_url}/predictions/{MODEL}",
                        data=sample_images["coffee"].read_bytes(),
                        headers={**torchserve.auth(), "X-TopK": "2"}, timeout=60)
    assert resp.status_code == 200 and len(resp.json()) == 2


def test_versioned_url_multipart_and_json(torchserve, sample_images):
    coffee = sample_images["coffee"].read_bytes()
    url = f"{torchserve.inference_url}/predictions/{MODEL}/1.0"
    multipart = requests.post(url, files={"data": ("c.jpg", coffee, "image/jpeg")},
                              data={"topk": "3"}, headers=torchserve.auth(), timeout=60)
    assert multipart.status_code == 200 and len(multipart.json()) == 3
    doc = {"instances": [{"b64": base64.b64encode(coffee).decode()}] * 2}
    batch = requests.post(url, json=doc, headers=torchserve.auth(), timeout=60)
    assert batch.status_code == 200, batch.text
    assert [p[0]["class_index"] for p in batch.json()["predictions"]] == [images.ESPRESSO] * 2


def test_query_topk_on_the_predict_route(torchserve, sample_images):
    # TorchServe forwards the query string to handlers only on /<model>/predict.
    resp = requests.post(f"{torchserve.inference_url}/{MODEL}/predict?topk=1",
                         data=sample_images["coffee"].read_bytes(),
                         headers={**torchserve.auth(), "Content-Type": "image/jpeg"}, timeout=60)
    assert resp.status_code == 200 and len(resp.json()) == 1
    bad = requests.post(f"{torchserve.inference_url}/{MODEL}/predict?topk=5000",
                        data=sample_images["coffee"].read_bytes(),
                        headers={**torchserve.auth(), "Content-Type": "image/jpeg"}, timeout=60)
    assert_client_error(bad, 400, "topk")


def test_concurrent_requests_are_batched(torchserve, sample_images):
    before = {s.labels.get("le"): s.value for s in metric_samples(torchserve, "BatchSize_bucket")
              if s.labels.get("ModelName") == MODEL}
    count_before = sum(s.value for s in metric_samples(torchserve, "BatchSize_count"))
    photos = [sample_images["cat"].read_bytes(), sample_images["coffee"].read_bytes()] * 4
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda data: predict(torchserve, data), photos))
    for data, resp in zip(photos, answers):
        assert resp.status_code == 200, resp.text
        expected = images.CAT_CLASSES if data == photos[0] else {images.ESPRESSO}
        assert resp.json()[0]["class_index"] in expected
    after = {s.labels.get("le"): s.value for s in metric_samples(torchserve, "BatchSize_bucket")
             if s.labels.get("ModelName") == MODEL}
    count_after = sum(s.value for s in metric_samples(torchserve, "BatchSize_count"))
    batches = count_after - count_before
    single = after.get("1.0", 0) - before.get("1.0", 0)
    assert 1 <= batches < 8, "8 concurrent requests must share batches"
    assert batches - single >= 1, "at least one batch larger than 1"


BAD_INPUTS = {
    "empty body": (b"", 400, "empty"),
    "random bytes": (bytes(range(256)) * 8, 400, "cannot identify an image"),
    "text": (b"a cat, trust me", 400, "cannot identify an image"),
    "invalid base64": (json.dumps({"data": "@@@not base64@@@"}).encode(), 400, "base64"),
    "bomb": (None, 413, "limit of"),
    "truncated jpeg": (None, 400, "truncated"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_4xx_and_server_keeps_answering(torchserve, sample_images, case):
    data, status, word = BAD_INPUTS[case]
    if case == "bomb":
        data = images.png_bomb()
    elif case == "truncated jpeg":
        cat = sample_images["cat"].read_bytes()
        data = cat[: len(cat) // 3]
    assert_client_error(predict(torchserve, data), status, word)
    good = predict(torchserve, sample_images["coffee"].read_bytes())
    assert good.status_code == 200 and good.json()[0]["class_index"] == images.ESPRESSO


def test_text_content_type(torchserve):
    resp = requests.post(f"{torchserve.inference_url}/predictions/{MODEL}", data="hello",
                         headers={**torchserve.auth(), "Content-Type": "text/plain"}, timeout=60)
    assert_client_error(resp, 400, "text")


def test_request_errors_are_counted(torchserve):
    def errors():
        return sum(s.value for s in metric_samples(torchserve, "RequestErrors_total")
                   + metric_samples(torchserve, "RequestErrors"))

    before = errors()
    predict(torchserve, b"not an image")
    assert errors() == before + 1


def assert_rejected(resp: requests.Response) -> None:
    # TorchServe 0.12 answers 400 (no token) or 401 (wrong token), type InvalidKeyException.
    assert resp.status_code in (400, 401), resp.text
    assert resp.json()["type"] == "InvalidKeyException"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}])
def test_token_required(torchserve, sample_images, headers):
    resp = requests.post(f"{torchserve.inference_url}/predictions/{MODEL}",
                         data=sample_images["cat"].read_bytes(), headers=headers, timeout=30)
    assert_rejected(resp)
    assert_rejected(requests.get(f"{torchserve.management_url}/models", headers=headers,
                                 timeout=30))


def test_inference_key_is_not_a_management_key(torchserve):
    assert_rejected(requests.get(f"{torchserve.management_url}/models",
                                 headers=torchserve.auth(), timeout=30))


def test_model_api_is_off(torchserve):
    resp = requests.post(f"{torchserve.management_url}/models?url={MODEL}.mar",
                         headers=torchserve.auth("management"), timeout=30)
    assert resp.status_code in (403, 405), resp.text


def test_management_shows_catalog_settings(torchserve, models):
    resp = requests.get(f"{torchserve.management_url}/models/{MODEL}",
                        headers=torchserve.auth("management"), timeout=30)
    (described,) = resp.json()
    settings = models[MODEL].torchserve
    assert described["batchSize"] == settings.batch_size
    assert described["maxBatchDelay"] == settings.max_batch_delay_ms
    assert described["modelVersion"] == models[MODEL].version
    assert all(w["status"] == "READY" for w in described["workers"])


def test_metrics(torchserve, sample_images):
    predict(torchserve, sample_images["cat"].read_bytes())
    samples = metric_samples(torchserve, "ts_inference_requests_total")
    assert any(s.labels["model_name"] == MODEL and s.value >= 1 for s in samples)


def test_binds_loopback_only(torchserve):
    config = (torchserve.run_dir / "config.properties").read_text()
    addresses = [line for line in config.splitlines() if "_address=" in line]
    assert len(addresses) == 5 and all("127.0.0.1" in line for line in addresses)
    assert "disable_token_authorization=false" in config
    assert "enable_model_api=false" in config


# -- a bad request never fails its batch nor the worker ------------------------------------------
def worker_pids(server, model: str = MODEL) -> list[int]:
    resp = requests.get(f"{server.management_url}/models/{model}",
                        headers=server.auth("management"), timeout=30)
    resp.raise_for_status()
    workers = [w for entry in resp.json() for w in entry["workers"]]
    assert workers and all(w["status"] == "READY" for w in workers), workers
    return sorted(int(w["pid"]) for w in workers)


def send_together(calls) -> list[requests.Response]:
    """Send the calls at the same moment (a barrier), so TorchServe batches them."""
    import threading

    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.mark.parametrize("case", list(fuzz.poison_bodies(b"")))
def test_poison_request_fails_alone_and_the_worker_survives(torchserve, sample_images, case):
    pids = worker_pids(torchserve)
    cat, coffee = sample_images["cat"].read_bytes(), sample_images["coffee"].read_bytes()
    body = fuzz.poison_bodies(coffee)[case]
    url = f"{torchserve.inference_url}/predictions/{MODEL}"
    json_headers = {**torchserve.auth(), "Content-Type": "application/json"}
    goods = [cat, coffee] * 3
    calls = [lambda data=data: predict(torchserve, data) for data in goods[:3]]
    calls.append(lambda: requests.post(url, data=body, headers=json_headers, timeout=60))
    calls += [lambda data=data: predict(torchserve, data) for data in goods[3:]]
    answers = send_together(calls)
    poison = answers.pop(3)
    assert_client_error(poison, 400, "")
    assert poison.reason.isascii() and len(poison.reason) < 40
    assert len(poison.json()["message"]) < 300
    for data, resp in zip(goods, answers):
        assert resp.status_code == 200, resp.text
        expected = images.CAT_CLASSES if data == cat else {images.ESPRESSO}
        assert resp.json()[0]["class_index"] in expected
    assert worker_pids(torchserve) == pids


def _http_call(server, model: str, row: dict):
    """A fuzzed handler row as an HTTP request: its body with a matching Content-Type,
    multipart fields as multipart, parameters in the query string of /<model>/predict."""
    from urllib.parse import urlencode

    headers = dict(server.auth())
    params = {k: bytes(v).decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else v
              for k, v in row.items() if k not in ("body", "data", "file")}
    url = f"{server.inference_url}/{model}/predict"
    if params:
        url += "?" + urlencode(params)
    if "data" in row or "file" in row:
        name = "data" if "data" in row else "file"
        files = {name: ("input", bytes(row[name]), "application/octet-stream")}
        return lambda: requests.post(url, files=files, headers=headers, timeout=60)
    body = row.get("body", b"")
    if isinstance(body, (dict, list)) or body is None or isinstance(body, (int, float)):
        data, kind = json.dumps(body).encode(), "application/json"
    elif isinstance(body, str):
        data, kind = body.encode("utf-8", "surrogatepass"), "text/plain; charset=utf-8"
    else:
        data, kind = bytes(body), "application/octet-stream"
    headers["Content-Type"] = kind
    return lambda: requests.post(url, data=data, headers=headers, timeout=60)


def test_fuzzed_batches_against_the_server(torchserve, sample_images):
    import random

    from PIL import Image

    pids = worker_pids(torchserve)
    rng = random.Random(8)
    small = images.encode(Image.open(sample_images["coffee"]).convert("RGB").resize((96, 64)),
                          "JPEG")
    coffee = sample_images["coffee"].read_bytes()
    for _ in range(3):
        rows = [fuzz.image_request(rng, small) for _ in range(6)]
        calls = [lambda: predict(torchserve, coffee)]
        calls += [_http_call(torchserve, MODEL, row) for row in rows]
        calls += [lambda: predict(torchserve, coffee)]
        answers = send_together(calls)
        for resp in (answers[0], answers[-1]):
            assert resp.status_code == 200 and resp.json()[0]["class_index"] == images.ESPRESSO
        for row, resp in zip(rows, answers[1:-1]):
            assert resp.status_code == 200 or 400 <= resp.status_code < 500, (row, resp.text)
            assert resp.headers["content-type"].startswith("application/json")
            resp.json()
    assert worker_pids(torchserve) == pids
