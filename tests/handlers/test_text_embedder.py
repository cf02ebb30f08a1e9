"""TextEmbedder (minilm_embeddings) driven in-process from its archive: the model's own pooling,
batching that does not change the vectors, clear errors for bad texts."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tests import fuzz
from tests.handler_context import as_torchserve_row

MODEL = "minilm_embeddings"
FOOD = "A man is eating food."
BREAD = "A man is eating a piece of bread."
UNRELATED = "The stock market fell sharply on Tuesday."


@pytest.fixture(scope="module")
def embed(sender):
    return sender(MODEL)


@pytest.fixture(scope="module")
def handler(loaded_handlers):
    return loaded_handlers(MODEL)[0]


def vector(answer) -> np.ndarray:
    assert answer.status == 200, answer.body
    return np.asarray(answer.body, dtype=np.float64)


def test_one_text_gives_a_unit_vector_of_384(embed):
    (answer,) = embed([{"body": FOOD}])
    v = vector(answer)
    assert v.shape == (384,)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)


def test_similar_sentences_are_close(embed):
    food, bread, other = (vector(a) for a in embed(
        [{"body": FOOD}, {"body": {"text": BREAD}}, {"body": bytearray(UNRELATED.encode())}]))
    assert food @ bread == pytest.approx(0.755, abs=0.01)
    assert food @ other < 0.2 < food @ bread - 0.4


def test_list_forms_answer_predictions(embed):
    (inputs, instances) = embed([{"body": {"inputs": [FOOD, BREAD]}},
                                 {"body": {"instances": [{"text": FOOD}]}}])
    assert inputs.status == instances.status == 200
    assert len(inputs.body["predictions"]) == 2
    assert np.allclose(inputs.body["predictions"][0], instances.body["predictions"][0], atol=1e-6)


def test_batching_does_not_change_the_vectors(embed):
    texts = ["Hi.", FOOD, "A much longer sentence, with many more tokens than the others, "
             "so that the short ones are padded a lot in the shared batch." * 3, BREAD, "ok"]
    alone = [vector(embed([{"body": t}])[0]) for t in texts]
    together = [vector(a) for a in embed([{"body": t} for t in texts])]
    listed = np.asarray(embed([{"body": {"inputs": texts}}])[0].body["predictions"])
    for a, b, c in zip(alone, together, listed):
        assert np.abs(a - b).max() < 1e-5
        assert np.abs(a - c).max() < 1e-5


def test_long_texts_are_truncated_to_the_models_length(embed, handler):
    assert handler.max_tokens == 256
    words = " ".join(f"word{i}" for i in range(600))
    longer = words + " and many more words at the end that do not count"
    a, b = embed([{"body": words}, {"body": longer}])
    assert np.abs(vector(a) - vector(b)).max() < 1e-5  # both cut at 256 tokens


@pytest.mark.parametrize("row, status, words", [
    ({"body": {"text": ""}}, 400, "empty"),
    ({"body": "   \n"}, 400, "empty"),
    ({"body": {"inputs": [FOOD, ""]}}, 400, "inputs[1]: the text is empty"),
    ({"body": {"inputs": [FOOD] * 65}}, 400, "limit is 64"),
    ({"body": "x" * 20001}, 400, "20001 characters; the limit is 20000"),
    ({"body": bytearray(b"\xff\xfe\x00")}, 400, "not UTF-8"),
    ({"body": {"text": ["a"]}}, 400, "must be a string"),
])
def test_bad_texts(embed, row, status, words):
    bad, good = embed([row, {"body": FOOD}])
    assert bad.status == status and words in bad.body["message"], bad.body
    assert good.status == 200


@pytest.mark.parametrize("seed", range(3))
def test_fuzzed_requests_never_fail_their_neighbours(embed, seed):
    rng = random.Random(seed)
    expected = vector(embed([{"body": FOOD}])[0])
    for _ in range(5):
        rows = [fuzz.text_request(rng, BREAD) for _ in range(6)]
        answers = embed([{"body": FOOD}] + rows + [as_torchserve_row(FOOD.encode(), "text/plain")])
        for answer in (answers[0], answers[-1]):
            assert np.abs(vector(answer) - expected).max() < 1e-5
        for row, answer in zip(rows, answers[1:-1]):
            assert answer.status == 200 or 400 <= answer.status < 500, (row, answer.body)
