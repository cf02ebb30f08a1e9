"""End to end in Docker, against the stack `make docker-e2e` (scripts/serve/docker_e2e.sh) brings up:
TorchServe from docker/compose.yaml's cpu profile and the monitoring profile's Prometheus, with
the published ports in TS_*_PORT / PROMETHEUS_PORT and DOCKER_HOST/DOCKER_CONFIG of the engine.

    make docker-e2e                      # everything: engine, stand-ins, compose up, these tests
    BUNDLE_DOCKER_E2E=1 .venv/bin/python -m pytest tests/test_docker_e2e.py -ra   # stack already up

Opt-in (BUNDLE_DOCKER_E2E=1). What only a real container shows: answers through the published
loopback port with the key `make key` prints, the healthcheck following the workers, the uid and
the read-only store, the restart policy after the server is killed, Prometheus scraping the container and
the dashboard's TorchServe queries, and `make serve` / `make stop` going through compose. The
TF Serving service is not part of it (its binary exists nowhere here: docs/docker.md).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

if os.environ.get("BUNDLE_DOCKER_E2E") != "1":
    pytest.skip("Docker e2e is opt-in: `make docker-e2e` (or BUNDLE_DOCKER_E2E=1 against a stack "
                "that is up)", allow_module_level=True)

import requests  # noqa: E402

from scripts import catalog  # noqa: E402
from scripts.build import samples
from tests.test_monitoring import concrete, queries  # noqa: E402

pytestmark = pytest.mark.e2e_docker
ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ["docker", "compose", "-f", str(ROOT / "docker" / "compose.yaml")]
HOST = "http://127.0.0.1:"
TS = HOST + os.environ.get("TS_INFERENCE_PORT", "8080")
TS_MANAGEMENT = HOST + os.environ.get("TS_MANAGEMENT_PORT", "8081")
TS_METRICS = HOST + os.environ.get("TS_METRICS_PORT", "8082")
PROMETHEUS = HOST + os.environ.get("PROMETHEUS_PORT", "9090")
HEALTHCHECK = ["python", "/home/model-server/bundle/docker/torchserve/healthcheck.py"]
RELOAD_TIMEOUT_S = 600  # a container start loads every model (start_period is 180 s)
MODELS = catalog.for_server("torchserve")


def run(cmd: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=check)


def container() -> str:
    ids = run([*COMPOSE, "--profile", "cpu", "ps", "--all", "-q", "torchserve"]).stdout.split()
    assert len(ids) == 1, f"expected one torchserve container, got {ids}"
    return ids[0]


def inspect(cid: str) -> dict:
    return json.loads(run(["docker", "inspect", cid]).stdout)[0]


def wait_healthy(timeout: float = RELOAD_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = inspect(container())["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return state
        time.sleep(3)
    logs = run([*COMPOSE, "--profile", "cpu", "logs", "--tail", "80", "torchserve"],
               check=False).stdout
    pytest.fail(f"torchserve not healthy after {timeout:.0f}s: {state}\n{logs}")


def make_key() -> str:
    """The inference key the way the README tells users to get it."""
    proc = run(["make", "--no-print-directory", "-s", "key"])
    return proc.stdout.strip().splitlines()[-1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def management_key() -> str:
    proc = run([*COMPOSE, "--profile", "cpu", "exec", "-T", "torchserve", "cat",
                "/home/model-server/run/key_file.json"])
    return json.loads(proc.stdout)["management"]["key"]


def predict(model, key: str) -> requests.Response:
    body, content_type = samples.payload(model)
    return requests.post(f"{TS}/predictions/{model.name}", data=body, timeout=120,
                         headers={**bearer(key), "Content-Type": content_type})


def check_answer(model, answer) -> None:
    if model.handler == "image_classifier":
        top = answer[0] if isinstance(answer, list) else answer
        assert top["class_index"] in samples.PHOTOS[samples.PAYLOADS[model.handler][0]][1], answer
    elif model.handler == "text_embedder":
        assert len(answer) == 384 and all(isinstance(x, float) for x in answer)
    elif model.handler == "face_detector":
        expected = samples.FACES[samples.PAYLOADS[model.handler][0]][1]
        assert len(answer) == expected, answer
        assert {"box", "score", "landmarks"} <= set(answer[0])
    else:
        pytest.fail(f"{model.name}: no check for handler {model.handler}")


@pytest.fixture(scope="module")
def stack():
    if run(["docker", "info"], check=False).returncode:
        pytest.fail("BUNDLE_DOCKER_E2E=1 but no Docker engine answers `docker info`")
    samples.write_all()
    wait_healthy()


@pytest.fixture(scope="module")
def key(stack) -> str:
    return make_key()


def test_every_catalog_model_answers_through_the_loopback_port(key):
    assert MODELS, "no TorchServe model in the catalog"
    for model in MODELS:
        resp = predict(model, key)
        assert resp.status_code == 200, f"{model.name}: {resp.status_code} {resp.text[:500]}"
        check_answer(model, resp.json())


def test_a_request_without_or_with_a_wrong_token_is_refused(key):
    model = MODELS[0]
    body, content_type = samples.payload(model)
    url = f"{TS}/predictions/{model.name}"
    missing = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=60)
    assert missing.status_code in (400, 401), missing.text
    wrong = requests.post(url, data=body, timeout=60,
                          headers={**bearer(management_key()), "Content-Type": content_type})
    assert wrong.status_code in (400, 401), wrong.text


def test_ports_are_published_on_loopback_only(stack):
    for port in (8080, 8081, 8082, 7070, 7071):
        address = run([*COMPOSE, "--profile", "cpu", "port", "torchserve", str(port)]).stdout
        assert address.strip().startswith("127.0.0.1:"), (port, address)


def test_server_runs_unprivileged_with_a_read_only_model_store(stack):
    exec_ = [*COMPOSE, "--profile", "cpu", "exec", "-T", "torchserve"]
    assert run([*exec_, "id", "-u"]).stdout.strip() == "1000"
    # Every process of the container, TorchServe's Java frontend and the Python workers included.
    uids = run([*exec_, "sh", "-c", "for p in /proc/[0-9]*; do stat -c %u $p; done"]).stdout
    assert set(uids.split()) == {"1000"}, uids
    touch = run([*exec_, "touch", "/home/model-server/model-store/probe"], check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch.stderr
    store = [m for m in inspect(container())["Mounts"]
             if m["Destination"] == "/home/model-server/model-store"]
    assert store and store[0]["RW"] is False, store


def healthcheck_until(wanted_exit: int, timeout: float = 180) -> subprocess.CompletedProcess:
    exec_ = [*COMPOSE, "--profile", "cpu", "exec", "-T", "torchserve"]
    deadline = time.monotonic() + timeout
    while True:
        proc = run([*exec_, *HEALTHCHECK], check=False)
        if proc.returncode == wanted_exit or time.monotonic() > deadline:
            return proc
        time.sleep(2)


def test_healthcheck_is_healthy_only_while_the_workers_are_ready(key):
    assert healthcheck_until(0).stdout.strip() == "ready"
    model = MODELS[-1]
    url = f"{TS_MANAGEMENT}/models/{model.name}"
    headers = bearer(management_key())
    # Asynchronous scaling: TorchServe 0.12 answers a synchronous scale to zero workers with
    # 500 "Failed to start workers" although it scales down.
    scaled = requests.put(f"{url}?min_worker=0&max_worker=0", headers=headers, timeout=60)
    assert scaled.status_code == 202, scaled.text
    try:
        down = healthcheck_until(1)
        assert down.returncode == 1 and model.name in down.stdout, down.stdout
        # Docker's own probe sees it too (interval 15 s): a failing entry naming the model.
        since = time.time()
        deadline = time.monotonic() + 60
        failing = []
        while not failing and time.monotonic() < deadline:
            time.sleep(3)
            log = inspect(container())["State"]["Health"]["Log"]
            failing = [e for e in log if e["ExitCode"] == 1 and model.name in e["Output"]
                       and _epoch(e["Start"]) >= since - 1]
        assert failing, log
    finally:
        restored = requests.put(
            f"{url}?min_worker={model.workers.min}&max_worker={model.workers.max}",
            headers=headers, timeout=60)
    assert restored.status_code == 202, restored.text
    assert healthcheck_until(0).stdout.strip() == "ready"
    assert predict(model, key).status_code == 200


def test_healthcheck_survives_a_refused_management_key(key):
    """An expired or rotated-away management key: the check gets a fresh one with the API key
    (TorchServe's token API rewrites key_file.json) and still reports the workers' state."""
    exec_ = [*COMPOSE, "--profile", "cpu", "exec", "-T", "torchserve"]
    key_file = "/home/model-server/run/key_file.json"
    spoil = ("import json, sys; p = sys.argv[1]; d = json.load(open(p)); "
             "d['management']['key'] = 'expired'; json.dump(d, open(p, 'w'))")
    run([*exec_, "python", "-c", spoil, key_file])
    assert json.loads(run([*exec_, "cat", key_file]).stdout)["management"]["key"] == "expired"
    once = run([*exec_, *HEALTHCHECK], check=False)  # one run: a retry would hide a failure
    assert once.returncode == 0 and once.stdout.strip() == "ready", once.stdout + once.stderr
    fresh = json.loads(run([*exec_, "cat", key_file]).stdout)["management"]["key"]
    assert fresh != "expired"
    resp = requests.get(f"{TS_MANAGEMENT}/models", headers=bearer(fresh), timeout=10)
    assert resp.status_code == 200, resp.text
    assert predict(MODELS[0], key).status_code == 200  # the inference key is unchanged


def _epoch(stamp: str) -> float:
    """Docker's RFC 3339 timestamps (nanoseconds) as epoch seconds."""
    from datetime import datetime

    head, _, rest = stamp.partition(".")
    zone = rest.lstrip("0123456789") or "Z"
    parsed = datetime.fromisoformat(head + (zone if zone != "Z" else "+00:00"))
    return parsed.timestamp()


def prometheus_query(expr: str) -> list:
    resp = requests.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["result"]


def test_prometheus_scrapes_torchserve_and_the_dashboard_queries_return_data(key):
    # Traffic for every panel: answers for each model, and a 4xx (an empty text) for the errors.
    for _ in range(3):
        for model in MODELS:
            assert predict(model, key).status_code == 200
    text_model = next(m for m in MODELS if m.handler == "text_embedder")
    empty = requests.post(f"{TS}/predictions/{text_model.name}", data=b" ", timeout=60,
                          headers={**bearer(key), "Content-Type": "text/plain"})
    assert 400 <= empty.status_code < 500, empty.text
    exposed = requests.get(f"{TS_METRICS}/metrics", timeout=10).text
    # TF Serving's metrics are named ":tensorflow:..."; no TF Serving runs here.
    torchserve_queries = [(title, expr) for title, expr in queries() if ":tensorflow" not in expr]
    assert torchserve_queries
    # rate() needs two scrapes (15 s apart) after the traffic: poll for up to two minutes.
    deadline = time.monotonic() + 120
    while True:
        up = prometheus_query('up{job="torchserve"}')
        empty_queries = [(title, expr) for title, expr in torchserve_queries
                         if not prometheus_query(concrete(expr))]
        if (up and up[0]["value"][1] == "1" and not empty_queries) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert up and up[0]["value"][1] == "1", up
    # A query may only be empty when TorchServe itself exposes none of its metrics (a counter
    # that never counted: no 5xx happened here).
    sampled = {line.split("{")[0].split()[0] for line in exposed.splitlines()
               if line.strip() and not line.startswith("#")}
    unexplained = [(title, expr) for title, expr in empty_queries
                   if any(re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", expr)
                          for name in sampled)]
    assert not unexplained, unexplained
    assert len(empty_queries) <= 1, empty_queries


def test_a_killed_server_comes_back_under_the_restart_policy(stack):
    """SIGKILL of the server inside the container, as the kernel's OOM killer delivers it.

    Not `docker kill` of the container: Docker counts that as a manual stop and disables the
    restart policy until the next start (docker-kill(1)), so no policy brings it back."""
    cid = container()
    before = inspect(cid)
    assert before["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    kill_java = ("for p in /proc/[0-9]*; do grep -qa org.pytorch.serve $p/cmdline 2>/dev/null "
                 "&& kill -KILL ${p#/proc/} && echo ${p#/proc/}; done")
    killed = run([*COMPOSE, "--profile", "cpu", "exec", "-T", "torchserve", "sh", "-c",
                  kill_java], check=False)
    assert killed.stdout.split(), f"no TorchServe frontend found: {killed.stderr}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        after = inspect(cid)
        if after["RestartCount"] > before["RestartCount"] and after["State"]["Running"]:
            break
        time.sleep(2)
    else:
        pytest.fail(f"not restarted after the server was killed: {after['State']}")
    wait_healthy()
    key = make_key()  # a new start writes new keys
    for model in MODELS:
        assert predict(model, key).status_code == 200, model.name


def test_make_serve_uses_compose_and_make_stop_stops_it(stack):
    stop = run(["make", "--no-print-directory", "stop"], timeout=300)
    assert inspect(container())["State"]["Running"] is False, stop.stdout
    serve = run(["make", "--no-print-directory", "serve", "SERVICES=torchserve"], timeout=1800,
                check=False)
    assert serve.returncode == 0, serve.stdout[-3000:] + serve.stderr[-3000:]
    assert "Docker engine found: serving with docker compose" in serve.stdout, serve.stdout
    assert inspect(container())["State"]["Health"]["Status"] == "healthy"
    key = make_key()
    for model in MODELS:
        resp = predict(model, key)
        assert resp.status_code == 200, resp.text
        check_answer(model, resp.json())
