"""ImageClassifier driven through the project's context (tests/handler_context.py): no server,
the archive the build produced, the same calls a TorchServe worker makes."""

from __future__ import annotations

import base64
import json
from http import HTTPStatus

import pytest

from tests import images

MODEL = "efficientnet_lite0"


@pytest.fixture(scope="module")
def handler_and_context(loaded_handlers):
    return loaded_handlers(MODEL)


@pytest.fixture
def classify(sender):
    return sender(MODEL)


@pytest.fixture(scope="module")
def cat(sample_images):
    return sample_images["cat"].read_bytes()


@pytest.fixture(scope="module")
def coffee(sample_images):
    return sample_images["coffee"].read_bytes()


def top1(answer) -> int:
    assert answer.status == 200, answer.body
    return answer.body[0]["class_index"]


def assert_error(answer, status: int, *words: str):
    assert answer.status == status, answer.body
    assert answer.body["code"] == status
    for word in words:
        assert word in answer.body["message"], answer.body["message"]
    assert answer.message == HTTPStatus(status).phrase  # short ASCII, never the message


# -- input formats ------------------------------------------------------------------------------
def test_raw_body(classify, cat, coffee):
    cat_answer, coffee_answer = classify([{"body": bytearray(cat)}, {"body": bytearray(coffee)}])
    assert top1(cat_answer) in images.CAT_CLASSES
    assert top1(coffee_answer) == images.ESPRESSO
    assert len(cat_answer.body) == 5
    first = cat_answer.body[0]
    assert set(first) == {"class_index", "label", "probability"}
    assert isinstance(first["label"], str) and first["label"]
    probs = [p["probability"] for p in cat_answer.body]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1


@pytest.mark.parametrize("field", ["data", "file"])
def test_multipart_field(classify, coffee, field):
    (answer,) = classify([{field: bytearray(coffee)}])
    assert top1(answer) == images.ESPRESSO


def test_json_base64_decoded_by_torchserve(classify, coffee):
    (answer,) = classify([{"body": {"data": base64.b64encode(coffee).decode()}}])
    assert top1(answer) == images.ESPRESSO


def test_json_base64_as_bytes(classify, coffee):
    body = json.dumps({"data": base64.b64encode(coffee).decode(), "topk": 2}).encode()
    (answer,) = classify([{"body": bytearray(body)}])
    assert top1(answer) == images.ESPRESSO and len(answer.body) == 2


def test_instances(classify, cat, coffee):
    doc = {"instances": [{"b64": base64.b64encode(cat).decode()},
                         base64.b64encode(coffee).decode()], "topk": 3}
    (answer,) = classify([{"body": doc}])
    assert answer.status == 200
    predictions = answer.body["predictions"]
    assert len(predictions) == 2 and all(len(p) == 3 for p in predictions)
    assert predictions[0][0]["class_index"] in images.CAT_CLASSES
    assert predictions[1][0]["class_index"] == images.ESPRESSO


