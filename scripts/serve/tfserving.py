"""The TF Serving part of `make serve` / `make stop`.

    python -m scripts.serve.tfserving start [--mode auto|docker|native] [--timeout S]
    python -m scripts.serve.tfserving stop  [--mode auto|docker|native]
    python -m scripts.serve.tfserving status
    python -m scripts.serve.tfserving reload [--grpc-target HOST:PORT]

Where TF Serving runs (auto = the first that applies):
1. docker  a Docker engine answers (`docker info` succeeds): `docker compose -f docker/compose.yaml
           --profile cpu up -d tfserving` (the compose file, owned by the Docker setup, publishes
           REST 8501 and gRPC 8500 on 127.0.0.1 and mounts model_store/tf at /models/tf).
2. native  `tensorflow_model_server` is on PATH: started here with REST 8501, gRPC 8500 (env
           TFS_REST_PORT / TFS_GRPC_PORT override both, as for compose), the batching and
           monitoring configs, and a models.config whose base paths are the absolute local model
           store, all rendered into .run/tfserving/. TF Serving has no listen-address flag: a
           native server listens on every interface, so keep 8500/8501 firewalled (Docker
           publishes them on 127.0.0.1 only).
3. neither: one line saying TF Serving was skipped and why; exit status 0, so `make serve` goes on
           to serve the TorchServe models.

`start` returns once every TF Serving model of the catalog has a version AVAILABLE
(GET /v1/models/<name>), or fails naming the model and the server log.

`reload` sends the current models.config to the running server (gRPC ModelService
HandleReloadConfigRequest): versions and version labels change without a restart. A native
server gets base paths under the local store, any other the committed /models ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from clients import endpoints, errors
from clients.tfserving_rest import TFServingClient
from clients.transport import RetryPolicy, Timeouts
from scripts import ROOT
from scripts.serve import processes
from scripts.build import tf_configs
from scripts.catalog import MODEL_STORE

BINARY = "tensorflow_model_server"
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
COMPOSE_SERVICE = "tfserving"
RUN_DIR = ROOT / ".run" / "tfserving"
# The same variables docker/compose.yaml reads for its published ports.
GRPC_PORT = int(os.environ.get("TFS_GRPC_PORT", endpoints.TFSERVING_PORTS["grpc"]))
REST_PORT = int(os.environ.get("TFS_REST_PORT", endpoints.TFSERVING_PORTS["rest"]))
REST_URL = f"http://{endpoints.LOOPBACK}:{REST_PORT}"


class LaunchError(RuntimeError):
    """TF Serving did not start, or a model did not become AVAILABLE."""


def docker_answers() -> tuple[bool, str]:
    """(True, "") when a Docker engine answers, else (False, why not)."""
    if shutil.which("docker") is None:
        return False, "no docker CLI on PATH"
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "`docker info` did not answer within 20s"
    if probe.returncode != 0:
        lines = (probe.stderr or probe.stdout).strip().splitlines()
        return False, f"no Docker engine answers ({lines[-1] if lines else 'docker info failed'})"
    return True, ""


def choose_mode(requested: str = "auto") -> tuple[str | None, str]:
    """(mode, reason): mode is docker, native or None (skip, with the reason)."""
    docker_ok, docker_why = docker_answers() if requested in ("auto", "docker") else (False, "")
    native_ok = shutil.which(BINARY) is not None
    if requested == "docker":
        return ("docker", "") if docker_ok else (None, docker_why)
    if requested == "native":
        return ("native", "") if native_ok else (None, f"{BINARY} is not on PATH")
    if docker_ok:
        return "docker", ""
    if native_ok:
        return "native", ""
    return None, f"{docker_why} and {BINARY} is not on PATH"


def model_names() -> list[str]:
    return [m.name for m in tf_configs.tfserving_models()]


def check_model_store() -> None:
    """Every version models.config serves must be on disk (`make archive` writes them)."""
    missing = [
        f"{m.name}/{v}" for m in tf_configs.tfserving_models()
        for v in tf_configs.served_versions(m)
        if not (MODEL_STORE / "tf" / m.name / str(v) / "saved_model.pb").is_file()
    ]
    if missing:
        raise LaunchError(
            f"no SavedModel for {', '.join(missing)} in model_store/tf: run make archive"
        )


def available(model: str, rest_url: str = REST_URL) -> bool:
    """Some version of model AVAILABLE, asked through the bundle's own TF Serving client."""
    client = TFServingClient(rest_url, timeouts=Timeouts(connect=2.0, read=3.0),
                             retry=RetryPolicy.none())
    try:
        return client.is_available(model)
    except errors.ServingError:
        return False
    finally:
        client.close()


