"""The compose `monitoring` profile: Prometheus config and the provisioned Grafana dashboard.

- docker/prometheus/prometheus.yml is checked by promtool (Debian's `prometheus` package) and
  every dashboard query is parsed by the same PromQL parser (`promtool check rules` on the queries
  written as recording rules).
- Every metric a dashboard query names must really be exposed: TorchServe's are compared with the
  live /metrics of the session's real TorchServe (after one prediction); TF Serving's with the
  names its source registers (and with a live TF Serving's exporter when TFSERVING_REST_URL is set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
DASHBOARDS = DOCKER / "grafana" / "dashboards"
PROVISIONING = DOCKER / "grafana" / "provisioning"
MODEL = "efficientnet_lite0"

# TF Serving's metrics in Prometheus form ('/' -> ':'), as registered in its source
# (tensorflow_serving/servables/tensorflow/util.cc: request_count, request_latency, runtime_latency;
# tensorflow_serving/batching/batching_session.cc: batching_session/queuing_latency). Histograms
# ("Sampler"s) are exported as _bucket/_sum/_count. Checked live when TFSERVING_REST_URL is set.
TFSERVING_COUNTERS = {":tensorflow:serving:request_count"}
TFSERVING_HISTOGRAMS = {":tensorflow:serving:request_latency",
                        ":tensorflow:serving:runtime_latency",
                        ":tensorflow:serving:batching_session:queuing_latency"}

PROMQL_WORDS = {
    # functions and aggregations the dashboard may use
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile",
    "quantile_over_time", "avg_over_time", "max_over_time", "clamp_min", "topk", "bottomk",
    "quantile", "abs", "vector", "scalar", "label_replace", "delta", "deriv",
    # keywords
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package "
                    "(apt-get install -y --no-install-recommends prometheus); .ci/run does this")
    return path


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
    return (expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
            .replace("$model", ".*"))


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', concrete(expr))   # string literals
    text = re.sub(r"\{[^}]*\}", "", text)                       # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                      # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)", text):
        word = match.group(1)
        if word not in PROMQL_WORDS and not re.fullmatch(r"\d.*", word):
            names.add(word)
    return names


def test_metric_name_extraction():
    expr = ('histogram_quantile(0.95, sum by (le, model_name) (rate(:tensorflow:serving:'
            'request_latency_bucket{model_name=~"$model"}[$__rate_interval]))) / 1000')
    assert metric_names(expr) == {":tensorflow:serving:request_latency_bucket"}
    expr = ('sum by (ModelName) (rate(BatchSize_sum{ModelName=~"$model"}[5m])) / '
            'max(QueueTime) + max by (ModelName) (quantile_over_time(0.5, PredictionTime[5m]))')
    assert metric_names(expr) == {"BatchSize_sum", "QueueTime", "PredictionTime"}


# --- Prometheus ------------------------------------------------------------------------------

def test_prometheus_config_passes_promtool():
    proc = subprocess.run([promtool(), "check", "config", "--syntax-only", str(PROMETHEUS_CONFIG)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_is_real(tmp_path):
    """Negative control: promtool rejects a broken scrape config."""
    bad = tmp_path / "prometheus.yml"
    bad.write_text("scrape_configs:\n  - job_name: x\n    scrape_interval: 1parsec\n")
    proc = subprocess.run([promtool(), "check", "config", "--syntax-only", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def test_prometheus_scrapes_both_servers():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ts, tfs = jobs["torchserve"], jobs["tfserving"]
    assert ts["metrics_path"] == "/metrics"
    assert ts["static_configs"][0]["targets"] == ["torchserve:8082"]
    monitoring = (ROOT / "config" / "tfserving" / "monitoring.config").read_text()
    path = re.search(r'path:\s*"([^"]+)"', monitoring).group(1)
    assert tfs["metrics_path"] == path
    assert tfs["static_configs"][0]["targets"] == ["tfserving:8501"]


def test_dashboard_queries_parse_as_promql(tmp_path):
    """Each query, as a recording rule, through promtool's PromQL parser."""
    rules = [{"record": f"dashboard:query_{i}", "expr": concrete(expr)}
             for i, (_, expr) in enumerate(queries())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Grafana -------------------------------------------------------------------------------

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


def exposed_names(exposition: str) -> set[str]:
    """Every metric name in a Prometheus text exposition: the sample names and, for each
    `# TYPE` line, the declared name (histograms expanded to their _bucket/_sum/_count series)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            names.add(name)
            if kind.strip() == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.match(r"[^{\s]+", line).group(0))
    return names


@pytest.fixture(scope="module")
def torchserve_metrics(torchserve, sample_images) -> str:
    resp = requests.post(f"{torchserve.inference_url}/predictions/{MODEL}",
                         data=sample_images["cat"].read_bytes(), headers=torchserve.auth(),
                         timeout=60)
    assert resp.status_code == 200, resp.text
    metrics = requests.get(f"{torchserve.metrics_url}/metrics", timeout=10)
    assert metrics.status_code == 200
    return metrics.text


def test_dashboard_torchserve_metrics_are_exposed(torchserve_metrics):
    exposed = exposed_names(torchserve_metrics)
    used = {name for _, expr in queries() for name in metric_names(expr)
            if not name.startswith(":tensorflow:")}
    assert used, "the dashboard has no TorchServe query"
    missing = sorted(used - exposed)
    assert not missing, (f"dashboard queries name metrics the live TorchServe does not expose: "
                         f"{missing}; exposed: {sorted(exposed)}")
    # After one prediction the per-model series the panels plot carry the model's label.
    for series in ("ts_inference_requests_total{", "BatchSize_bucket{", "PredictionTime{"):
        assert any(line.startswith(series) and MODEL in line
                   for line in torchserve_metrics.splitlines()), series


def test_dashboard_tfserving_metrics_are_known():
    known = set(TFSERVING_COUNTERS)
    for name in TFSERVING_HISTOGRAMS:
        known |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    used = {name for _, expr in queries() for name in metric_names(expr)
            if name.startswith(":tensorflow:")}
    assert used, "the dashboard has no TF Serving query"
    assert used <= known, sorted(used - known)


@pytest.mark.skipif(not os.environ.get("TFSERVING_REST_URL"),
                    reason="TFSERVING_REST_URL not set: TF Serving metric names checked against "
                           "its source only")
def test_dashboard_tfserving_metrics_are_exposed_live():
    base = os.environ["TFSERVING_REST_URL"].rstrip("/")
    monitoring = (ROOT / "config" / "tfserving" / "monitoring.config").read_text()
    path = re.search(r'path:\s*"([^"]+)"', monitoring).group(1)
    exposed = exposed_names(requests.get(base + path, timeout=10).text)
    used = {name for _, expr in queries() for name in metric_names(expr)
            if name.startswith(":tensorflow:")}
    assert used <= exposed, sorted(used - exposed)
