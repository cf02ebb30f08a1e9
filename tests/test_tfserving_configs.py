"""TF Serving configs (config/tfserving/, scripts/build/tf_configs.py) and the `make serve`
launcher's decisions (scripts/serve/tfserving.py). No TF Serving needed: the server itself is
tested by the opt-in tests/test_tfserving_e2e.py."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from scripts import catalog
from scripts.build import tf_configs
from scripts.serve import tfserving as launcher
from scripts.catalog import MODEL_STORE, ROOT


def _parse_models_config(text: str):
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


@pytest.fixture(scope="module")
def committed():
    """ModelServerConfig parsed from the committed config/tfserving/models.config."""
    return _parse_models_config((tf_configs.OUT_DIR / tf_configs.MODELS_CONFIG).read_text())


def test_committed_configs_are_current():
    """Regenerating from the catalog gives byte-identical files (run python -m scripts.build.tf_configs
    after editing config/models.yaml)."""
    assert tf_configs.stale() == []


def test_regenerating_twice_is_identical(tmp_path):
    tf_configs.write(tmp_path)
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert tf_configs.write(tmp_path) == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first
    assert set(first) == {tf_configs.MODELS_CONFIG, tf_configs.BATCHING_CONFIG,
                          tf_configs.MONITORING_CONFIG}


def test_models_config_matches_the_catalog(committed):
    models = {m.name: m for m in catalog.for_server("tfserving")}
    entries = {c.name: c for c in committed.model_config_list.config}
    assert set(entries) == set(models)
    for name, entry in entries.items():
        model = models[name]
        assert entry.base_path == f"/models/tf/{name}"
        assert entry.model_platform == "tensorflow"
        assert entry.model_version_policy.WhichOneof("policy_choice") == "specific"
        versions = list(entry.model_version_policy.specific.versions)
        assert model.tf_version in versions
        labels = dict(entry.version_labels)
        assert labels == model.tfserving.get("version_labels", {})
        # TF Serving rejects a label on a version it does not serve.
        assert set(labels.values()) <= set(versions)


def test_served_versions_exist_after_archive(committed, artifacts):
    """Every base_path/version of models.config is a SavedModel in the local store (the
    /models prefix is where docker/compose.yaml mounts model_store/)."""
    for entry in committed.model_config_list.config:
        relative = PurePosixPath(entry.base_path).relative_to(tf_configs.DEFAULT_PREFIX)
        base = MODEL_STORE / relative
        for version in entry.model_version_policy.specific.versions:
            assert (base / str(version) / "saved_model.pb").is_file(), f"{base}/{version}"


def test_batching_and_monitoring_configs_parse():
    batching = text_format.Parse(
        (tf_configs.OUT_DIR / tf_configs.BATCHING_CONFIG).read_text(),
        tf_configs.BatchingParameters(),
    )
    models = catalog.for_server("tfserving")
    # Every request the handler accepts (max_instances_per_request) fits in one TF batch.
    assert batching.max_batch_size.value == max(m.max_instances_per_request for m in models)
    assert batching.batch_timeout_micros.value == max(
        m.torchserve.max_batch_delay_ms * 1000 for m in models
    )
    assert batching.num_batch_threads.value >= 1
    monitoring = text_format.Parse(
        (tf_configs.OUT_DIR / tf_configs.MONITORING_CONFIG).read_text(),
        tf_configs.MonitoringConfig(),
    )
    assert monitoring.prometheus_config.enable
    assert monitoring.prometheus_config.path == tf_configs.PROMETHEUS_PATH


def test_unknown_fields_are_refused():
    """The declared messages catch typos TF Serving would reject at startup."""
    with pytest.raises(text_format.ParseError):
        text_format.Parse("max_batch_sise { value: 8 }", tf_configs.BatchingParameters())


def test_prefix_is_a_parameter():
    text = tf_configs.render(prefix="/srv/store/")[tf_configs.MODELS_CONFIG]
    for entry in _parse_models_config(text).model_config_list.config:
        assert entry.base_path == f"/srv/store/tf/{entry.name}"


def test_canary_label_adds_its_version():
    (model,) = catalog.for_server("tfserving")[:1]
    rolled = dataclasses.replace(
        model, tf_version=2, tfserving={"version_labels": {"stable": 1, "canary": 2}}
    )
    entry = tf_configs.model_server_config([rolled]).model_config_list.config[0]
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 1, "canary": 2}


def test_keep_versions_stay_loaded_without_a_label():
    (model,) = catalog.for_server("tfserving")[:1]
    promoted = dataclasses.replace(
        model, tf_version=2, tfserving={"version_labels": {"stable": 2}, "keep_versions": [1]}
    )
    entry = tf_configs.model_server_config([promoted]).model_config_list.config[0]
    assert list(entry.model_version_policy.specific.versions) == [1, 2]
    assert dict(entry.version_labels) == {"stable": 2}
    broken = dataclasses.replace(model, tfserving={"keep_versions": ["1"]})
    with pytest.raises(catalog.CatalogError, match="keep_versions"):
        tf_configs.model_server_config([broken])


@pytest.mark.parametrize("bad", [0, "1", -3, True])
def test_bad_version_label_is_a_catalog_error(bad):
    (model,) = catalog.for_server("tfserving")[:1]
    broken = dataclasses.replace(model, tfserving={"version_labels": {"stable": bad}})
    with pytest.raises(catalog.CatalogError, match="version_labels.stable"):
        tf_configs.model_server_config([broken])


# --------------------------------------------------------------------------- launcher


def _run_launcher(*args: str, path: str, extra_env: dict | None = None, timeout: float = 60):
    env = {**os.environ, "PATH": path, **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "scripts.serve.tfserving", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_serve_without_docker_or_binary_prints_one_line_and_succeeds(tmp_path):
    result = _run_launcher("start", "--run-dir", str(tmp_path), path=str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "TF Serving skipped" in lines[0]
    assert "docker" in lines[0].lower() and launcher.BINARY in lines[0]


def test_native_config_points_at_the_local_store(tmp_path):
    paths = launcher.render_native(tmp_path)
    config = _parse_models_config(paths[tf_configs.MODELS_CONFIG].read_text())
    for entry in config.model_config_list.config:
        assert Path(entry.base_path) == MODEL_STORE / "tf" / entry.name
        assert Path(entry.base_path).is_absolute()
    assert set(paths) == {tf_configs.MODELS_CONFIG, tf_configs.BATCHING_CONFIG,
                          tf_configs.MONITORING_CONFIG}


FAKE_SERVER = """\
#!{python}
# Stand-in for tensorflow_model_server: records its argv, answers the model status endpoint.
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
open({argv_file!r}, "w").write(json.dumps({{"pid": os.getpid(), "argv": sys.argv[1:]}}))
class Status(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"model_version_status": [{{"version": "1", "state": "AVAILABLE"}}]}})
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(args["rest_api_port"])), Status).serve_forever()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_native_start_and_stop(tmp_path, artifacts):
    """With tensorflow_model_server on PATH (a stand-in here) `start` passes the config flags,
    waits for AVAILABLE, and `stop` ends it."""
    bin_dir, run_dir = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    argv_file = tmp_path / "argv.json"
    fake = bin_dir / launcher.BINARY
    fake.write_text(FAKE_SERVER.format(python=sys.executable, argv_file=str(argv_file)))
    fake.chmod(0o755)
    env = {"TFS_REST_PORT": str(_free_port()), "TFS_GRPC_PORT": str(_free_port())}
    started = _run_launcher("start", "--mode", "native", "--run-dir", str(run_dir),
                            "--timeout", "30", path=str(bin_dir), extra_env=env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "AVAILABLE" in started.stdout
        argv = json.loads(argv_file.read_text())["argv"]
        assert f"--rest_api_port={env['TFS_REST_PORT']}" in argv
        assert f"--port={env['TFS_GRPC_PORT']}" in argv
        assert "--enable_batching=true" in argv
        for flag, name in (("--model_config_file", tf_configs.MODELS_CONFIG),
                           ("--batching_parameters_file", tf_configs.BATCHING_CONFIG),
                           ("--monitoring_config_file", tf_configs.MONITORING_CONFIG)):
            assert f"{flag}={run_dir / name}" in argv
    finally:
        stopped = _run_launcher("stop", "--mode", "native", "--run-dir", str(run_dir),
                                path=str(bin_dir), extra_env=env)
        leftover = json.loads(argv_file.read_text())["pid"] if argv_file.is_file() else None
        alive = leftover is not None and _alive(leftover)
        if alive:  # the launcher lost track of it: do not leak a process from the test
            os.kill(leftover, signal.SIGKILL)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not alive, "stop left the server running"
    assert not (run_dir / "server.json").exists()


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def model_service():
    """An in-process gRPC ModelService that records reload requests (answer set per test)."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    class Recorder(model_service_pb2_grpc.ModelServiceServicer):
        configs: list = []
        error: str = ""

        def HandleReloadConfigRequest(self, request, context):
            self.configs.append(request.config)
            reply = model_management_pb2.ReloadConfigResponse()
            if self.error:
                reply.status.error_code = 9  # FAILED_PRECONDITION, as TF Serving answers
                reply.status.error_message = self.error
            return reply

    servicer = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


def test_reload_sends_the_catalog_config(model_service, tmp_path):
    target, servicer = model_service
    launcher.reload(target, run_dir=tmp_path)
    (config,) = servicer.configs
    assert config == _parse_models_config(
        (tf_configs.OUT_DIR / tf_configs.MODELS_CONFIG).read_text()
    )


def test_reload_refused_is_reported(model_service, tmp_path):
    target, servicer = model_service
    servicer.error = "Request to assign label to version 2 of model m, which is not available"
    with pytest.raises(launcher.LaunchError, match="refused the config: Request to assign"):
        launcher.reload(target, run_dir=tmp_path)
