"""The shared base handler driven by a toy model and the project's context: no archive, no
server. Every request of a batch gets its own answer whatever its neighbours do."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from tests.handler_context import run_batch
from tests.handlers.toy import toy


@pytest.fixture
def toy_model(tmp_path):
    return toy(tmp_path)


@pytest.fixture
def send(toy_model):
    handler, context = toy_model

    def run(rows, headers=None):
        return run_batch(handler, context, rows, headers)

    return run


def values(answers):
    return [a.body["value"] if a.status == 200 else a.status for a in answers]


def test_one_batch_one_model_call(send, toy_model):
    handler, _ = toy_model
    answers = send([{"body": "1"}, {"body": {"text": "2"}}, {"body": {"inputs": ["3", "4"]}}])
    assert [a.status for a in answers] == [200, 200, 200]
    assert answers[0].body == {"value": 2.0, "text": "1"}
    assert answers[1].body == {"value": 4.0, "text": "2"}
    assert answers[2].body == {"predictions": [{"value": 6.0, "text": "3"},
                                               {"value": 8.0, "text": "4"}]}
    assert handler.model.calls == [4]  # the four inputs of three requests, batched once


@pytest.mark.parametrize("bad, status, type_", [
    ("bug", 500, "InternalError"),
    ("bad", 400, "InvalidText"),
    ("poison", 500, "InternalError"),
    ("nan", 500, "InternalError"),
    ("fmt", 500, "InternalError"),
    ("", 400, "InvalidInput"),
])
def test_a_failure_at_any_stage_fails_only_its_request(send, bad, status, type_):
    rows = [{"body": "1"}, {"body": "2"}, {"body": bad}, {"body": "3"}]
    answers = send(rows)
    assert values(answers) == [2.0, 4.0, status, 6.0]
    error = answers[2].body
    assert error["code"] == status and error["type"] == type_, error
    assert answers[2].message == HTTPStatus(status).phrase
    if status == 500:
        assert "see the server log" in error["message"]  # no internals leak to the client


def test_internal_errors_are_logged_with_traceback(send, caplog):
    send([{"body": "bug"}, {"body": "1"}])
    assert any(r.exc_info and "KeyError" in r.exc_text for r in caplog.records if r.exc_text)


def test_model_failure_is_bisected_to_the_culprit(send, toy_model):
    handler, _ = toy_model
    rows = [{"body": str(i)} for i in range(7)]
    rows.insert(5, {"body": "poison"})
    answers = send(rows)
    assert values(answers) == [0.0, 2.0, 4.0, 6.0, 8.0, 500, 10.0, 12.0]
    # 8 fails -> halves 4 (ok) + 4 (fails) -> 2 (fails: singles 1 ok, 1 fails) + 2 (ok)
    assert handler.model.calls == [8, 4, 4, 2, 1, 1, 2]


def test_two_culprits_in_one_batch(send):
    rows = [{"body": b} for b in ["poison", "1", "2", "3", "4", "5", "6", "poison"]]
    assert values(send(rows)) == [500, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 500]


def test_a_list_request_fails_as_a_whole_when_one_input_fails(send):
    answers = send([{"body": {"inputs": ["1", "bad"]}}, {"body": "5"}])
    assert answers[0].status == 400 and "inputs[1]: bad text" in answers[0].body["message"]
    assert values(answers)[1] == 10.0


def test_instance_limit(send):
    (answer,) = send([{"body": {"inputs": ["1"] * 5}}])
    assert answer.status == 400 and "limit is 4" in answer.body["message"]


def test_parameters_from_body_query_and_header(send):
    answers = send([{"body": {"text": "1", "offset": 10}},
                    {"body": bytearray(b"1"), "offset": bytearray(b"20")},
                    {"body": "1"},
                    {"body": "1"}],
                   headers=[{}, {}, {"X-Offset": "30"}, {"x-offset": "nope"}])
    assert values(answers) == [12.0, 22.0, 32.0, 400]
    assert "offset must be an integer" in answers[3].body["message"]


def test_echoed_values_are_short_and_ascii(send):
    huge = "é" * 1_000_000
    (answer,) = send([{"body": {"text": "1", "offset": huge}}])
    assert answer.status == 400
    message = answer.body["message"]
    assert len(message) < 120 and message.isascii(), message
    assert answer.message == "Bad Request"


def test_the_answer_is_strict_json_bytes(send):
    answers = send([{"body": "1"}, {"body": "nan"}])
    assert answers[0].status == 200 and answers[1].status == 500


def test_unknown_runtime_fails_at_load(tmp_path):
    with pytest.raises(ValueError, match="runtime 'openvino' is not available"):
        toy(tmp_path, runtime="openvino")


def test_device_choice(monkeypatch):
    import torch

    from handlers.base import choose_device

    assert choose_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device(0) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device(1) == torch.device("cuda:1")


def test_header_names_are_case_insensitive_with_dashes(toy_model):
    handler, _ = toy_model
    handler.PARAMETERS = ("min_score", "offset")  # an instance attribute: this test only
    found = handler._header_params({"X-Min-Score": "0.5", "X-OFFSET": "2", "Min-Score": "no",
                                    "Host": "127.0.0.1"})
    assert found == {"min_score": "0.5", "offset": "2"}
