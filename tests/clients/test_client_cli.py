"""`python -m clients` end to end: against the real TorchServe and the TF Serving test double."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clients.conftest import EXPECTED, MODEL, ROOT


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None,
            timeout: float = 120, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("TORCHSERVE_", "TFSERVING_"))}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "clients", *args], cwd=cwd, env=full_env,
                          input=stdin, capture_output=True, timeout=timeout)


def test_finds_the_running_servers_key_and_ports_from_the_repo(torchserve, sample_images,
                                                              tmp_path):
    """After `make serve`, `python -m clients predict samples/cat.jpg` answers from anywhere in
    the repo with nothing exported: the key and the ports come from .run/torchserve/. Here a
    repo whose run directory holds the session server's own key_file.json and server.json."""
    repo = tmp_path / "repo"
    run_dir = repo / ".run" / "torchserve"
    run_dir.mkdir(parents=True)
    for name in ("key_file.json", "server.json"):
        (run_dir / name).symlink_to(torchserve.run_dir / name)
    (repo / "samples").mkdir()
    result = run_cli("predict", str(sample_images["cat"]), "--topk", "1", "--json",
                     cwd=repo / "samples")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["predictions"][0]["class_index"] in EXPECTED["cat"]
    # The same from outside the repo: no key, no server on the default port's answer.
    outside = run_cli("health", "--model", MODEL, "--url", torchserve.inference_url,
                      "--management-url", torchserve.management_url, cwd=tmp_path)
    assert outside.returncode == 1 and b"Unauthorized" in outside.stderr


def test_predict_table(ts_env, sample_images):
    result = run_cli("predict", str(sample_images["cat"]), str(sample_images["coffee"]),
                     "--topk", "2", env=ts_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "rank" in out and "probability" in out and "espresso" in out


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_predict_json_from_stdin(ts_env, sample_images, protocol):
    result = run_cli("predict", "-", "--json", "--protocol", protocol, "--topk", "1",
                     "--version", "1.0", env=ts_env, stdin=sample_images["coffee"].read_bytes())
    assert result.returncode == 0, result.stderr
    (doc,) = json.loads(result.stdout)
    assert doc["input"] == "<stdin>"
    assert doc["predictions"][0]["class_index"] in EXPECTED["coffee"]


def test_models_health_metrics(ts_env):
    models = run_cli("models", "--json", env=ts_env)
    assert models.returncode == 0, models.stderr
    listed = {m["model"]: m for m in json.loads(models.stdout)}
    assert MODEL in listed and all(m["ready"] for m in listed.values())
    health = run_cli("health", "--protocol", "grpc", env=ts_env)
    assert health.returncode == 0 and "READY" in health.stdout.decode()
    metrics = run_cli("metrics", "--json", "--name", "ts_inference_requests_total", env=ts_env)
    assert metrics.returncode == 0, metrics.stderr
    assert all(s["name"] == "ts_inference_requests_total" for s in json.loads(metrics.stdout))


def test_failures_exit_non_zero_with_one_line(ts_env, sample_images):
    cases = {
        "unknown model": (["predict", str(sample_images["cat"]), "--model", "nope"], 1),
        "bad image": (["predict", str(ROOT / "config" / "models.yaml")], 1),
        "missing file": (["predict", "/no/such/file.jpg"], 1),
        "not ready": (["health", "--model", "nope"], 3),
    }
    for name, (args, code) in cases.items():
        result = run_cli(*args, env=ts_env)
        assert result.returncode == code, (name, result.stderr)
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, lines)
    bad_token = run_cli("predict", str(sample_images["cat"]),
                        env={**ts_env, "TORCHSERVE_KEY_FILE": "", "TORCHSERVE_TOKEN": "nope"})
    assert bad_token.returncode == 1 and b"Unauthorized" in bad_token.stderr
    refused = run_cli("health", "--url", "http://127.0.0.1:9", "--management-url",
                      "http://127.0.0.1:9", "--retries", "0")
    assert refused.returncode == 1 and b"ConnectionFailed" in refused.stderr


def test_usage_error_exits_2():
    assert run_cli("predict").returncode == 2


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_tfserving_predict_and_health(tfserving_double, sample_images, protocol):
    env = {"TFSERVING_URL": tfserving_double.rest_url,
           "TFSERVING_GRPC_TARGET": tfserving_double.grpc_target}
    result = run_cli("predict", str(sample_images["cat"]), "--server", "tfserving",
                     "--protocol", protocol, "--label", "stable", "--json", env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["predictions"][0]["class_index"] in EXPECTED["cat"]
    health = run_cli("health", "--server", "tfserving", "--protocol", protocol, "--version", "1",
                     env=env, timeout=300)
    assert health.returncode == 0, health.stderr
    models = run_cli("models", "--server", "tfserving", env=env)
    assert b"AVAILABLE" in models.stdout


def test_predict_table_per_model_kind(ts_env, sample_images):
    faces = run_cli("predict", "--model", "face_detector", str(sample_images["astronaut"]),
                    str(sample_images["coffee"]), env=ts_env)
    assert faces.returncode == 0, faces.stderr
    out = faces.stdout.decode()
    assert "astronaut.jpg: 1 face(s)" in out and "coffee.jpg: 0 face(s)" in out
    assert "box (x1, y1, x2, y2)" in out
    texts = run_cli("predict", "--model", "minilm_embeddings", "A man is eating food.", "-",
                    env=ts_env, stdin=b"A man is eating a piece of bread.\n")
    assert texts.returncode == 0, texts.stderr
    lines = texts.stdout.decode().splitlines()
    assert lines[0].split() == ["text", "dim", "norm", "first", "values"]
    assert len(lines) == 3 and all(" 384 " in line and "1.000" in line for line in lines[1:])


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_predict_json_per_model_kind(ts_env, sample_images, protocol):
    faces = run_cli("predict", "--model", "face_detector", "--json", "--protocol", protocol,
                    str(sample_images["astronaut"]), env=ts_env)
    assert faces.returncode == 0, faces.stderr
    (doc,) = json.loads(faces.stdout)
    assert len(doc["faces"]) == 1 and len(doc["faces"][0]["landmarks"]) == 5
    texts = run_cli("predict", "--model", "minilm_embeddings", "--json", "--protocol", protocol,
                    "hello", env=ts_env)
    assert texts.returncode == 0, texts.stderr
    (doc,) = json.loads(texts.stdout)
    assert doc["input"] == "hello" and len(doc["embedding"]) == 384


def test_predict_any_model_prints_its_answer(ts_env, sample_images):
    # --kind raw: the bytes go as they are and the answer is printed as JSON.
    result = run_cli("predict", "--model", "face_detector", "--kind", "raw",
                     str(sample_images["astronaut"]), env=ts_env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.decode().split("\n", 1)[1])
    assert len(answer) == 1 and "box" in answer[0]
