"""End to end in Docker (opt-in, needs a Docker engine that can pull the official images):

    BUNDLE_DOCKER_E2E=1 .venv/bin/python -m pytest tests/test_docker_e2e.py -ra

`make up` (builds the images, starts the cpu profile, waits for the healthchecks), then
predictions against both containers with TorchServe's keys read from its run volume, the TF Serving
e2e tests pointed at the container, and `make down` at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

if os.environ.get("BUNDLE_DOCKER_E2E") != "1":
    pytest.skip("Docker e2e is opt-in: BUNDLE_DOCKER_E2E=1 runs `make up`, predictions against "
                "the containers and `make down` (needs a Docker engine)", allow_module_level=True)

import requests  # noqa: E402

from scripts import catalog, samples  # noqa: E402

pytestmark = pytest.mark.e2e_docker
ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ["docker", "compose", "-f", str(ROOT / "docker" / "compose.yaml"), "--profile", "cpu"]
TS = "http://127.0.0.1:" + os.environ.get("TS_INFERENCE_PORT", "8080")
TS_MANAGEMENT = "http://127.0.0.1:" + os.environ.get("TS_MANAGEMENT_PORT", "8081")
TS_METRICS = "http://127.0.0.1:" + os.environ.get("TS_METRICS_PORT", "8082")
TFS_REST = "http://127.0.0.1:" + os.environ.get("TFS_REST_PORT", "8501")
TFS_GRPC = "127.0.0.1:" + os.environ.get("TFS_GRPC_PORT", "8500")
HEALTHY_TIMEOUT_S = 900


def run(cmd: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=check)


def health(service: str) -> str:
    proc = run([*COMPOSE, "ps", "--all", "--format", "json", service], check=False)
    entries = []
    for line in proc.stdout.splitlines():  # one object per line (Compose >= 2.21) or one array
        if line.strip():
            parsed = json.loads(line)
            entries += parsed if isinstance(parsed, list) else [parsed]
    if not entries:
        return "absent"
    return entries[0].get("Health") or entries[0].get("State", "unknown")


@pytest.fixture(scope="module")
def stack():
    if shutil.which("docker") is None or run(["docker", "info"], check=False).returncode:
        pytest.fail("BUNDLE_DOCKER_E2E=1 but no Docker engine answers `docker info`")
    try:
        up = subprocess.run(["make", "up"], cwd=ROOT, timeout=3600)
        assert up.returncode == 0, "make up failed (its output is above)"
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        while time.monotonic() < deadline:
            states = {s: health(s) for s in ("torchserve", "tfserving")}
            if all(state == "healthy" for state in states.values()):
                break
            time.sleep(5)
        else:
            logs = run([*COMPOSE, "logs", "--tail", "60"], check=False).stdout
            pytest.fail(f"containers not healthy after {HEALTHY_TIMEOUT_S}s: {states}\n{logs}")
        yield
    finally:
        subprocess.run(["make", "down"], cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def keys(stack) -> dict[str, str]:
    """TorchServe's keys, read the way the README tells operators to."""
    proc = run([*COMPOSE, "exec", "-T", "torchserve", "cat",
                "/home/model-server/run/key_file.json"])
    doc = json.loads(proc.stdout)
    return {"inference": doc["inference"]["key"], "management": doc["management"]["key"]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("photo", sorted(samples.PHOTOS))
def test_torchserve_predicts_with_the_inference_key(keys, photo):
    data = samples.write_all()[photo].read_bytes()
    for model in catalog.for_server("torchserve"):
        resp = requests.post(f"{TS}/predictions/{model.name}", data=data,
                             headers=bearer(keys["inference"]), timeout=120)
        assert resp.status_code == 200, resp.text
        assert resp.json()[0]["class_index"] in samples.PHOTOS[photo][1]


def test_torchserve_token_authorization_is_on(keys):
    data = samples.write_all()["cat"].read_bytes()
    model = catalog.for_server("torchserve")[0].name
    assert requests.post(f"{TS}/predictions/{model}", data=data, timeout=60).status_code == 401
    wrong = requests.post(f"{TS}/predictions/{model}", data=data,
                          headers=bearer(keys["management"]), timeout=60)
    assert wrong.status_code == 401


def test_torchserve_workers_ready_and_model_api_off(keys):
    for model in catalog.for_server("torchserve"):
        resp = requests.get(f"{TS_MANAGEMENT}/models/{model.name}",
                            headers=bearer(keys["management"]), timeout=10)
        states = [w["status"] for entry in resp.json() for w in entry["workers"]]
        assert states and set(states) == {"READY"}
    register = requests.post(f"{TS_MANAGEMENT}/models?url=x.mar",
                             headers=bearer(keys["management"]), timeout=10)
    assert register.status_code in (400, 403, 405), register.text


def test_torchserve_metrics_port(keys):
    text = requests.get(f"{TS_METRICS}/metrics", timeout=10).text
    assert "ts_inference_requests_total" in text


def test_containers_run_unprivileged_with_read_only_model_stores(stack):
    assert run([*COMPOSE, "exec", "-T", "torchserve", "id", "-u"]).stdout.strip() == "1000"
    touch = run([*COMPOSE, "exec", "-T", "torchserve", "touch",
                 "/home/model-server/model-store/probe"], check=False)
    assert touch.returncode != 0
    # TF Serving's image has no `id`; the busybox probe has one.
    uid = run([*COMPOSE, "exec", "-T", "tfserving", "/usr/local/bin/busybox", "id", "-u"])
    assert uid.stdout.strip() == "10001"
    touch = run([*COMPOSE, "exec", "-T", "tfserving", "/usr/local/bin/busybox", "touch",
                 "/models/tf/probe"], check=False)
    assert touch.returncode != 0


def test_ports_published_on_loopback(stack):
    for service, port in (("torchserve", 8080), ("tfserving", 8501)):
        address = run([*COMPOSE, "port", service, str(port)]).stdout.strip()
        assert address.startswith("127.0.0.1:"), address


def test_tfserving_e2e_against_the_container(stack):
    """The TF Serving e2e tests (tests/test_tfserving_e2e.py), pointed at the container."""
    env = dict(os.environ, TFSERVING_REST_URL=TFS_REST, TFSERVING_GRPC_TARGET=TFS_GRPC)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_tfserving_e2e.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
