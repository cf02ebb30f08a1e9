"""clients.endpoints: the one home of ports, the key lookup order and the readiness rule.
Pure functions over files and JSON: these tests build the files TorchServe and the launcher
write; test_client_cli.py checks the same lookup against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients import endpoints

ROOT = Path(__file__).resolve().parents[2]


def _key_file(path: Path, inference="inf-1", management="mgmt-1") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"management": {"key": management, "expiration time": "x"},
                                "inference": {"key": inference, "expiration time": "x"},
                                "API": {"key": "api-1"}}))
    return path


def test_imports_only_the_standard_library():
    # The Docker healthcheck imports it in an image without the client's dependencies: here
    # without site-packages at all (-S), and every module it loaded must be the stdlib's.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import clients.endpoints; "
            "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)"
            " - set(sys.builtin_module_names)))")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(ROOT)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "['__main__', 'clients']"


def test_read_key_file(tmp_path):
    keys = endpoints.read_key_file(_key_file(tmp_path / "key_file.json"))
    assert keys == {"inference": "inf-1", "management": "mgmt-1", "api": "api-1"}
    (tmp_path / "bad.json").write_text('{"inference": {}}')
    with pytest.raises(endpoints.KeyFileError, match="not a TorchServe key_file.json"):
        endpoints.read_key_file(tmp_path / "bad.json")
    with pytest.raises(OSError):
        endpoints.read_key_file(tmp_path / "missing.json")


def test_key_lookup_order(tmp_path):
    repo = tmp_path / "repo"
    run_file = _key_file(repo / ".run" / "torchserve" / "key_file.json", "run-inf", "run-mgmt")
    env_file = _key_file(tmp_path / "env.json", "env-inf", "env-mgmt")
    arg_file = _key_file(tmp_path / "arg.json", "arg-inf", "arg-mgmt")
    start = repo / "clients" / "deeper"
    start.mkdir(parents=True)

    def token(kind="inference", env=None, **kw):
        return endpoints.token(kind, env=env or {}, start=start, **kw)

    env = {"TORCHSERVE_TOKEN": "shared", "TORCHSERVE_MANAGEMENT_TOKEN": "env-m",
           "TORCHSERVE_KEY_FILE": str(env_file)}
    assert token(env=env, token="explicit", key_file=arg_file) == "explicit"
    assert token("management", env=env, key_file=arg_file) == "arg-mgmt"
    assert token("management", env=env) == "env-m"
    assert token("inference", env=env) == "shared"
    assert token("inference", env={"TORCHSERVE_INFERENCE_TOKEN": "i", **env}) == "i"
    assert token("management", env={"TORCHSERVE_KEY_FILE": str(env_file)}) == "env-mgmt"
    assert token("management") == "run-mgmt"
    assert endpoints.key_source(env={}, start=start).key_file == run_file
    # Outside any repo with a run directory: no key, so no Authorization header.
    assert endpoints.key_source(env={}, start=tmp_path).origin == "none"
    assert endpoints.token(env={}, start=tmp_path) is None
    with pytest.raises(ValueError):
        endpoints.key_source("api", env={})


def test_addresses(tmp_path):
    env = {"TORCHSERVE_URL": "http://ts:9000/", "TFSERVING_GRPC_TARGET": "tf:1"}
    assert endpoints.address("TORCHSERVE_URL", "http://arg:1", env=env) == "http://arg:1"
    assert endpoints.address("TORCHSERVE_URL", env=env) == "http://ts:9000"
    assert endpoints.address("TFSERVING_GRPC_TARGET", env=env) == "tf:1"
    assert endpoints.address("TORCHSERVE_URL", env={}, start=tmp_path) == "http://127.0.0.1:8080"
    assert endpoints.address("TORCHSERVE_GRPC_MANAGEMENT_TARGET", env={},
                             start=tmp_path) == "127.0.0.1:7071"
    assert endpoints.address("TFSERVING_URL", env={}, start=tmp_path) == "http://127.0.0.1:8501"

    # The ports the launcher recorded win over the defaults.
    run_dir = tmp_path / ".run" / "torchserve"
    run_dir.mkdir(parents=True)
    ports = {"inference": 18080, "management": 18081, "metrics": 18082,
             "grpc_inference": 17070, "grpc_management": 17071}
    (run_dir / "server.json").write_text(json.dumps({"pid": 1, "host": "127.0.0.1",
                                                     "ports": ports, "models": []}))
    assert endpoints.address("TORCHSERVE_METRICS_URL", env={},
                             start=tmp_path) == "http://127.0.0.1:18082"
    assert endpoints.address("TORCHSERVE_GRPC_TARGET", env={}, start=tmp_path) == "127.0.0.1:17070"
    assert endpoints.address("TFSERVING_URL", env={}, start=tmp_path) == "http://127.0.0.1:8501"
    (run_dir / "server.json").write_text("{not json")
    assert endpoints.address("TORCHSERVE_URL", env={}, start=tmp_path) == "http://127.0.0.1:8080"


def _describe(*states, version="1.0"):
    return [{"modelName": "m", "modelVersion": version,
             "workers": [{"id": str(i), "status": s} for i, s in enumerate(states)]}]


@pytest.mark.parametrize("describe,ready", [
    (_describe("READY"), True),
    (_describe("READY", "READY"), True),
    (_describe(), False),                       # registered, no worker
    (_describe("READY", "UNLOADING"), False),   # ALL workers, not ANY
    (_describe("STARTING"), False),
    ([], False),
    (_describe("READY") + _describe("STARTING", version="2.0"), False),
])
def test_readiness_rule(describe, ready):
    assert endpoints.is_ready(describe) is ready
    assert bool(endpoints.not_ready_reason(describe)) is not ready


def test_readiness_of_one_version():
    describe = _describe("READY") + _describe("STARTING", version="2.0")
    assert endpoints.is_ready(describe, "1.0")
    assert not endpoints.is_ready(describe, "2.0")
    assert endpoints.not_ready_reason(describe, "2.0") == "1 of 1 workers not READY (STARTING)"
    assert endpoints.not_ready_reason(describe, "3.0") == "no workers"
