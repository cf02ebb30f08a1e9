"""The typed helpers of every model kind (embed, detect_faces) and `predict` for any model,
over REST and gRPC, against the session's real TorchServe with token auth on."""

from __future__ import annotations

import numpy as np
import pytest

from clients import Face, errors

FOOD = "A man is eating food."
BREAD = "A man is eating a piece of bread."
OTHER = "The new movie is awful."
# Where MTCNN finds Eileen Collins' face in skimage's astronaut photo (issue 8's measurement).
ASTRONAUT_FACE = (181, 62, 268, 172)


@pytest.fixture(params=["rest", "grpc"])
def ts(request, ts_rest, ts_grpc):
    return ts_rest if request.param == "rest" else ts_grpc


def test_embed_gives_normalised_vectors_whose_similarity_means_something(ts):
    vectors = ts.embed([FOOD, BREAD, OTHER])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar == pytest.approx(0.755, abs=0.01)
    assert unrelated < similar - 0.4


def test_embed_one_text_and_batches_agree(ts):
    one = ts.embed(BREAD)
    assert one.shape == (1, 384)
    np.testing.assert_allclose(one[0], ts.embed([FOOD, BREAD])[1], atol=1e-5)


def test_embed_rest_and_grpc_agree(ts_rest, ts_grpc):
    np.testing.assert_allclose(ts_rest.embed([FOOD, OTHER]), ts_grpc.embed([FOOD, OTHER]),
                               atol=1e-5)


def test_empty_text_is_invalid_input(ts):
    with pytest.raises(errors.InvalidInput) as info:
        ts.embed([FOOD, ""])
    assert info.value.status_code == 400 and info.value.attempts == 1


def test_detect_faces_finds_the_astronaut(ts, sample_images):
    (face,) = ts.detect_faces(sample_images["astronaut"])
    assert isinstance(face, Face) and 0.9 < face.score <= 1.0
    assert np.allclose(face.box, ASTRONAUT_FACE, atol=15), face.box
    assert len(face.landmarks) == 5
    x1, y1, x2, y2 = face.box
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


def test_no_face_is_an_empty_list(ts, sample_images):
    assert ts.detect_faces(sample_images["coffee"]) == []


@pytest.mark.parametrize("params,name", [({"min_score": 2.0}, "min_score"),
                                         ({"max_faces": 0}, "max_faces")])
def test_face_parameters_travel_with_raw_bytes(ts, sample_images, params, name):
    # Over REST as X-<name> headers, over gRPC as named inputs: an out-of-range value reaching
    # the handler is refused by name (one that got lost would give the default's answer).
    with pytest.raises(errors.InvalidInput, match=name):
        ts.detect_faces(sample_images["astronaut"], **params)


def test_predict_works_for_every_model(ts, sample_images):
    image = sample_images["astronaut"].read_bytes()
    assert isinstance(ts.predict(image, "efficientnet_lite0", params={"topk": 2}), list)
    faces = ts.predict(image, "face_detector")
    assert len(faces) == 1 and set(faces[0]) == {"box", "score", "landmarks"}
    vector = ts.predict({"text": FOOD}, "minilm_embeddings")
    assert len(vector) == 384
    doc = ts.predict({"inputs": [FOOD, BREAD]}, "minilm_embeddings")
    assert np.asarray(doc["predictions"]).shape == (2, 384)
