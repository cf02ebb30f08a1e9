"""Container healthcheck and Kubernetes probe for TorchServe: "every model READY", not "process up".

    python healthcheck.py        exit 0 when every model has workers and all are READY, else 1

TorchServe's /ping answers Healthy even after every worker died, so the check asks the management
API for each model's worker status. Token authorization is on, so it reads the management key
from key_file.json in the server's working directory. Standard library only: the official image
has no curl and no requests.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

RUN_DIR = Path(os.environ.get("TS_RUN_DIR", "/home/model-server/run"))
MODELS_FILE = Path(os.environ.get("TS_MODELS_FILE", "/home/model-server/bundle/models.txt"))
MANAGEMENT_URL = os.environ.get("TS_MANAGEMENT_URL", "http://127.0.0.1:8081")
TIMEOUT_S = 4.0


def management_key() -> str | None:
    key_file = RUN_DIR / "key_file.json"
    if not key_file.is_file():
        return None
    return json.loads(key_file.read_text())["management"]["key"]


def workers(model: str, key: str | None) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"{MANAGEMENT_URL}/models/{model}", headers=headers)
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return [w["status"] for entry in json.load(response) for w in entry.get("workers", [])]


def check() -> str | None:
    """None when ready, else the reason (printed: `docker inspect` shows it)."""
    models = [m for m in MODELS_FILE.read_text().split() if m]
    if not models:
        return f"no models listed in {MODELS_FILE}"
    try:
        key = management_key()
    except (OSError, ValueError, KeyError) as exc:
        return f"unreadable key file ({exc})"
    for model in models:
        try:
            states = workers(model, key)
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            return f"{model}: management API: {exc}"
        if not states or any(state != "READY" for state in states):
            return f"{model}: workers {states or 'none'}"
    return None


if __name__ == "__main__":
    reason = check()
    print(reason or "ready")
    sys.exit(1 if reason else 0)
