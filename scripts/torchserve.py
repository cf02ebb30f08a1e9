"""The one launcher for TorchServe, shared by `make serve`, the tests and the benchmarks.

    python -m scripts.torchserve start [--run-dir DIR] [--ports free|default] [--models a,b]
    python -m scripts.torchserve stop  [--run-dir DIR]
    python -m scripts.torchserve status|key|curl [--run-dir DIR]

Each instance lives in its own run directory: the rendered config.properties, key_file.json
(TorchServe writes it to its working directory), logs, its own temp dir (TorchServe keeps its pid
file and unpacked archives there, so instances never collide) and server.json (pid and ports).

Readiness means every requested model has all its workers READY in the management API: `/ping`
answers Healthy even when every worker died at load, so it is not trusted alone. A worker that
fails to load is reported with the worker's own error from the model log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import string
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from scripts import catalog, processes
from scripts.catalog import ROOT

CONFIG_TEMPLATE = ROOT / "config" / "torchserve.properties"
METRICS_CONFIG = ROOT / "config" / "metrics.yaml"
DEFAULT_RUN_DIR = ROOT / ".run" / "torchserve"
DEFAULT_PORTS = {
    "inference": 8080,
    "management": 8081,
    "metrics": 8082,
    "grpc_inference": 7070,
    "grpc_management": 7071,
}
TOKEN_EXPIRATION_MIN = 1440


class LaunchError(RuntimeError):
    """TorchServe did not start, or a model did not become READY."""


@dataclass(frozen=True)
class Ports:
    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int

    @classmethod
    def default(cls) -> "Ports":
        return cls(**DEFAULT_PORTS)

    @classmethod
    def free(cls) -> "Ports":
        """Five distinct free loopback ports (for tests running beside `make serve`)."""
        sockets = []
        try:
            for _ in DEFAULT_PORTS:
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                sockets.append(sock)
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for sock in sockets:
                sock.close()


@dataclass
class Server:
    """A running (or described) TorchServe instance: addresses and keys, for clients and tests."""

    run_dir: Path
    ports: Ports
    models: list[str]
    host: str = "127.0.0.1"
    pid: int | None = None

    @property
    def inference_url(self) -> str:
        return f"http://{self.host}:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}"

    @property
    def key_file(self) -> Path:
        return self.run_dir / "key_file.json"

    def keys(self) -> dict[str, str]:
        """{'inference': ..., 'management': ..., 'api': ...} from key_file.json."""
        return read_keys(self.key_file)

    def auth(self, kind: str = "inference") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys()[kind]}"}

    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    def alive(self) -> bool:
        return processes.alive(self.pid)

    def save(self) -> None:
        state = {"pid": self.pid, "ports": asdict(self.ports), "models": self.models,
                 "host": self.host}
        (self.run_dir / "server.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> "Server":
        state_file = Path(run_dir) / "server.json"
        if not state_file.is_file():
            raise LaunchError(f"no TorchServe was started from {run_dir} (no server.json)")
        state = json.loads(state_file.read_text())
        return cls(Path(run_dir), Ports(**state["ports"]), state["models"], state["host"],
                   state["pid"])


def read_keys(key_file: Path) -> dict[str, str]:
    doc = json.loads(Path(key_file).read_text())
    return {
        "inference": doc["inference"]["key"],
        "management": doc["management"]["key"],
        "api": doc["API"]["key"],
    }


def check_java() -> None:
    java = shutil.which("java", path=(os.environ.get("JAVA_HOME", "") + "/bin:" if
                                      os.environ.get("JAVA_HOME") else "") + os.environ["PATH"])
    if java is None:
        raise LaunchError(
            "Java 17 is required by TorchServe and was not found: install it "
            "(Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
        )


def render_config(run_dir: Path, ports: Ports, models: list[str], model_store: Path) -> Path:
    template = string.Template(CONFIG_TEMPLATE.read_text())
    text = template.substitute(
        bind_host="127.0.0.1",
        inference_port=ports.inference,
        management_port=ports.management,
        metrics_port=ports.metrics,
        grpc_inference_port=ports.grpc_inference,
        grpc_management_port=ports.grpc_management,
        model_store=model_store,
        load_models=",".join(f"{m}={m}.mar" for m in models),
        metrics_config=METRICS_CONFIG,
        token_expiration_min=TOKEN_EXPIRATION_MIN,
    )
    path = run_dir / "config.properties"
    path.write_text(text)
    return path


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(
    run_dir: Path = DEFAULT_RUN_DIR,
    ports: Ports | None = None,
    models: list[str] | None = None,
    model_store: Path = catalog.MODEL_STORE,
    timeout: float = 300.0,
) -> Server:
    """Start TorchServe in the background and return once every model's workers are READY."""
    check_java()
    run_dir = Path(run_dir).resolve()
    ports = ports or Ports.default()
    models = models or [m.name for m in catalog.for_server("torchserve")]
    missing = [m for m in models if not (model_store / f"{m}.mar").is_file()]
    if missing:
        raise LaunchError(f"no archive for {', '.join(missing)} in {model_store}: run make archive")
    busy = [p for p in asdict(ports).values() if _port_in_use(p)]
    if busy:
        raise LaunchError(f"ports already in use on 127.0.0.1: {busy} (is a server running? "
                          "make stop)")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "tmp").mkdir(parents=True)
    run_dir.chmod(0o700)  # keys, logs and unpacked archives: the operator's eyes only
    config = render_config(run_dir, ports, models, model_store)
    env = dict(os.environ)
    env.update(
        # TorchServe's pid file and unpacked archives go to the temp dir: one per instance.
        TMPDIR=str(run_dir / "tmp"),
        TEMP=str(run_dir / "tmp"),
        LOG_LOCATION=str(run_dir / "logs"),
        METRICS_LOCATION=str(run_dir / "logs"),
        PYTHONUNBUFFERED="1",
    )
    torchserve = Path(sys.executable).with_name("torchserve")
    cmd = [str(torchserve), "--start", "--foreground", "--ncs", "--ts-config", str(config),
           "--model-store", str(model_store), "--models",
           *[f"{m}={m}.mar" for m in models]]
    proc = processes.spawn(cmd, run_dir / "console.log", cwd=run_dir, env=env)
    server = Server(run_dir, ports, models, pid=proc.pid)
    server.save()
    try:
        wait_ready(server, timeout, proc)
    except BaseException:
        stop(run_dir)
        raise
    return server


