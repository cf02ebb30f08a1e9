"""The compose `monitoring` profile: Prometheus config and the provisioned Grafana dashboard.

- docker/prometheus/prometheus.yml passes promtool, and every dashboard query passes the same
  PromQL parser (`promtool check rules`, the queries written as recording rules).
- Every dashboard query returns data from a real Prometheus (Debian's package, unpacked into
  .venv/bin by `make`) that scrapes the test session's real TorchServe while it answers good,
  bad and malformed requests. TF Serving cannot run here, so its side is scraped from
  `TFServingMetricsDouble` (the metric names and labels TF Serving's source registers), or from a
  real TF Serving when TFSERVING_REST_URL is set.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
DASHBOARDS = DOCKER / "grafana" / "dashboards"
PROVISIONING = DOCKER / "grafana" / "provisioning"
TFSERVING_MONITORING = ROOT / "config" / "tfserving" / "monitoring.config"
MODEL = "efficientnet_lite0"
# Grafana's $__rate_interval is at least four scrape intervals; the test scrapes every second and
# evaluates right after the traffic, so a window of a few scrapes holds it.
SCRAPE_INTERVAL_S = 1
RATE_WINDOW = "30s"


def prometheus_tool(name: str) -> str:
    """`prometheus` or `promtool`: .venv/bin first (where `make` unpacks them), then PATH."""
    for path in (Path(sys.executable).parent / name, shutil.which(name)):
        if path and os.access(path, os.X_OK):
            return str(path)
    pytest.fail(f"{name} not found in .venv/bin or on PATH: run `make prometheus` "
                "(it unpacks Debian's prometheus package into .venv/bin)")


def dashboards() -> list[dict]:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, f"no dashboards in {DASHBOARDS}"
    return [json.loads(f.read_text()) for f in files]


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel of every dashboard."""
    out = []
    for dashboard in dashboards():
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                out.append((panel["title"], target["expr"]))
    return out


def concrete(expr: str) -> str:
    """Grafana's variables replaced by values, so the query is plain PromQL."""
    return (expr.replace("$__rate_interval", RATE_WINDOW).replace("$__interval", RATE_WINDOW)
            .replace("$model", ".*"))


def tfserving_metrics_path() -> str:
    return re.search(r'path:\s*"([^"]+)"', TFSERVING_MONITORING.read_text()).group(1)


# --- Prometheus config and query syntax ------------------------------------------------------

