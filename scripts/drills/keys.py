"""Key drills: expired, rotated and wrong keys, and the container healthcheck through them."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts import ROOT
from scripts.drills.results import Result
from scripts.drills.target import MODEL, REFUSED_KEY, Target, good_bodies
from scripts.serve import torchserve as launcher


def drill_tokens(target: Target, quick: bool) -> Result:
    """A TorchServe of its own with keys expiring after 6 s: an expired or rotated-away key gets
    401 and the client raises Unauthorized after one attempt; clients reading the key file pick
    up rotated keys; the launcher's readiness and the container healthcheck survive expiry and
    still tell the truth (not ready when there is no worker)."""
    from clients import errors
    from clients.torchserve_rest import TorchServeClient

    result = Result("token expiry + rotation")
    cat = good_bodies()["cat"]
    run_dir = Path(tempfile.mkdtemp(prefix="drill-tokens-"))
    server = launcher.start(run_dir, launcher.Ports.free(), [MODEL], token_expiration_min=0.1)
    try:
        own = Target(server)
        first = own.server.keys()["inference"]
        result.count([own.send(cat)])
        time.sleep(7.0)
        expired = own.send(cat, headers={"Authorization": f"Bearer {first}"})
        result.count([expired])
        result.expect(expired.status in REFUSED_KEY, f"an expired key got HTTP {expired.status}")
        with TorchServeClient(server.inference_url, server.management_url,
                              token=first) as held:
            try:
                held.predict(cat, MODEL)
                result.expect(False, "an expired key was accepted by the client call")
            except errors.Unauthorized as exc:
                result.expect(exc.attempts == 1, f"Unauthorized after {exc.attempts} attempts")
            result.sent += 1
            result.client_errors += 1
        result.expect(launcher.is_ready(server), "the launcher's readiness failed after expiry")
        healthy, reason = _healthcheck(server)
        result.expect(healthy, f"the healthcheck said unhealthy after key expiry: {reason}")
        # Honest: with no worker, the same check says not ready.
        with own.server.client() as mgmt:
            mgmt.scale_workers(MODEL, min_workers=0, max_workers=0)
        time.sleep(2.0)
        healthy_without, reason_without = _healthcheck(server)
        result.expect(not healthy_without, "the healthcheck said healthy with no worker")
        result.expect(not launcher.is_ready(server), "the launcher said ready with no worker")
        with own.server.client() as mgmt:
            mgmt.scale_workers(MODEL, min_workers=1, max_workers=1)
        result.expect(own.wait_ready(60.0) is not None, "no READY worker after scaling back")
        # Rotation: a client reading the key file follows it; the previous key stops at once.
        with TorchServeClient(server.inference_url, server.management_url,
                              key_file=server.key_file) as follower:
            current = launcher.rotate(server, "inference")
            follower.predict(cat, MODEL)
            rotated = launcher.rotate(server, "inference")
            follower.predict(cat, MODEL)
            result.sent += 2
            result.ok += 2
        result.expect(rotated != current, "rotation kept the same key")
        stale = own.send(cat, headers={"Authorization": f"Bearer {current}"})
        result.count([stale])
        result.expect(stale.status in REFUSED_KEY,
                      f"a rotated-away (unexpired) key got HTTP {stale.status}")
        result.peak_rss_mb = own.worker_rss_mb()
        result.note(f"healthcheck after expiry: ok; with no worker: {reason_without!r}")
    finally:
        launcher.stop(run_dir)
    result.expect_nothing_lost()
    return result


def _healthcheck(server: launcher.Server) -> tuple[bool, str]:
    """Run the container healthcheck (docker/torchserve/healthcheck.py) against this server."""
    script = ROOT / "docker" / "torchserve" / "healthcheck.py"
    models_file = server.run_dir / "drill-models.txt"
    models_file.write_text("\n".join(server.models) + "\n")
    env = dict(os.environ, TS_RUN_DIR=str(server.run_dir), TS_MODELS_FILE=str(models_file),
               TS_MANAGEMENT_URL=server.management_url)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=60)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()[-200:]