def wait_available(timeout: float, proc: subprocess.Popen | None = None,
                   log: Path | None = None, rest_url: str = REST_URL) -> None:
    deadline = time.monotonic() + timeout
    pending = model_names()
    while pending:
        if proc is not None and proc.poll() is not None:
            raise LaunchError(f"{BINARY} exited with status {proc.returncode}; see {log}")
        pending = [m for m in pending if not available(m, rest_url)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise LaunchError(f"{', '.join(pending)} not AVAILABLE after {timeout:.0f}s"
                              + (f"; see {log}" if log else ""))
        time.sleep(1.0)


def render_native(run_dir: Path = RUN_DIR) -> dict[str, Path]:
    """The three config files for a native run; models.config points at the local store."""
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in tf_configs.render(prefix=str(MODEL_STORE)).items():
        path = run_dir / name
        path.write_text(text)
        paths[name] = path
    return paths


def start_native(run_dir: Path, timeout: float) -> None:
    check_model_store()
    if native_running(run_dir):
        raise LaunchError(f"a native TF Serving from {run_dir} is already running; stop it first")
    configs = render_native(run_dir)
    cmd = [
        shutil.which(BINARY),
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_config_file={configs[tf_configs.MODELS_CONFIG]}",
        "--enable_batching=true",
        f"--batching_parameters_file={configs[tf_configs.BATCHING_CONFIG]}",
        f"--monitoring_config_file={configs[tf_configs.MONITORING_CONFIG]}",
    ]
    log = run_dir / "tfserving.log"
    proc, launch = processes.spawn(cmd, log)
    try:
        (run_dir / "server.json").write_text(json.dumps({"launch": launch.to_json()}) + "\n")
        wait_available(timeout, proc, log)
    except BaseException:
        # Never leave a server behind that `stop` could not find.
        processes.stop_group(launch, 30)
        (run_dir / "server.json").unlink(missing_ok=True)
        raise
    print(f"[tfserving] native: {', '.join(model_names())} AVAILABLE; REST {REST_URL}, "
          f"gRPC 127.0.0.1:{GRPC_PORT} (log {log})")


def _launch(run_dir: Path) -> processes.Launch | None:
    """The native server's launch identity from server.json (None: none, or unreadable)."""
    try:
        return processes.Launch.from_json(json.loads((run_dir / "server.json").read_text())
                                          ["launch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_native(run_dir: Path, timeout: float = 30.0) -> bool:
    launch = _launch(run_dir)
    stopped = launch is not None and processes.stop_group(launch, timeout)
    (run_dir / "server.json").unlink(missing_ok=True)
    return stopped


def _compose(*args: str) -> list[str]:
    return ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "cpu", *args]


def start_docker(timeout: float) -> None:
    check_model_store()
    subprocess.run(_compose("up", "-d", COMPOSE_SERVICE), check=True)
    wait_available(timeout)
    print(f"[tfserving] docker: {', '.join(model_names())} AVAILABLE; REST {REST_URL}, "
          f"gRPC 127.0.0.1:{GRPC_PORT}")


def stop_docker() -> None:
    subprocess.run(_compose("stop", COMPOSE_SERVICE), check=True)


def native_running(run_dir: Path = RUN_DIR) -> bool:
    return processes.alive(_launch(run_dir))


def reload(grpc_target: str, run_dir: Path = RUN_DIR, timeout: float = 120.0) -> None:
    """Apply the catalog's current models.config to a running TF Serving without a restart.

    TF Serving refuses to move a label onto a version that is not loaded yet: add the version
    first (tf_version or keep_versions), reload, then move the label and reload again."""
    import grpc
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    prefix = str(MODEL_STORE) if native_running(run_dir) else tf_configs.DEFAULT_PREFIX
    config = tf_configs.model_server_config(tf_configs.tfserving_models(), prefix)
    with grpc.insecure_channel(grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        reply = stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=timeout
        )
    if reply.status.error_code != 0:
        raise LaunchError(f"TF Serving refused the config: {reply.status.error_message}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status", "reload"])
    parser.add_argument("--grpc-target", default=f"127.0.0.1:{GRPC_PORT}",
                        help="TF Serving gRPC address for reload")
    parser.add_argument("--mode", choices=["auto", "docker", "native"], default="auto")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    if args.command == "status":
        states = {m: available(m) for m in model_names()}
        for name, ok in states.items():
            print(f"[tfserving] {name}: {'AVAILABLE' if ok else 'not available'} at {REST_URL}")
        return 0 if all(states.values()) else 1

    if args.command == "reload":
        import grpc

        try:
            reload(args.grpc_target, args.run_dir)
        except LaunchError as exc:
            print(f"[tfserving] reload failed: {exc}", file=sys.stderr)
            return 1
        except grpc.RpcError as exc:
            print(f"[tfserving] reload failed: {exc.code().name}: {exc.details()}",
                  file=sys.stderr)
            return 1
        print(f"[tfserving] reloaded models.config on {args.grpc_target}")
        return 0

    if args.command == "stop":
        # A native instance is found by its pid file whatever the mode; docker only if it answers.
        stopped = stop_native(args.run_dir)
        if args.mode in ("auto", "docker") and docker_answers()[0]:
            stop_docker()
            stopped = True
        print(f"[tfserving] {'stopped' if stopped else 'nothing to stop'}")
        return 0

    mode, reason = choose_mode(args.mode)
    if mode is None:
        print(f"[tfserving] TF Serving skipped: {reason}.")
        return 0
    try:
        if mode == "docker":
            start_docker(args.timeout)
        else:
            start_native(args.run_dir, args.timeout)
    except (LaunchError, subprocess.CalledProcessError) as exc:
        print(f"[tfserving] {mode} start failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
