"""Unit tests of the shared policy pieces: addresses, auth resolution, error typing, the TF
Serving JSON codec. No server needed."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from clients import errors
from clients.tfserving_common import Signature, decode_response, encode_request, model_path
from clients.transport import RetryPolicy, TokenSource, resolve_address


def test_address_argument_beats_environment_beats_default():
    env = {"TORCHSERVE_URL": "http://ts:9000/"}
    assert resolve_address("http://arg:1", "TORCHSERVE_URL", env) == "http://arg:1"
    assert resolve_address(None, "TORCHSERVE_URL", env) == "http://ts:9000"
    assert resolve_address(None, "TFSERVING_GRPC_TARGET", {}) == "127.0.0.1:8500"


def _key_file(path, inference="inf-1", management="mgmt-1"):
    path.write_text(json.dumps({"management": {"key": management, "expiration time": "x"},
                                "inference": {"key": inference, "expiration time": "x"},
                                "API": {"key": "api"}}))
    return path


def test_token_precedence(tmp_path):
    key_file = _key_file(tmp_path / "key_file.json")
    assert TokenSource("explicit", key_file, env={}).token("management") == "explicit"
    env = {"TORCHSERVE_TOKEN": "both", "TORCHSERVE_MANAGEMENT_TOKEN": "m"}
    assert TokenSource(None, None, env=env).token("inference") == "both"
    assert TokenSource(None, None, env=env).token("management") == "m"
    env_file = {"TORCHSERVE_KEY_FILE": str(key_file)}
    assert TokenSource(None, None, env=env_file).headers("inference") == {
        "Authorization": "Bearer inf-1"}
    assert TokenSource(None, None, env={}, start=tmp_path).headers() == {}
    assert TokenSource("t", env={}).grpc_metadata() == (("authorization", "Bearer t"),)


def test_rotated_keys_are_picked_up(tmp_path):
    key_file = _key_file(tmp_path / "key_file.json")
    tokens = TokenSource(None, key_file, env={})
    assert tokens.token("inference") == "inf-1"
    _key_file(key_file, inference="inf-2")
    os.utime(key_file, (time.time() + 5, time.time() + 5))
    assert tokens.token("inference") == "inf-2"


def test_bad_key_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(errors.ServingError, match="key_file.json"):
        TokenSource(None, tmp_path / "bad.json", env={}).token()
    with pytest.raises(errors.ServingError, match="cannot read"):
        TokenSource(None, tmp_path / "missing.json", env={}).token()


@pytest.mark.parametrize("status,body,cls,message", [
    (400, b'{"code": 400, "type": "InvalidImage", "message": "bad image"}',
     errors.InvalidInput, "bad image"),
    (400, b'{"code": 400, "type": "InvalidKeyException", "message": "Token Authorization '
          b'failed"}', errors.Unauthorized, "Token Authorization failed"),
    (404, b'{"error": "Servable not found for request: Latest(x)"}', errors.NotFound,
     "Servable not found for request: Latest(x)"),
    (503, b"<html>busy</html>", errors.Unavailable, "<html>busy</html>"),
    (429, b"", errors.Unavailable, "HTTP 429"),
    (403, b"", errors.InvalidInput, "HTTP 403"),
    (413, b'{"code": 413, "type": "ImageTooLarge", "message": "too many pixels"}',
     errors.InvalidInput, "too many pixels"),
    (504, b"", errors.ServingError, "HTTP 504"),
    (507, b"worker died", errors.ServingError, "worker died"),
])
def test_http_errors_are_typed(status, body, cls, message):
    error = errors.from_http(status, body)
    assert type(error) is cls and error.message == message and error.status_code == status


def test_grpc_errors_are_typed():
    error = errors.from_grpc("INTERNAL", "Model not found: x\n"
                                  "org.pytorch.serve.archive.model.ModelNotFoundException")
    assert isinstance(error, errors.NotFound) and error.message == "Model not found: x"
    assert error.error_type == "ModelNotFoundException" and error.status_code == 404
    assert isinstance(errors.from_grpc("UNAVAILABLE", "overloaded"), errors.Unavailable)
    assert isinstance(errors.from_grpc("UNAVAILABLE", "failed to connect to all "
                                            "addresses"), errors.ConnectionFailed)
    assert isinstance(errors.from_grpc("DEADLINE_EXCEEDED", "x"), errors.Timeout)
    assert isinstance(errors.from_grpc("PERMISSION_DENIED", "Token Authorization failed. x"),
                      errors.Unauthorized)
    assert not RetryPolicy.retryable(errors.from_grpc("INVALID_ARGUMENT", "x"))
    assert RetryPolicy.retryable(errors.from_grpc("UNAVAILABLE", "overloaded"))
    assert not RetryPolicy.retryable(errors.from_grpc("RESOURCE_EXHAUSTED", "x"))


def test_handler_error_payload_detection():
    assert isinstance(errors.from_payload({"code": 400, "type": "T", "message": "m"}),
                      errors.InvalidInput)
    assert errors.from_payload([{"class_index": 1}]) is None
    assert errors.from_payload({"code": 400, "message": "m", "predictions": []}) is None


def test_retry_policy_counts_attempts():
    calls = []

    def flaky():
        calls.append(1)
        raise errors.Unavailable("busy", status_code=503)

    with pytest.raises(errors.Unavailable) as info:
        RetryPolicy(max_attempts=3, initial_backoff=0.001, jitter=0).call(flaky)
    assert len(calls) == 3 and info.value.attempts == 3
    with pytest.raises(errors.Unavailable):
        RetryPolicy(max_attempts=3).call(flaky, idempotent=False)
    assert len(calls) == 4


def test_backoff_jitter_is_proportional_and_retry_after_is_a_floor():
    policy = RetryPolicy(initial_backoff=1.0, max_backoff=8.0, jitter=0.5)
    waits = [policy.backoff(3) for _ in range(200)]
    # retry 3: base 4 s, spread over [2, 4] s, not 4 s +- a constant
    assert 2.0 <= min(waits) and max(waits) <= 4.0 and max(waits) - min(waits) > 1.0
    told = errors.Unavailable("busy", status_code=503, retry_after=7.0)
    waits = [policy.backoff(1, told) for _ in range(200)]
    assert min(waits) >= 7.0 and max(waits) <= 10.5


def test_retry_budget_caps_retries_at_a_share_of_requests():
    budget = RetryPolicy(budget_ratio=0.1, budget_reserve=2.0).budget()
    assert budget.withdraw() and budget.withdraw() and not budget.withdraw()
    for _ in range(11):  # 11 requests earn one retry at 10 %
        budget.deposit()
    assert budget.withdraw() and not budget.withdraw()


def test_model_path():
    assert model_path("m") == "/v1/models/m"
    assert model_path("m", version=2) == "/v1/models/m/versions/2"
    assert model_path("m", label="stable") == "/v1/models/m/labels/stable"
    with pytest.raises(ValueError):
        model_path("m", 1, "stable")


def test_codec_row_and_columnar_with_bytes():
    row = encode_request({"images": np.array([b"\x00\x01", b"ab"], dtype=object),
                          "k": np.array([1, 2], np.int32)}, columnar=False)
    assert row == {"instances": [{"images": {"b64": "AAE="}, "k": 1},
                                 {"images": {"b64": "YWI="}, "k": 2}]}
    col = encode_request(np.zeros((1, 2), np.float32), columnar=True, signature_name="s")
    assert col == {"signature_name": "s", "inputs": [[0.0, 0.0]]}


def test_codec_decodes_to_signature_dtypes():
    sig = Signature.from_json("s", {
        "method_name": "tensorflow/serving/predict",
        "inputs": {},
        "outputs": {"ids": {"dtype": "DT_INT32", "tensor_shape": {"dim": [{"size": "-1"},
                                                                          {"size": "2"}]}},
                    "labels": {"dtype": "DT_STRING", "tensor_shape": {"unknown_rank": True}},
                    "p": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": []}}}})
    assert sig.outputs["ids"].shape == (-1, 2) and sig.outputs["labels"].shape is None
    out = decode_response({"predictions": [{"ids": [1, 2], "labels": ["a", "b"], "p": 0.5}]},
                          sig)
    assert out["ids"].dtype == np.int32 and out["ids"].shape == (1, 2)
    assert out["labels"].tolist() == [[b"a", b"b"]] and out["p"].dtype == np.float32
    col = decode_response({"outputs": {"ids": [[3, 4]], "labels": [[{"b64": "AAE="}, "x"]],
                                       "p": [1.0]}}, sig)
    assert col["labels"][0, 0] == b"\x00\x01" and col["ids"].tolist() == [[3, 4]]
