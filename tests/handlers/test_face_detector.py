"""FaceDetector (face_detector) driven in-process from its archive: boxes in the original image's
pixels whatever the decoding did, parameters, no face -> [], bad requests fail alone."""

from __future__ import annotations

import base64
import io
import random

import pytest
from PIL import Image

from tests import fuzz, images

MODEL = "face_detector"
ASTRONAUT_FACE = (181, 62, 268, 172)


@pytest.fixture(scope="module")
def detect(sender):
    return sender(MODEL)


@pytest.fixture(scope="module")
def astronaut(sample_images) -> bytes:
    return sample_images["astronaut"].read_bytes()


def only_face(answer) -> dict:
    assert answer.status == 200, answer.body
    (face,) = answer.body
    return face


def assert_box_near(box, expected, tolerance):
    assert all(abs(a - b) <= tolerance for a, b in zip(box, expected)), box


def test_astronaut_has_one_face(detect, astronaut):
    face = only_face(detect([{"body": bytearray(astronaut)}])[0])
    assert set(face) == {"box", "score", "landmarks"}
    assert_box_near(face["box"], ASTRONAUT_FACE, 6)
    assert face["score"] > 0.99
    x1, y1, x2, y2 = face["box"]
    assert len(face["landmarks"]) == 5
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face["landmarks"])
    (left_eye, right_eye, nose, left_mouth, right_mouth) = face["landmarks"]
    assert left_eye[0] < right_eye[0] and left_eye[1] < nose[1] < left_mouth[1]


def test_no_face_is_an_empty_list(detect, sample_images):
    coffee, cat = detect([{"body": bytearray(sample_images["coffee"].read_bytes())},
                          {"body": bytearray(sample_images["cat"].read_bytes())}])
    assert coffee.status == 200 and coffee.body == []
    assert cat.status == 200 and cat.body == []


def test_boxes_follow_exif_rotation(detect, sample_images):
    face = only_face(detect([{"body": bytearray(images.rotated_with_exif(
        sample_images["astronaut"]))}])[0])
    assert_box_near(face["box"], ASTRONAUT_FACE, 6)  # upright, like the client sees it


def test_boxes_are_in_original_pixels_of_a_large_image(detect, sample_images):
    big = images.large_jpeg(sample_images["astronaut"], side=4096)  # searched at 1024, mapped back
    face = only_face(detect([{"body": bytearray(big)}])[0])
    assert_box_near(face["box"], [v * 8 for v in ASTRONAUT_FACE], 6 * 8)


def test_instances_and_parameters(detect, astronaut, sample_images):
    doc = {"instances": [base64.b64encode(astronaut).decode(),
                         {"b64": base64.b64encode(sample_images["coffee"].read_bytes()).decode()}]}
    (answer,) = detect([{"body": doc}])
    assert answer.status == 200
    faces, none = answer.body["predictions"]
    assert len(faces) == 1 and none == []
    strict, = detect([{"body": {"data": doc["instances"][0], "min_score": 1.0}}])
    assert strict.status == 200 and strict.body == []  # its score is 0.99999..., under 1.0
    limited, = detect([{"body": bytearray(astronaut), "max_faces": bytearray(b"1")}])
    assert len(limited.body) == 1


def test_many_faces_and_max_faces(detect, sample_images):
    photo = Image.open(sample_images["astronaut"]).convert("RGB").crop((120, 20, 330, 230))
    grid = Image.new("RGB", (photo.width * 3, photo.height))
    for i in range(3):
        grid.paste(photo, (i * photo.width, 0))
    data = bytearray(images.encode(grid, "PNG"))
    three, one = detect([{"body": data}, {"body": data, "max_faces": bytearray(b"2")}])
    assert len(three.body) == 3 and len(one.body) == 2
    scores = [f["score"] for f in three.body]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("params, words", [
    ({"min_score": "2"}, "min_score"),
    ({"min_score": "nan"}, "min_score"),
    ({"min_score": "é"}, "min_score"),
    ({"max_faces": "0"}, "max_faces"),
    ({"max_faces": "101"}, "max_faces"),
    ({"max_faces": "1e400"}, "max_faces"),
])
def test_bad_parameters(detect, astronaut, params, words):
    row = {"body": bytearray(astronaut), **{k: bytearray(v.encode()) for k, v in params.items()}}
    bad, good = detect([row, {"body": bytearray(astronaut)}])
    assert bad.status == 400 and words in bad.body["message"], bad.body
    assert good.status == 200 and len(good.body) == 1


def test_tiny_images_have_no_face(detect):
    tiny = images.encode(Image.new("RGB", (5, 5), (255, 200, 180)), "PNG")
    (answer,) = detect([{"body": bytearray(tiny)}])
    assert answer.status == 200 and answer.body == []


@pytest.mark.parametrize("seed", range(2))
def test_fuzzed_requests_never_fail_their_neighbours(detect, astronaut, seed):
    rng = random.Random(seed)
    small = images.encode(Image.open(io.BytesIO(astronaut)).convert("RGB").resize((128, 128)),
                          "JPEG")
    for _ in range(4):
        rows = [fuzz.image_request(rng, small) for _ in range(5)]
        answers = detect([{"body": bytearray(astronaut)}] + rows)
        assert_box_near(only_face(answers[0])["box"], ASTRONAUT_FACE, 6)
        for row, answer in zip(rows, answers[1:]):
            assert answer.status == 200 or 400 <= answer.status < 500, (row, answer.body)