# -- batching and per-request errors -------------------------------------------------------------
def test_batch_mixing_good_and_bad(classify, cat, coffee):
    rows = [
        {"body": bytearray(cat)},
        {"body": bytearray(b"\x00\x01 definitely not an image")},
        {"body": bytearray(coffee)},
        {"body": {"data": "***not base64***"}},
        {"body": bytearray(cat[: len(cat) // 2])},
        {"body": bytearray(coffee), "topk": bytearray(b"0")},
        {"data": bytearray(coffee)},
        {"body": "just some text"},
    ]
    answers = classify(rows)
    assert top1(answers[0]) in images.CAT_CLASSES
    assert_error(answers[1], 400, "cannot identify an image")
    assert top1(answers[2]) == images.ESPRESSO
    assert_error(answers[3], 400, "base64")
    assert_error(answers[4], 400, "truncated")
    assert_error(answers[5], 400, "topk")
    assert top1(answers[6]) == images.ESPRESSO
    assert_error(answers[7], 400, "text")


@pytest.mark.parametrize("row, words", [
    ({"body": bytearray()}, ["empty"]),
    ({}, ["empty"]),
    ({"body": bytearray(b"{not json")}, ["not valid JSON"]),
    ({"body": {"something": 1}}, ["neither 'data' nor 'instances'"]),
    ({"body": {"instances": []}}, ["non-empty list"]),
    ({"body": {"instances": [{"bytes": "x"}]}}, ["instances[0]"]),
    ({"body": {"data": 42}}, ["base64 string"]),
    ({"body": [1, 2]}, ["JSON body must be an object"]),
])
def test_malformed_requests(classify, row, words):
    (answer,) = classify([row])
    assert_error(answer, 400, *words)


def test_bad_instance_is_named(classify, cat):
    good = base64.b64encode(cat).decode()
    bad = base64.b64encode(b"GIF89a broken").decode()
    (answer,) = classify([{"body": {"instances": [good, bad]}}])
    assert_error(answer, 400, "instances[1]")


def test_instance_limit(classify, handler_and_context, cat):
    handler, _ = handler_and_context
    encoded = base64.b64encode(cat).decode()
    (answer,) = classify([{"body": {"instances": [encoded] * (handler.max_instances + 1)}}])
    assert_error(answer, 400, "limit")


def test_decompression_bomb_is_413_and_batch_survives(classify, coffee):
    bomb, good = classify([{"body": bytearray(images.png_bomb())}, {"body": bytearray(coffee)}])
    assert_error(bomb, 413, "limit of")
    assert top1(good) == images.ESPRESSO


# -- topk ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("topk", [1, 7, 1000])
def test_topk_in_bounds(classify, coffee, topk):
    (answer,) = classify([{"body": bytearray(coffee), "topk": bytearray(str(topk).encode())}])
    assert answer.status == 200 and len(answer.body) == topk


@pytest.mark.parametrize("topk", [0, -1, 1001, "abc", 2.5, True, None])
def test_topk_out_of_bounds(classify, coffee, topk):
    doc = {"data": base64.b64encode(coffee).decode(), "topk": topk}
    (answer,) = classify([{"body": doc}])
    assert_error(answer, 400, "topk")


def test_topk_header(classify, coffee):
    (answer,) = classify([{"body": bytearray(coffee)}], headers=[{"X-TopK": "2"}])
    assert answer.status == 200 and len(answer.body) == 2


def test_body_parameter_wins_over_header(classify, coffee):
    doc = {"data": base64.b64encode(coffee).decode(), "topk": 3}
    (answer,) = classify([{"body": doc}], headers=[{"x-topk": "9"}])
    assert len(answer.body) == 3


# -- image handling -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "CMYK", "P"])
def test_colour_modes_keep_the_answer(classify, sample_images, mode):
    (answer,) = classify([{"body": bytearray(images.in_mode(sample_images["cat"], mode))}])
    assert top1(answer) in images.CAT_CLASSES


@pytest.mark.parametrize("mode", ["L", "LA", "1", "I;16", "I", "F"])
def test_grey_modes_are_classified(classify, sample_images, mode):
    (answer,) = classify([{"body": bytearray(images.in_mode(sample_images["cat"], mode))}])
    assert answer.status == 200 and len(answer.body) == 5


def test_sixteen_bit_is_scaled_not_clipped(sample_images):
    from handlers import images as decoding

    eight = decoding.decode(images.in_mode(sample_images["cat"], "L"), 10**8, 256)
    sixteen = decoding.decode(images.in_mode(sample_images["cat"], "I;16"), 10**8, 256)
    assert abs(int(eight.mean()) - int(sixteen.mean())) <= 1  # clipping would give white


def test_transparent_pixels_become_white():
    from PIL import Image

    from handlers import images as decoding

    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert decoding.decode(images.encode(clear), 10**6, 8).min() == 255


def test_exif_orientation_is_applied(classify, sample_images):
    import numpy as np

    from handlers import images as decoding

    upright = decoding.decode(sample_images["cat"].read_bytes(), 10**8, 256)
    rotated = decoding.decode(images.rotated_with_exif(sample_images["cat"]), 10**8, 256)
    assert rotated.shape == upright.shape  # stored sideways, displayed (and decoded) upright
    assert np.abs(rotated.astype(int) - upright.astype(int)).mean() < 4  # JPEG re-encoding
    (answer,) = classify([{"body": bytearray(images.rotated_with_exif(sample_images["cat"]))}])
    assert top1(answer) in images.CAT_CLASSES


def test_large_jpeg_uses_draft_decoding(classify, sample_images):
    from handlers import images as decoding

    data = images.large_jpeg(sample_images["cat"])
    rgb = decoding.decode(data, 10**8, 256)
    assert 256 <= min(rgb.shape[:2]) < 1000  # decoded at a reduced DCT scale, not 4000 px
    (answer,) = classify([{"body": bytearray(data)}])
    assert top1(answer) in images.CAT_CLASSES


# -- poison requests and fuzz: a bad request fails alone -----------------------------------------
def test_poison_requests_fail_alone(classify, cat, coffee):
    from tests import fuzz
    from tests.handler_context import as_torchserve_row

    for name, body in fuzz.poison_bodies(coffee).items():
        good = [{"body": bytearray(cat)}] * 3 + [{"body": bytearray(coffee)}] * 3
        answers = classify(good[:3] + [as_torchserve_row(body)] + good[3:])
        poison = answers[3]
        assert poison.status == 400, (name, poison.body)
        assert len(poison.body["message"]) < 300 and poison.body["message"].isascii(), name
        assert [top1(a) for a in answers[:3]] == [top1(answers[0])] * 3
        assert all(top1(a) == images.ESPRESSO for a in answers[4:]), name


@pytest.mark.parametrize("seed", range(2))
def test_fuzzed_requests_never_fail_their_neighbours(classify, sample_images, cat, coffee, seed):
    import random

    from PIL import Image

    from tests import fuzz

    rng = random.Random(seed)
    small = images.encode(Image.open(sample_images["coffee"]).convert("RGB").resize((96, 64)),
                          "JPEG")
    for _ in range(4):
        rows = [fuzz.image_request(rng, small) for _ in range(6)]
        answers = classify([{"body": bytearray(cat)}] + rows + [{"body": bytearray(coffee)}])
        assert top1(answers[0]) in images.CAT_CLASSES
        assert top1(answers[-1]) == images.ESPRESSO
        for row, answer in zip(rows, answers[1:-1]):
            assert answer.status == 200 or 400 <= answer.status < 500, (row, answer.body)