def test_prometheus_config_passes_promtool():
    proc = subprocess.run([prometheus_tool("promtool"), "check", "config", "--syntax-only",
                           str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_rejects_a_broken_config(tmp_path):
    """Negative control for the test above."""
    bad = tmp_path / "prometheus.yml"
    bad.write_text("scrape_configs:\n  - job_name: x\n    scrape_interval: 1parsec\n")
    proc = subprocess.run([prometheus_tool("promtool"), "check", "config", "--syntax-only",
                           str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def test_prometheus_scrapes_both_servers():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ts, tfs = jobs["torchserve"], jobs["tfserving"]
    assert ts["metrics_path"] == "/metrics"
    assert ts["static_configs"][0]["targets"] == ["torchserve:8082"]
    assert tfs["metrics_path"] == tfserving_metrics_path()
    assert tfs["static_configs"][0]["targets"] == ["tfserving:8501"]


def test_dashboard_queries_parse_as_promql(tmp_path):
    """Each query, as a recording rule, through promtool's PromQL parser."""
    rules = [{"record": f"dashboard:query_{i}", "expr": concrete(expr)}
             for i, (_, expr) in enumerate(queries())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([prometheus_tool("promtool"), "check", "rules", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Grafana ---------------------------------------------------------------------------------

def test_grafana_provisioning_matches_the_dashboard_and_compose():
    (datasource,) = yaml.safe_load(
        (PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(
        (PROVISIONING / "dashboards" / "bundle.yml").read_text())["providers"]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    mounts = {v["target"]: v["source"] for v in compose["services"]["grafana"]["volumes"]
              if isinstance(v, dict)}
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    for dashboard in dashboards():
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            uids = {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]}
            assert uids == {datasource["uid"]}, panel["title"]


def test_dashboard_covers_rate_errors_latency_queue_batch():
    (dashboard,) = dashboards()
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"] if p["type"] != "row")
    for topic in ("request rate", "errors", "latency", "queue", "batch"):
        assert topic in titles, topic
    for server in ("torchserve", "tf serving"):
        assert titles.count(server) >= 4, server
    # Per model: a model variable, used by the queries of models' metrics.
    (variable,) = dashboard["templating"]["list"]
    assert variable["name"] == "model"
    per_model = [e for _, e in queries() if "$model" in e]
    assert len(per_model) >= 10


# --- Every dashboard query returns data from a real Prometheus -------------------------------

class TFServingMetricsDouble:
    """A test double of TF Serving's Prometheus exporter (TF Serving cannot run here).

    It serves the metrics TF Serving registers, named and labelled as its exporter writes them
    ('/' -> ':'; tensorflow_serving/servables/tensorflow/util.cc: request_count, request_latency,
    runtime_latency; tensorflow_serving/batching/batching_session.cc: queuing_latency). Every
    scrape counts one more request, so rates are positive. Latencies are in microseconds.
    """

    HISTOGRAMS = {
        ":tensorflow:serving:request_latency": {"model_name": MODEL, "API": "predict",
                                                "entrypoint": "REST"},
        ":tensorflow:serving:runtime_latency": {"model_name": MODEL, "API": "Predict",
                                                "runtime": "TF1 Session"},
        ":tensorflow:serving:batching_session:queuing_latency": {"thread_pool_name":
                                                                 "model_batch_threads"},
    }
    BUCKETS_US = (1_000, 10_000, 100_000)
    OBSERVED_US = 5_000

    def __init__(self):
        self.scrapes = 0
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = double.exposition().encode()
                self.send_response(200 if self.path == tfserving_metrics_path() else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def exposition(self) -> str:
        self.scrapes += 1
        n = self.scrapes
        lines = ["# TYPE :tensorflow:serving:request_count counter",
                 f':tensorflow:serving:request_count{{model_name="{MODEL}",status="OK"}} {n}',
                 f':tensorflow:serving:request_count{{model_name="{MODEL}",'
                 f'status="INVALID_ARGUMENT"}} {n // 2}']
        for name, labels in self.HISTOGRAMS.items():
            tags = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"# TYPE {name} histogram")
            for le in (*self.BUCKETS_US, "+Inf"):
                count = n if le == "+Inf" or le >= self.OBSERVED_US else 0
                lines.append(f'{name}_bucket{{{tags},le="{le}"}} {count}')
            lines += [f"{name}_sum{{{tags}}} {n * self.OBSERVED_US}", f"{name}_count{{{tags}}} {n}"]
        return "\n".join(lines) + "\n"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tfserving_target():
    """host:port of TF Serving's REST port: a real one when TFSERVING_REST_URL is set."""
    if os.environ.get("TFSERVING_REST_URL"):
        yield urlsplit(os.environ["TFSERVING_REST_URL"]).netloc
        return
    with TFServingMetricsDouble() as double:
        yield double.target


@pytest.fixture(scope="module")
def prometheus(torchserve, tfserving_target, tmp_path_factory) -> str:
    """A real Prometheus scraping the session's TorchServe and TF Serving every second."""
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [
            {"job_name": "torchserve", "metrics_path": "/metrics",
             "static_configs": [{"targets": [urlsplit(torchserve.metrics_url).netloc]}]},
            {"job_name": "tfserving", "metrics_path": tfserving_metrics_path(),
             "static_configs": [{"targets": [tfserving_target]}]},
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [prometheus_tool("prometheus"), f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address={urlsplit(url).netloc}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not ready(url):
            assert proc.poll() is None, (work / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus not ready after 60 s"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def query(prometheus: str, expr: str) -> list[dict]:
    resp = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["result"]


def wait_for(prometheus: str, expr: str, timeout: float = 60.0) -> list[dict]:
    """The query's series that hold a number (not NaN), once there is one; [] at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        numbers = [s for s in query(prometheus, expr) if math.isfinite(float(s["value"][1]))]
        if numbers or time.monotonic() > deadline:
            return numbers
        time.sleep(SCRAPE_INTERVAL_S)


def send_traffic(torchserve, image: bytes) -> None:
    """Good predictions, a bad image (the handler's 4xx) and a form post (the frontend's 500)."""
    url = f"{torchserve.inference_url}/predictions/{MODEL}"
    for _ in range(4):
        resp = requests.post(url, data=image, headers=torchserve.auth(), timeout=60)
        assert resp.status_code == 200, resp.text
    resp = requests.post(url, data=b"not an image", headers=torchserve.auth(), timeout=60)
    assert resp.status_code == 400, resp.text
    # TorchServe 0.12's frontend fails image bytes labelled as a form before any handler runs.
    resp = requests.post(url, data=image, timeout=60, headers={
        **torchserve.auth(), "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 500, resp.text


def test_every_dashboard_query_returns_data(prometheus, torchserve, sample_images):
    image = sample_images["cat"].read_bytes()
    # Two rounds a few scrapes apart: rate() needs two samples, and counters that appear with
    # the first error (Requests5XX, RequestErrors) need a second round to move.
    send_traffic(torchserve, image)
    assert wait_for(prometheus, 'up{job="torchserve"} == 1'), "TorchServe never scraped"
    time.sleep(3 * SCRAPE_INTERVAL_S)
    send_traffic(torchserve, image)
    empty = [f"{title}: {expr}" for title, expr in queries()
             if not wait_for(prometheus, concrete(expr))]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_data_check_can_fail(prometheus):
    """Negative control: a query on a metric nobody exposes finds no data."""
    assert wait_for(prometheus, 'rate(ts_no_such_metric_total[30s])', timeout=3) == []
