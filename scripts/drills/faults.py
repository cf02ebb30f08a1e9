"""Fault drills: killed and stopped workers, a killed frontend, a flooded queue."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import psutil

from scripts.drills.results import Result, p99
from scripts.drills.target import (
    JOB_QUEUE_SIZE,
    MODEL,
    Sampler,
    Target,
    good_bodies,
    run_load,
    throughput,
)
from scripts.serve import torchserve as launcher

# ------------------------------------------------------------------------------- the drills

def drill_worker_kill(target: Target, quick: bool) -> Result:
    """kill -9 the worker mid-batch: only the in-flight requests fail (at most one per client
    thread), clearly; queued ones succeed on the restarted worker; nothing hangs."""
    return _worker_fault(target, quick, "worker kill -9", signal.SIGKILL)


def drill_worker_stop(target: Target, quick: bool) -> Result:
    """SIGSTOP the worker for 3 s mid-batch, then SIGCONT: requests wait and are answered."""
    return _worker_fault(target, quick, "worker SIGSTOP 3s", signal.SIGSTOP)


def _worker_fault(target: Target, quick: bool, name: str, sig: int) -> Result:
    result = Result(name)
    threads, count = 8, (24 if quick else 64)
    cat = good_bodies()["cat"]
    # The catalog may give the model several workers: fault one of them, the others keep serving.
    worker = target.workers()[0]
    before = target.worker_pids()
    recovery: list[float] = []

    def fault() -> None:
        time.sleep(0.5)
        fault_at = time.monotonic()
        os.kill(worker.pid, sig)
        if sig == signal.SIGSTOP:
            time.sleep(3.0)
            os.kill(worker.pid, signal.SIGCONT)
        # Recovered: a worker other than the killed one (kill) and all workers READY.
        while time.monotonic() - fault_at < 60.0:
            replaced = sig != signal.SIGKILL or target.worker_pids() - before
            if replaced and target.ready():
                recovery.append(time.monotonic() - fault_at)
                return
            time.sleep(0.1)

    with Sampler(target) as sampler:
        faulter = threading.Thread(target=fault)
        faulter.start()
        outcomes = run_load(target, [("cat", cat)] * count, threads)
        faulter.join()
    recovered = recovery[0] if recovery else None
    result.count(outcomes)
    result.peak_rss_mb = sampler.peak_worker
    after = target.worker_pids()
    result.restarts = len(after - before)
    result.recovery_s = recovered
    failed = [o for o in outcomes if o.status != 200]
    result.expect_nothing_lost()
    result.expect(recovered is not None, "the worker was not READY again within 60 s")
    result.expect(target.send(cat).status == 200, "no 200 after recovery")
    result.expect(max(o.seconds for o in outcomes) < target.timeout,
                  "a request took longer than the response timeout")
    if sig == signal.SIGKILL:
        result.expect(result.restarts >= 1, "no new worker process after kill -9")
        result.expect(len(failed) <= threads,
                      f"{len(failed)} requests failed; only the in-flight ones (<= {threads}) "
                      "should")
        statuses = sorted({o.status for o in failed if o.status})
        result.note(f"failed in flight: {len(failed)} (HTTP {statuses}); the rest answered 200")
    else:
        result.expect(result.restarts == 0, "the worker was replaced after a 3 s pause")
        result.expect(not failed, f"{len(failed)} requests failed during a 3 s pause")
        result.note(f"slowest answer {max(o.seconds for o in outcomes):.1f}s")
    return result


def drill_frontend_kill(target: Target, quick: bool) -> Result:
    """kill -9 the Java frontend, then stop and start: no orphan, ports free, the stale
    record of a foreign process is never signalled, the restarted server answers."""
    result = Result("frontend kill -9 + stop/start")
    server = target.server
    cat = good_bodies()["cat"]
    old_tree = target.tree()
    frontend = target.frontend()
    killed_at = time.monotonic()

    def kill() -> None:
        time.sleep(0.3)
        frontend.kill()

    killer = threading.Thread(target=kill)
    killer.start()
    outcomes = run_load(target, [("cat", cat)] * (8 if quick else 16), 4)
    killer.join()
    result.count(outcomes)
    launcher.stop(server.run_dir, timeout=30.0)
    orphans = [p.pid for p in old_tree if not _gone(p)]
    result.expect(not orphans, f"processes of the killed server still alive: {orphans}")
    busy = [p for p in asdict(server.ports).values() if _port_open(p)]
    result.expect(not busy, f"ports still open after stop: {busy}")

    # A stale record naming a process that is not ours (here: a sleep we started) is ignored.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        with tempfile.TemporaryDirectory() as stale_dir:
            record = json.loads((server.run_dir / "server.json").read_text())
            record["pid"] = stranger.pid
            if record.get("launch"):
                record["launch"]["pid"] = stranger.pid
            (Path(stale_dir) / "server.json").write_text(json.dumps(record))
            launcher.stop(Path(stale_dir), timeout=5.0)
        result.expect(stranger.poll() is None, "stop signalled a process that was not ours")
    finally:
        stranger.kill()
        stranger.wait()

    restarted = launcher.start(server.run_dir, server.ports, server.models)
    target.server = restarted
    result.recovery_s = time.monotonic() - killed_at
    result.restarts = 1
    final = target.send(cat)
    result.count([final])
    result.expect(final.status == 200, f"the restarted server answered {final.status}")
    result.expect_nothing_lost()
    result.peak_rss_mb = target.worker_rss_mb()
    result.note(f"in flight at the kill: {result.conn_errors} clear connection errors; "
                f"{len(old_tree)} processes of the old server all gone; restart took "
                f"{result.recovery_s:.1f}s")
    return result


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _access_log_lines(target: Target) -> int:
    path = target.server.log_dir() / "access_log.log"
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if b"/predictions/" in line)


def drill_flood(target: Target, quick: bool) -> Result:
    """More clients at once than the job queue holds: the excess gets a fast 503, every accepted
    request is answered. Then the same flood through the bundle's client with its default
    retries, to measure how much retrying multiplies the load the server sees."""
    from clients import errors
    from clients.torchserve_rest import TorchServeClient

    result = Result("flood past the job queue")
    clients_, per_client = (150, 1) if quick else (200, 3)
    cat = good_bodies()["cat"]
    # TorchServe bounds a job's time in the worker (response timeout), not its wait in the
    # queue: an accepted request may wait for the whole queue ahead of it. The deadline allows
    # that wait at the throughput measured now, twice over.
    rate = throughput(target, cat)
    deadline = target.timeout + 2 * (JOB_QUEUE_SIZE + clients_) / rate
    result.note(f"throughput before the flood {rate:.1f}/s; per-request deadline {deadline:.0f}s")
    with Sampler(target) as sampler:
        outcomes = run_load(target, [("cat", cat)] * (clients_ * per_client), clients_,
                            deadline=deadline)
    result.count(outcomes)
    result.peak_rss_mb = sampler.peak_worker
    rejected = [o.seconds for o in outcomes if o.status == 503]
    accepted = [o.seconds for o in outcomes if o.status == 200]
    other = sorted({o.status for o in outcomes if o.status not in (200, 503)}, key=str)
    result.expect_nothing_lost()
    result.expect(not other, f"answers other than 200/503: {other}")
    result.expect(result.conn_errors == 0, "connections failed under the flood")
    result.note(f"no retries: {len(accepted)} answered 200 (p99 {p99(accepted):.2f}s), "
                f"{len(rejected)} got 503 (p99 {p99(rejected):.2f}s)")

    logical = clients_ * per_client
    # The client logs each retry it gives up on; here they are counted instead.
    logging.getLogger("clients").setLevel(logging.ERROR)
    before = _access_log_lines(target)
    client = TorchServeClient(target.server.inference_url, target.server.management_url,
                              key_file=target.server.key_file)
    failures: dict[str, int] = {}

    def one(_: int) -> None:
        try:
            client.predict(cat, MODEL)
        except errors.ServingError as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1

    try:
        with ThreadPoolExecutor(max_workers=clients_) as pool:
            list(pool.map(one, range(logical)))
    finally:
        client.close()
    time.sleep(1.0)  # the access log is written after the response
    seen = _access_log_lines(target) - before
    policy = _default_retry_policy()
    bound = 1.0 + policy.budget_ratio + policy.budget_reserve / logical
    multiplication = seen / logical
    result.note(f"with the client's retries: {logical} calls -> {seen} server requests "
                f"(x{multiplication:.2f}; budget bound x{bound:.2f}); failed calls: "
                f"{failures or 'none'}")
    result.expect(multiplication <= bound + 0.02,
                  f"retries multiplied the load by {multiplication:.2f} (> {bound:.2f})")
    return result


def _default_retry_policy():
    from clients.transport import RetryPolicy

    return RetryPolicy()
