"""minilm_embeddings and face_detector served by the real TorchServe (token auth on, free
loopback ports), called the way docs/models.md shows."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import requests

from tests import images
from tests.test_torchserve import send_together, worker_pids

FOOD = "A man is eating food."
BREAD = "A man is eating a piece of bread."


def post(server, model: str, **kwargs) -> requests.Response:
    headers = {**server.auth(), **kwargs.pop("headers", {})}
    return requests.post(f"{server.inference_url}/predictions/{model}", headers=headers,
                         timeout=60, **kwargs)


def test_every_catalog_model_is_ready(torchserve, models):
    served = [m.name for m in models.values() if "torchserve" in m.servers]
    assert {"efficientnet_lite0", "minilm_embeddings", "face_detector"} <= set(served)
    for name in served:
        assert worker_pids(torchserve, name)


# -- minilm_embeddings ----------------------------------------------------------------------------
def embed_text(server, text: str) -> np.ndarray:
    resp = post(server, "minilm_embeddings", data=text.encode(),
                headers={"Content-Type": "text/plain; charset=utf-8"})
    assert resp.status_code == 200, resp.text
    return np.asarray(resp.json())


def test_embedding_of_a_raw_text_body(torchserve):
    food, bread = embed_text(torchserve, FOOD), embed_text(torchserve, BREAD)
    assert food.shape == (384,) and np.linalg.norm(food) == pytest.approx(1, abs=1e-5)
    assert food @ bread == pytest.approx(0.755, abs=0.01)
    assert food @ embed_text(torchserve, "Der Aktienmarkt schloss im Minus.") < 0.3


def test_embedding_json_forms(torchserve):
    one = post(torchserve, "minilm_embeddings", json={"text": FOOD})
    many = post(torchserve, "minilm_embeddings", json={"inputs": [FOOD, BREAD]})
    kserve = post(torchserve, "minilm_embeddings", json={"instances": [FOOD]})
    assert one.status_code == many.status_code == kserve.status_code == 200
    assert len(many.json()["predictions"]) == 2
    assert np.allclose(one.json(), many.json()["predictions"][0], atol=1e-5)
    assert np.allclose(one.json(), kserve.json()["predictions"][0], atol=1e-5)


def test_embeddings_batched_across_requests_match_single_ones(torchserve):
    texts = ["Hi.", FOOD, "A much longer sentence that needs a lot more tokens than the short "
             "ones, so they are padded in the shared batch, " * 4, BREAD, "ok", "Über alles."]
    alone = [embed_text(torchserve, t) for t in texts]
    together = send_together([lambda t=t: embed_text(torchserve, t) for t in texts])
    for a, b in zip(alone, together):
        assert np.abs(a - b).max() < 1e-5


@pytest.mark.parametrize("body, words", [
    ({"text": ""}, "empty"),
    ({"inputs": ["x"] * 65}, "limit is 64"),
    ({"text": "x" * 20001}, "limit is 20000"),
    ({"inputs": [FOOD, 3]}, "inputs[1]"),
])
def test_embedding_errors(torchserve, body, words):
    pids = worker_pids(torchserve, "minilm_embeddings")
    resp = post(torchserve, "minilm_embeddings", json=body)
    assert resp.status_code == 400, resp.text
    assert words in resp.json()["message"]
    assert worker_pids(torchserve, "minilm_embeddings") == pids


# -- face_detector --------------------------------------------------------------------------------
def test_face_in_the_astronaut_photo(torchserve, sample_images):
    resp = requests.put(f"{torchserve.inference_url}/predictions/face_detector",
                        data=sample_images["astronaut"].read_bytes(), headers=torchserve.auth(),
                        timeout=60)
    assert resp.status_code == 200, resp.text
    (face,) = resp.json()
    assert all(abs(a - b) <= 6 for a, b in zip(face["box"], (181, 62, 268, 172))), face
    assert face["score"] > 0.99 and len(face["landmarks"]) == 5


def test_no_face_and_instances(torchserve, sample_images):
    coffee = sample_images["coffee"].read_bytes()
    resp = post(torchserve, "face_detector", data=coffee,
                headers={"Content-Type": "image/jpeg"})
    assert resp.status_code == 200 and resp.json() == []
    doc = {"instances": [{"b64": base64.b64encode(sample_images["astronaut"].read_bytes())
                          .decode()}, {"b64": base64.b64encode(coffee).decode()}]}
    resp = post(torchserve, "face_detector", json=doc)
    assert resp.status_code == 200
    faces, none = resp.json()["predictions"]
    assert len(faces) == 1 and none == []


def test_face_parameters(torchserve, sample_images):
    url = f"{torchserve.inference_url}/face_detector/predict"
    astronaut = sample_images["astronaut"].read_bytes()
    headers = {**torchserve.auth(), "Content-Type": "image/jpeg"}
    strict = requests.post(f"{url}?min_score=1", data=astronaut, headers=headers, timeout=60)
    assert strict.status_code == 200 and strict.json() == []
    bad = requests.post(f"{url}?max_faces=0", data=astronaut, headers=headers, timeout=60)
    assert bad.status_code == 400 and "max_faces" in bad.json()["message"]
    header = post(torchserve, "face_detector", data=astronaut,
                  headers={"Content-Type": "image/jpeg", "X-Min-Score": "0.5"})
    assert header.status_code == 200 and len(header.json()) == 1


def test_bad_image_fails_alone(torchserve, sample_images):
    pids = worker_pids(torchserve, "face_detector")
    astronaut = sample_images["astronaut"].read_bytes()
    calls = [lambda: post(torchserve, "face_detector", data=astronaut)] * 2
    calls.insert(1, lambda: post(torchserve, "face_detector", data=images.png_bomb()))
    good, bomb, other = send_together(calls)
    assert bomb.status_code == 413
    assert good.status_code == other.status_code == 200 and len(good.json()) == 1
    assert worker_pids(torchserve, "face_detector") == pids
