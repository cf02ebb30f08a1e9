"""The one home for where the bundle's servers listen, which key opens them, and when a
TorchServe model counts as ready. Used by the clients and CLI, the launcher
(scripts/serve/torchserve.py), the Docker healthcheck and the container config renderer.

STANDARD LIBRARY ONLY: the Docker healthcheck imports this file in an image without the
client's dependencies. Keep it that way.

Ports (TorchServe's and TF Serving's documented defaults):
    TORCHSERVE_PORTS = {"inference": 8080, "management": 8081, "metrics": 8082,
                        "grpc_inference": 7070, "grpc_management": 7071}
    TFSERVING_PORTS = {"rest": 8501, "grpc": 8500}

Addresses, first match wins (address()):
    1. the explicit argument;
    2. the environment: TORCHSERVE_URL, TORCHSERVE_MANAGEMENT_URL, TORCHSERVE_METRICS_URL,
       TORCHSERVE_GRPC_TARGET, TORCHSERVE_GRPC_MANAGEMENT_TARGET, TFSERVING_URL,
       TFSERVING_GRPC_TARGET;
    3. TorchServe only: the ports in server.json of the repo's run directory (the launcher
       records the ports it started the server on there);
    4. the default port on 127.0.0.1.

TorchServe keys, first match wins (key_source() / token()):
    1. the explicit token argument (one string for both APIs);
    2. the explicit key_file argument;
    3. TORCHSERVE_INFERENCE_TOKEN / TORCHSERVE_MANAGEMENT_TOKEN (per API), then TORCHSERVE_TOKEN;
    4. TORCHSERVE_KEY_FILE;
    5. .run/torchserve/key_file.json of the repo found from the current directory upwards
       (where `make serve` runs the server);
    otherwise no key (no Authorization header is sent).

Readiness (is_ready()): a model is ready when it has at least one worker and ALL its workers
are READY in the management API's describe answer. /ping is not enough: it answers Healthy
while every worker of a model is dead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

LOOPBACK = "127.0.0.1"

TORCHSERVE_PORTS: Mapping[str, int] = {
    "inference": 8080,
    "management": 8081,
    "metrics": 8082,
    "grpc_inference": 7070,
    "grpc_management": 7071,
}
TFSERVING_PORTS: Mapping[str, int] = {"rest": 8501, "grpc": 8500}

# Environment variable -> (server, port name, URL scheme or None for a gRPC host:port target).
ADDRESS_ENV: Mapping[str, tuple[str, str, str | None]] = {
    "TORCHSERVE_URL": ("torchserve", "inference", "http"),
    "TORCHSERVE_MANAGEMENT_URL": ("torchserve", "management", "http"),
    "TORCHSERVE_METRICS_URL": ("torchserve", "metrics", "http"),
    "TORCHSERVE_GRPC_TARGET": ("torchserve", "grpc_inference", None),
    "TORCHSERVE_GRPC_MANAGEMENT_TARGET": ("torchserve", "grpc_management", None),
    "TFSERVING_URL": ("tfserving", "rest", "http"),
    "TFSERVING_GRPC_TARGET": ("tfserving", "grpc", None),
}

KEY_KINDS = ("inference", "management")
TOKEN_ENV = "TORCHSERVE_TOKEN"
KIND_TOKEN_ENV: Mapping[str, str] = {"inference": "TORCHSERVE_INFERENCE_TOKEN",
                                     "management": "TORCHSERVE_MANAGEMENT_TOKEN"}
KEY_FILE_ENV = "TORCHSERVE_KEY_FILE"

RUN_DIR = Path(".run") / "torchserve"  # relative to the repo root; the launcher's default
KEY_FILE_NAME = "key_file.json"
SERVER_FILE_NAME = "server.json"
READY = "READY"


class KeyFileError(ValueError):
    """A key file that exists but is not TorchServe's key_file.json."""


# ----------------------------------------------------------------------------------- keys