def _worker_error(server: Server) -> str | None:
    """The worker's own error, once TorchServe reports that a worker died while loading."""
    ts_log = server.log_dir() / "ts_log.log"
    model_log = server.log_dir() / "model_log.log"
    if not ts_log.is_file():
        return None
    text = ts_log.read_text(errors="replace")
    if "Backend worker process died" not in text and "Load model failed" not in text:
        return None
    lines = model_log.read_text(errors="replace").splitlines() if model_log.is_file() else []
    start = max((i for i, line in enumerate(lines) if "Traceback" in line), default=None)
    if start is None:
        return "\n".join(text.splitlines()[-20:])
    tail = [line.split("MODEL_LOG - ", 1)[-1] for line in lines[start:start + 60]]
    return "\n".join(tail)


def model_status(server: Server, model: str) -> list[str]:
    """Worker states of a model, from the management API."""
    resp = requests.get(f"{server.management_url}/models/{model}",
                        headers=server.auth("management"), timeout=5)
    resp.raise_for_status()
    return [w["status"] for entry in resp.json() for w in entry.get("workers", [])]


def is_ready(server: Server) -> bool:
    for model in server.models:
        workers = model_status(server, model)
        if not workers or any(state != "READY" for state in workers):
            return False
    return True


def wait_ready(server: Server, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            console = (server.run_dir / "console.log").read_text(errors="replace")
            raise LaunchError(f"TorchServe exited with code {proc.returncode}:\n"
                              + "\n".join(console.splitlines()[-30:]))
        error = _worker_error(server)
        if error:
            raise LaunchError(f"a model failed to load; the worker said:\n{error}")
        if server.key_file.is_file():
            try:
                if is_ready(server):
                    return
            except (requests.RequestException, KeyError, ValueError):
                pass
        time.sleep(0.5)
    raise LaunchError(f"models {server.models} not READY after {timeout:.0f}s; "
                      f"see {server.log_dir()}")


def stop(run_dir: Path = DEFAULT_RUN_DIR, timeout: float = 60.0) -> bool:
    """Stop the instance started from run_dir; False if none was running."""
    try:
        server = Server.load(run_dir)
    except LaunchError:
        return False
    return processes.stop_group(server.pid, timeout)


def curl_line(server: Server, model: str, image: Path) -> str:
    rel = image.relative_to(ROOT) if image.is_relative_to(ROOT) else image
    return (f'curl -H "Authorization: Bearer {server.keys()["inference"]}" -T {rel} '
            f"{server.inference_url}/predictions/{model}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start, stop and inspect TorchServe.")
    parser.add_argument("command", choices=["start", "stop", "status", "key", "curl"])
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument("--ports", choices=["default", "free"], default="default")
    parser.add_argument("--models", help="comma-separated model names (default: the catalog's)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--kind", choices=["inference", "management", "api"], default="inference")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            existing = None
            try:
                existing = Server.load(args.run_dir)
            except LaunchError:
                pass
            if existing and existing.alive() and is_ready(existing):
                print(f"TorchServe already running (pid {existing.pid}), models READY")
                server = existing
            else:
                started = time.monotonic()
                models = args.models.split(",") if args.models else None
                ports = Ports.free() if args.ports == "free" else Ports.default()
                server = start(args.run_dir, ports, models, timeout=args.timeout)
                print(f"TorchServe READY in {time.monotonic() - started:.1f}s "
                      f"(pid {server.pid}, logs in {server.log_dir()})")
            from scripts import samples

            print(f"key file: {server.key_file}")
            for model in server.models:
                print(curl_line(server, model, samples.path("cat")))
        elif args.command == "stop":
            print("TorchServe stopped" if stop(args.run_dir) else "TorchServe was not running")
        elif args.command == "status":
            server = Server.load(args.run_dir)
            if not server.alive():
                print("not running")
                return 1
            for model in server.models:
                print(f"{model}: {', '.join(model_status(server, model)) or 'no workers'}")
        elif args.command == "key":
            print(Server.load(args.run_dir).keys()[args.kind])
        elif args.command == "curl":
            from scripts import samples

            server = Server.load(args.run_dir)
            for model in server.models:
                print(curl_line(server, model, samples.path("cat")))
    except (LaunchError, catalog.CatalogError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
