"""Container healthcheck and Kubernetes probe for TorchServe: "every model READY", not "process up".

    python healthcheck.py        exit 0 when every model is ready, else 1 (the reason is printed:
                                 `docker inspect` shows it)

TorchServe's /ping answers Healthy even after every worker died, so the check asks the management
API for each model's workers and applies the bundle's readiness rule (clients/endpoints.py: at
least one worker and all READY). Token authorization is on: the management key is read from
key_file.json in the server's working directory at every run, so rotated keys are picked up.
Keys expire (token_expiration_min); when the management API refuses the key, the check asks
TorchServe's token API (with the API key, which does not expire) for a new management key, as
an operator would, and asks again: an expired key never turns a serving container unhealthy,
and the answer is still the workers' state. Standard library only (through clients.endpoints):
the official image has no curl and no requests.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

BUNDLE = Path(os.environ.get("BUNDLE_ROOT") or Path(__file__).resolve().parents[2])
sys.path.insert(0, str(BUNDLE))

from clients import endpoints  # noqa: E402  (stdlib only; needs the bundle root on sys.path)

RUN_DIR = Path(os.environ.get("TS_RUN_DIR", "/home/model-server/run"))
MODELS_FILE = Path(os.environ.get("TS_MODELS_FILE", BUNDLE / "models.txt"))
MANAGEMENT_URL = os.environ.get(
    "TS_MANAGEMENT_URL",
    f"http://{endpoints.LOOPBACK}:{endpoints.TORCHSERVE_PORTS['management']}").rstrip("/")
TIMEOUT_S = 4.0
REFUSED = (400, 401, 403)  # TorchServe 0.12 answers a wrong or expired key with 400 or 401


def keys() -> dict[str, str]:
    """The key file's keys, {} when there is none (authorization off)."""
    key_file = RUN_DIR / endpoints.KEY_FILE_NAME
    return endpoints.read_key_file(key_file) if key_file.is_file() else {}


def request(path: str, key: str | None) -> bytes:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(MANAGEMENT_URL + path, headers=headers),
                                timeout=TIMEOUT_S) as response:
        return response.read()


def get(path: str, key: str | None):
    return json.loads(request(path, key))


def describe(model: str) -> object:
    current = keys()
    try:
        return get(f"/models/{model}", current.get("management"))
    except urllib.error.HTTPError as exc:
        if exc.code not in REFUSED or not current.get("api"):
            raise
    # Expired or rotated between the read and the request: a fresh management key, then again.
    # The token API answers 200 with an empty body (no JSON) and rewrites key_file.json.
    request("/token?type=management", current["api"])
    return get(f"/models/{model}", keys()["management"])


def check() -> str | None:
    """None when ready, else the reason."""
    models = [m for m in MODELS_FILE.read_text().split() if m]
    if not models:
        return f"no models listed in {MODELS_FILE}"
    for model in models:
        try:
            reason = endpoints.not_ready_reason(describe(model))
        except urllib.error.HTTPError as exc:
            return f"{model}: management API: HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            return f"{model}: management API: {exc}"
        if reason:
            return f"{model}: {reason}"
    return None


if __name__ == "__main__":
    reason = check()
    print(reason or "ready")
    sys.exit(1 if reason else 0)