def read_key_file(path: str | os.PathLike) -> dict[str, str]:
    """{"inference": key, "management": key, "api": key} from TorchServe's key_file.json.

    Raises OSError when the file cannot be read, KeyFileError when it is not a key file.
    """
    text = Path(path).read_text()
    try:
        doc = json.loads(text)
        return {"inference": doc["inference"]["key"], "management": doc["management"]["key"],
                "api": doc["API"]["key"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a TorchServe key_file.json ({exc!r})") from None


def find_run_dir(start: str | os.PathLike | None = None) -> Path | None:
    """The first `.run/torchserve` directory in `start` (default: the current directory) or
    one of its parents, or None."""
    here = Path(start if start is not None else os.getcwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / RUN_DIR
        if candidate.is_dir():
            return candidate
    return None


class KeySource(NamedTuple):
    """Where a key comes from: a token string, or a key file to read (re-read it when it
    changes: TorchServe rotates keys), or neither (send no Authorization header)."""

    token: str | None
    key_file: Path | None
    origin: str  # human-readable: "argument", "TORCHSERVE_TOKEN", a path...


def key_source(kind: str = "inference", *, token: str | None = None,
               key_file: str | os.PathLike | None = None,
               env: Mapping[str, str] | None = None,
               start: str | os.PathLike | None = None) -> KeySource:
    """Apply the documented lookup order (module docstring) for the `kind` API
    ("inference" or "management") without reading any key file."""
    if kind not in KEY_KINDS:
        raise ValueError(f"kind must be one of {KEY_KINDS}, not {kind!r}")
    env = os.environ if env is None else env
    if token:
        return KeySource(token, None, "argument")
    if key_file:
        return KeySource(None, Path(key_file), str(key_file))
    for name in (KIND_TOKEN_ENV[kind], TOKEN_ENV):
        if env.get(name):
            return KeySource(env[name], None, name)
    if env.get(KEY_FILE_ENV):
        return KeySource(None, Path(env[KEY_FILE_ENV]), KEY_FILE_ENV)
    run_dir = find_run_dir(start)
    if run_dir is not None and (run_dir / KEY_FILE_NAME).is_file():
        path = run_dir / KEY_FILE_NAME
        return KeySource(None, path, str(path))
    return KeySource(None, None, "none")


def token(kind: str = "inference", **lookup: Any) -> str | None:
    """The key for the `kind` API by the documented order, or None. Keyword arguments as
    key_source(). Raises OSError / KeyFileError for an unreadable key file."""
    source = key_source(kind, **lookup)
    if source.key_file is not None:
        return read_key_file(source.key_file)[kind]
    return source.token


# ------------------------------------------------------------------------------ addresses

def recorded_ports(run_dir: str | os.PathLike) -> tuple[str, dict[str, int]] | None:
    """(host, {port name: port}) from the launcher's server.json in run_dir, or None."""
    try:
        state = json.loads((Path(run_dir) / SERVER_FILE_NAME).read_text())
        ports = {name: int(state["ports"][name]) for name in TORCHSERVE_PORTS}
        return str(state.get("host") or LOOPBACK), ports
    except (OSError, ValueError, KeyError, TypeError):
        return None


def address(env_name: str, explicit: str | None = None, *,
            env: Mapping[str, str] | None = None,
            start: str | os.PathLike | None = None) -> str:
    """A base URL (http://host:port, no trailing slash) or gRPC target (host:port) by the
    documented order. env_name is one of ADDRESS_ENV ("TORCHSERVE_URL", ...)."""
    server, port_name, scheme = ADDRESS_ENV[env_name]
    env = os.environ if env is None else env
    value = explicit or env.get(env_name)
    if value:
        return value.rstrip("/")
    host, port = LOOPBACK, (TORCHSERVE_PORTS if server == "torchserve"
                            else TFSERVING_PORTS)[port_name]
    if server == "torchserve":
        run_dir = find_run_dir(start)
        recorded = recorded_ports(run_dir) if run_dir is not None else None
        if recorded is not None:
            host, port = recorded[0], recorded[1][port_name]
    return f"{scheme}://{host}:{port}" if scheme else f"{host}:{port}"


# ------------------------------------------------------------------------------ readiness

def _entries(describe: Any, version: str | None) -> list[Mapping[str, Any]]:
    entries = describe if isinstance(describe, list) else [describe]
    entries = [e for e in entries if isinstance(e, Mapping)]
    if version is not None:
        entries = [e for e in entries if str(e.get("modelVersion")) == str(version)]
    return entries


def worker_states(describe: Any, version: str | None = None) -> list[str]:
    """Every worker's status ("READY", "UNLOADING", ...) in a describe-model answer
    (GET /models/<name>[/<version>] or gRPC DescribeModel: a list of per-version entries).
    With `version`, only that version's workers; without, every entry of the answer."""
    return [str(w.get("status", "UNKNOWN")) for e in _entries(describe, version)
            for w in e.get("workers", []) if isinstance(w, Mapping)]


def not_ready_reason(describe: Any, version: str | None = None) -> str:
    """"" when ready (at least one worker, all READY), else why not."""
    states = worker_states(describe, version)
    if not states:
        return "no workers"
    waiting = [s for s in states if s != READY]
    if waiting:
        return f"{len(waiting)} of {len(states)} workers not READY ({', '.join(sorted(set(waiting)))})"
    return ""


def is_ready(describe: Any, version: str | None = None) -> bool:
    """The bundle's readiness rule: at least one worker and every worker READY."""
    return not not_ready_reason(describe, version)


__all__ = [
    "ADDRESS_ENV", "KEY_FILE_ENV", "KEY_FILE_NAME", "KEY_KINDS", "KIND_TOKEN_ENV", "LOOPBACK",
    "READY", "RUN_DIR", "SERVER_FILE_NAME", "TFSERVING_PORTS", "TOKEN_ENV", "TORCHSERVE_PORTS",
    "KeyFileError", "KeySource", "address", "find_run_dir", "is_ready", "key_source",
    "not_ready_reason", "read_key_file", "recorded_ports", "token", "worker_states",
]
