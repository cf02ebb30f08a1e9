"""The wire formats (handlers/envelopes.py): every accepted form, clear errors, and a seeded fuzz
of both decoders (anything they raise must be a RequestError with a short message)."""

from __future__ import annotations

import base64
import json
import random

import pytest

from handlers import envelopes
from handlers.errors import InvalidInput, InvalidText, RequestError
from tests import fuzz

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
B64 = base64.b64encode(PNG).decode()


# -- image ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("row, batched", [
    ({"body": bytearray(PNG)}, False),
    ({"data": bytearray(PNG)}, False),
    ({"file": bytearray(PNG)}, False),
    ({"body": {"data": B64}}, False),
    ({"body": bytearray(json.dumps({"data": B64}).encode())}, False),
    ({"body": {"instances": [B64, {"b64": B64}]}}, True),
    ({"body": json.dumps({"instances": [B64]})}, True),
])
def test_image_forms(row, batched):
    envelope = envelopes.IMAGE.decode(row, 32)
    assert all(data == PNG for data in envelope.inputs)
    assert envelope.batched is batched


def test_image_parameters_from_fields_and_json():
    envelope = envelopes.IMAGE.decode({"body": {"data": B64, "topk": 3}, "x": b"1"}, 32)
    assert envelope.params == {"topk": 3, "x": b"1"}


@pytest.mark.parametrize("row, words", [
    ({"body": bytearray()}, "empty"),
    ({}, "empty"),
    ({"body": "a cat, trust me"}, "text, not an image"),
    ({"body": bytearray(b"{not json")}, "not valid JSON"),
    ({"body": bytearray(b"[" * 3000)}, "not valid JSON"),
    ({"body": bytearray(b'{"data": ' + b"9" * 5000 + b"}")}, "not valid JSON"),
    ({"body": {"something": 1}}, "neither 'data' nor 'instances'"),
    ({"body": {"instances": []}}, "non-empty list"),
    ({"body": {"instances": [{"bytes": "x"}]}}, "instances[0]"),
    ({"body": {"data": 42}}, "base64 string"),
    ({"body": {"data": "@@@"}}, "not valid base64"),
    ({"body": [1, 2]}, "must be an object"),
    ({"body": {"instances": [B64] * 33}}, "limit is 32"),
])
def test_image_errors(row, words):
    with pytest.raises(InvalidInput, match=None) as info:
        envelopes.IMAGE.decode(row, 32)
    assert words in info.value.message


# -- text -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("row, texts, batched", [
    ({"body": "héllo"}, ["héllo"], False),  # text/plain: TorchServe decoded it
    ({"body": bytearray("héllo".encode())}, ["héllo"], False),
    ({"body": bytearray(b"[citation needed] starts with a bracket")},
     ["[citation needed] starts with a bracket"], False),
    ({"data": bytearray(b"from a form")}, ["from a form"], False),
    ({"body": {"text": "one"}}, ["one"], False),
    ({"body": {"inputs": ["a", "b"]}}, ["a", "b"], True),
    ({"body": {"instances": ["a", {"text": "b"}]}}, ["a", "b"], True),
    ({"body": bytearray(b'{"inputs": ["x"]}')}, ["x"], True),
])
def test_text_forms(row, texts, batched):
    envelope = envelopes.TEXT.decode(row, 8)
    assert envelope.inputs == texts and envelope.batched is batched


@pytest.mark.parametrize("row, error, words", [
    ({"body": bytearray(b"\xff\xfe")}, InvalidText, "not UTF-8"),
    ({"body": {"text": 5}}, InvalidInput, "must be a string"),
    ({"body": {"inputs": "abc"}}, InvalidInput, "non-empty list"),
    ({"body": {"inputs": []}}, InvalidInput, "non-empty list"),
    ({"body": {"inputs": ["a"] * 9}}, InvalidInput, "limit is 8"),
    ({"body": {"inputs": ["a", None]}}, InvalidInput, "inputs[1]"),
    ({"body": {"sentence": "a"}}, InvalidInput, "none of 'text', 'inputs', 'instances'"),
    ({"body": bytearray(b'{"text": ')}, InvalidInput, "not valid JSON"),
])
def test_text_errors(row, error, words):
    with pytest.raises(error) as info:
        envelopes.TEXT.decode(row, 8)
    assert words in info.value.message


# -- parameters -----------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (3, 3), (3.0, 3), ("3", 3), (b"3", 3), (bytearray(b" 3\n"), 3), ("\uff15", 5), ("-2", -2),
    (True, None), (2.5, None), (float("inf"), None), (float("nan"), None), (1e400, None),
    ("é", None), ("\u00b2", None), ("+-5", None), ("9" * 5000, None), (None, None), ([3], None),
    pytest.param(10 ** 5000, 10 ** 5000, id="5000-digit int"),
])
def test_integer(value, expected):
    assert envelopes.integer(value) == expected


@pytest.mark.parametrize("value, expected", [
    (0.5, 0.5), (1, 1.0), ("0.25", 0.25), (b"1e-1", 0.1), ("nan", None), ("inf", None),
    (float("nan"), None), (10 ** 400, None), (True, None), ("x" * 100, None), ({}, None),
])
def test_number(value, expected):
    assert envelopes.number(value) == expected


# -- fuzz -----------------------------------------------------------------------------------------
def _check(codec, row, max_instances=4):
    try:
        envelope = codec.decode(row, max_instances)
    except RequestError as err:
        body = err.body()
        json.dumps(body)
        assert 400 <= body["code"] < 500
        assert len(body["message"]) < 600, body["message"][:200]
        return
    assert 1 <= len(envelope.inputs) <= max_instances
    kind = bytes if codec is envelopes.IMAGE else str
    assert all(isinstance(x, kind) for x in envelope.inputs)
    assert isinstance(envelope.params, dict)


@pytest.mark.parametrize("seed", range(20))
def test_fuzz_image_decoder(seed):
    rng = random.Random(seed)
    for _ in range(150):
        _check(envelopes.IMAGE, fuzz.image_request(rng, PNG))


@pytest.mark.parametrize("seed", range(20))
def test_fuzz_text_decoder(seed):
    rng = random.Random(1000 + seed)
    for _ in range(150):
        _check(envelopes.TEXT, fuzz.text_request(rng, "A man is eating food."))


@pytest.mark.parametrize("seed", range(5))
def test_fuzz_arbitrary_rows(seed):
    rng = random.Random(2000 + seed)
    for _ in range(300):
        row = fuzz.hostile_value(rng)
        if rng.random() < 0.7:
            row = {rng.choice(fuzz.KEYS): row}
        _check(envelopes.IMAGE, row)
        _check(envelopes.TEXT, row)
