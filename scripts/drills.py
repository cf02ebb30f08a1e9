"""Fault and abuse drills against the real TorchServe (started by the launcher on free loopback
ports, token authorization on) and against the real SavedModel run in-process by TensorFlow.

    python -m scripts.drills [--quick] [--only NAME[,NAME...]] [--json PATH]     (make drills)

Prints one row per drill: requests sent; answers by class (2xx / 4xx / 5xx); `conn err` (the
connection failed clearly: refused or reset); `lost` (neither an answer nor an error before the
deadline: must be 0); worker restarts; recovery seconds; peak worker RSS. Exits 1 when any
drill's expectation failed (each failed expectation is printed under the table).

Every loop is bounded in count and in time, and every connection goes to 127.0.0.1. --quick
runs smaller counts (tests/test_drills.py runs a subset of the drills that way).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import requests

from scripts import ROOT, catalog, samples
from scripts import drill_payloads as payloads
from scripts import torchserve as launcher

MODEL = "efficientnet_lite0"
MB = 1024 * 1024
# Growth of the worker's resident memory a drill may cause (issue 11: < 50 MB).
MAX_RSS_GROWTH_MB = 50.0
# TorchServe 0.12 refuses a wrong or expired key with 401, or 400 for some malformed ones.
REFUSED_KEY = (400, 401)
# TorchServe's job_queue_size (its default: config/torchserve.properties does not set it).
JOB_QUEUE_SIZE = 100


# ----------------------------------------------------------------------------------- results

@dataclass
class Result:
    drill: str
    sent: int = 0
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    conn_errors: int = 0
    lost: int = 0
    restarts: int = 0
    recovery_s: float | None = None
    peak_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def expect(self, condition: bool, failure: str) -> None:
        if not condition:
            self.failures.append(failure)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def count(self, outcomes: Iterable[Outcome]) -> None:
        for out in outcomes:
            self.sent += 1
            if out.status is None:
                if out.kind == "conn":
                    self.conn_errors += 1
                else:
                    self.lost += 1
            elif out.status < 300:
                self.ok += 1
            elif out.status < 500:
                self.client_errors += 1
            else:
                self.server_errors += 1

    def expect_nothing_lost(self) -> None:
        self.expect(self.lost == 0, f"{self.lost} request(s) got neither an answer nor an error")


@dataclass
class Outcome:
    status: int | None
    kind: str  # "http" (an answer), "conn" (clear connection failure), "lost" (deadline passed)
    seconds: float
    tag: str = ""
    body: bytes = b""


COLUMNS = ("drill", "sent", "2xx", "4xx", "5xx", "conn err", "lost", "restarts", "recovery s",
           "peak RSS MB", "result")


def table(results: list[Result]) -> str:
    rows = [COLUMNS]
    for r in results:
        rows.append((r.drill, str(r.sent), str(r.ok), str(r.client_errors), str(r.server_errors),
                     str(r.conn_errors), str(r.lost), str(r.restarts),
                     "-" if r.recovery_s is None else f"{r.recovery_s:.1f}",
                     "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}",
                     "pass" if r.passed else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


# ------------------------------------------------------------------------------ the server

class Target:
    """The TorchServe under drill: its launcher record, processes and a request helper."""

    def __init__(self, server: launcher.Server) -> None:
        self.server = server
        self.model = catalog.load()[MODEL]
        self.timeout = float(self.model.workers.response_timeout_s) + 15.0
        self._local = threading.local()

    # -- processes --
    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.server.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def workers(self) -> list[psutil.Process]:
        return [p for p in self.tree() if _cmdline_has(p, "model_service_worker")]

    def frontend(self) -> psutil.Process | None:
        return next((p for p in self.tree() if _cmdline_has(p, "org.pytorch.serve")), None)

    def worker_pids(self) -> set[int]:
        return {p.pid for p in self.workers()}

    def worker_rss_mb(self) -> float:
        total = 0.0
        for proc in self.workers():
            try:
                total += proc.memory_info().rss / MB
            except psutil.Error:
                pass
        return total

    def frontend_rss_mb(self) -> float:
        proc = self.frontend()
        try:
            return proc.memory_info().rss / MB if proc else 0.0
        except psutil.Error:
            return 0.0

    def ready(self) -> bool:
        try:
            return launcher.is_ready(self.server)
        except Exception:  # noqa: BLE001  (anything short of an answer means: not ready yet)
            return False

    def wait_ready(self, timeout: float) -> float | None:
        """Seconds until every worker is READY again (None: not within timeout)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.ready():
                return time.monotonic() - started
            time.sleep(0.2)
        return None

    # -- requests --
    @property
    def url(self) -> str:
        return f"{self.server.inference_url}/predictions/{MODEL}"

    def headers(self, token: bool = True) -> dict[str, str]:
        return self.server.auth("inference") if token else {}

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def send(self, body: bytes, tag: str = "", headers: dict[str, str] | None = None,
             deadline: float | None = None) -> Outcome:
        """One POST, never retried; classified as an answer, a clear failure or lost (no answer
        within `deadline` seconds, default: the model's response timeout + 15 s)."""
        started = time.monotonic()
        try:
            resp = self._session().post(self.url, data=body,
                                        headers=self.headers() if headers is None else headers,
                                        timeout=(5.0, deadline or self.timeout))
            return Outcome(resp.status_code, "http", time.monotonic() - started, tag,
                           resp.content[:300])
        except requests.Timeout:
            return Outcome(None, "lost", time.monotonic() - started, tag)
        except requests.ConnectionError:
            return Outcome(None, "conn", time.monotonic() - started, tag)


def _cmdline_has(proc: psutil.Process, text: str) -> bool:
    try:
        return any(text in part for part in proc.cmdline())
    except psutil.Error:
        return False


class Sampler:
    """Peak worker and frontend RSS while a drill runs (sampled every 0.1 s)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.baseline_worker = target.worker_rss_mb()
        self.baseline_frontend = target.frontend_rss_mb()
        self.peak_worker = self.baseline_worker
        self.peak_frontend = self.baseline_frontend
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_worker = max(self.peak_worker, self.target.worker_rss_mb())
            self.peak_frontend = max(self.peak_frontend, self.target.frontend_rss_mb())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def worker_growth(self) -> float:
        return self.peak_worker - self.baseline_worker

    @property
    def frontend_growth(self) -> float:
        return self.peak_frontend - self.baseline_frontend


def run_load(target: Target, bodies: list[tuple[str, bytes]], threads: int,
             headers: dict[str, str] | None = None, deadline: float | None = None
             ) -> list[Outcome]:
    """Send every (tag, body) once from `threads` threads; returns outcomes in input order."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda item: target.send(item[1], item[0], headers, deadline),
                             bodies))


def throughput(target: Target, body: bytes, count: int = 16, threads: int = 8) -> float:
    """Requests per second the server sustains right now (the machine may be shared)."""
    started = time.monotonic()
    run_load(target, [("warm", body)] * count, threads)
    return count / (time.monotonic() - started)


def good_bodies() -> dict[str, bytes]:
    photos = samples.write_all()
    return {name: photos[name].read_bytes() for name in ("cat", "coffee")}


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


def _chunked_post(target: Target, size: int, token: bool, deadline_s: float = 30.0
                  ) -> tuple[int | None, float, int]:
    """POST `size` bytes chunked over a raw socket, reading the answer as soon as the server
    sends one. Returns (status or None, seconds, bytes sent)."""
    headers = [f"POST /predictions/{MODEL} HTTP/1.1", f"Host: 127.0.0.1:{target.server.ports.inference}",
               "Transfer-Encoding: chunked", "Content-Type: application/octet-stream"]
    if token:
        headers.append(f"Authorization: Bearer {target.server.keys()['inference']}")
    chunk = os.urandom(64 * 1024)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", target.server.ports.inference), 5.0) as sock:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        try:
            while sent < size and time.monotonic() - started < deadline_s:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(frame)
                sent += len(chunk)
            else:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(max(1.0, deadline_s - (time.monotonic() - started)))
        try:
            head = sock.recv(4096)
        except (TimeoutError, ConnectionResetError):
            return None, time.monotonic() - started, sent
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return status, time.monotonic() - started, sent


def drill_big_bodies(target: Target, quick: bool) -> Result:
    """33 MiB and 100 MiB chunked bodies, with and without a token, in rounds: a 413 (or 401)
    once the limit is read, never the whole body. Memory: the JVM keeps refused buffers until a
    collection, so the frontend's RSS rises over the first rounds; bounded means it stops
    rising (the peak of the later rounds is not above the peak of the earlier ones)."""
    result = Result("33/100 MiB chunked bodies")
    limit = 32 * MB  # config/torchserve.properties max_request_size
    sizes = [33 * MB] if quick else [33 * MB, 100 * MB]
    rounds = 8 if quick else 10
    baseline = target.frontend_rss_mb()
    peaks: list[float] = []
    with Sampler(target) as sampler:
        for number in range(rounds):
            for size in sizes:
                for token in (True, False):
                    status, seconds, sent = _chunked_post(target, size, token)
                    result.count([Outcome(status, "http" if status else "lost", seconds)])
                    label = f"{size // MB} MiB {'with' if token else 'without'} token"
                    if number == 0:
                        result.note(f"{label}: HTTP {status} after {seconds:.2f}s, "
                                    f"{sent / MB:.0f} MiB sent")
                    expected = (413,) if token else (401, 413)
                    result.expect(status in expected,
                                  f"{label}: HTTP {status}, expected {expected}")
                    # `sent` counts what the sockets' buffers took (several MiB on loopback)
                    # before the 413 arrived, not only what the server read.
                    result.expect(sent <= limit + 16 * MB,
                                  f"{label}: {sent / MB:.0f} MiB sent before the refusal")
            peaks.append(sampler.peak_frontend)
    early, late = max(peaks[: rounds // 2]), max(peaks[rounds // 2 :])
    result.peak_rss_mb = sampler.peak_worker
    result.note(f"frontend RSS {baseline:.0f} MB before; peak after each round: "
                f"{', '.join(f'{p:.0f}' for p in peaks)} MB; worker growth "
                f"{sampler.worker_growth:.0f} MB")
    result.expect(sampler.worker_growth < MAX_RSS_GROWTH_MB, "the worker's memory grew")
    # Measured: +300..370 MB over the first rounds (Netty aggregates up to max_request_size in
    # pooled buffers before refusing), then a plateau that moves by tens of MB with the
    # collector's timing; a 100 MiB body costs what a 33 MiB one does.
    result.expect(late - early < 2 * limit / MB,
                  f"the frontend still grows: peak {early:.0f} MB in the first half of the "
                  f"rounds, {late:.0f} MB in the second")
    result.expect_nothing_lost()
    return result


def drill_slowloris(target: Target, quick: bool) -> Result:
    """Many connections trickling a header byte by byte (bounded count and time) while good
    requests run: the good requests are all answered and their p99 stays bounded."""
    result = Result("slowloris")
    connections, seconds = (100, 6.0) if quick else (300, 12.0)
    cat = good_bodies()["cat"]
    baseline = [o.seconds for o in run_load(target, [("cat", cat)] * 24, 4)]
    socks: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:
        deadline = time.monotonic() + seconds
        for _ in range(connections):
            try:
                sock = socket.create_connection(("127.0.0.1", target.server.ports.inference), 5)
                sock.sendall(f"POST /predictions/{MODEL} HTTP/1.1\r\nHost: x\r\n".encode())
                socks.append(sock)
            except OSError:
                break
        while not stop.is_set() and time.monotonic() < deadline:
            for sock in socks:
                try:
                    sock.sendall(b"X")
                except OSError:
                    pass
            stop.wait(1.0)

    attacker = threading.Thread(target=trickle)
    with Sampler(target) as sampler:
        attacker.start()
        time.sleep(1.0)
        outcomes = run_load(target, [("cat", cat)] * (24 if quick else 60), 4)
        stop.set()
        attacker.join()
    for sock in socks:
        sock.close()
    result.count(outcomes)
    result.peak_rss_mb = sampler.peak_worker
    under = [o.seconds for o in outcomes]
    # The machine may be shared: the bound leaves room for noise, not for starvation.
    bound = 3 * p99(baseline) + 5.0
    result.note(f"{len(socks)} slow connections held; good p99 {p99(under):.2f}s under attack "
                f"vs {p99(baseline):.2f}s before (bound {bound:.2f}s)")
    result.expect(result.ok == len(outcomes), "a good request was not answered 200")
    result.expect(p99(under) <= bound, f"good p99 {p99(under):.2f}s > {bound:.2f}s")
    result.expect_nothing_lost()
    return result


def drill_bombs(target: Target, quick: bool) -> Result:
    """Decompression bombs in every accepted format, container formats (ICO/ICNS/PSD/EPS) and
    many-frame GIF/TIFF, mixed with good requests: bombs get a fast 4xx, the many-frame images
    their first frame (or a 4xx), the neighbours 200, the worker survives and its memory stays
    within MAX_RSS_GROWTH_MB."""
    result = Result("bombs + containers + frames")
    good = good_bodies()
    hostile = dict(payloads.bombs())
    animated = {"gif-400-frames": payloads.many_frame_gif(),
                "tiff-200-frames": payloads.many_frame_tiff()}
    bodies: list[tuple[str, bytes]] = []
    for name, data in {**hostile, **animated}.items():
        bodies += [(name, data), ("good", good["cat"]), ("good", good["coffee"])]
    rounds = 1 if quick else 3
    before = target.worker_pids()
    # The baseline is taken warm: the same load with good photos in the hostile slots first,
    # so the allocator's high-water mark for full batches of photos is already reached (the
    # bombs alone move the worker's RSS by ~2 MB; concurrent good batches by up to ~70 MB).
    # The growth is counted from the peak of that control load, so it is what the hostile
    # bodies cost beyond good photos in their place.
    warm = [(tag, good["cat"] if tag != "good" else data) for tag, data in bodies]
    with Sampler(target) as control:
        run_load(target, warm * 2, 6)
    with Sampler(target) as sampler:
        sampler.baseline_worker = control.peak_worker
        outcomes = run_load(target, bodies * rounds, 6)
    result.count(outcomes)
    result.peak_rss_mb = sampler.peak_worker
    result.restarts = len(target.worker_pids() - before)
    for out in outcomes:
        if out.tag == "good":
            result.expect(out.status == 200, f"a good neighbour got {out.status}")
        elif out.tag in hostile:
            result.expect(out.status is not None and 400 <= out.status < 500,
                          f"{out.tag}: HTTP {out.status} {out.body[:120]!r}")
        else:
            result.expect(out.status in (200, 400, 413, 415), f"{out.tag}: HTTP {out.status}")
    slowest = max((o for o in outcomes if o.tag != "good"), key=lambda o: o.seconds)
    statuses = {}
    for out in outcomes:
        if out.tag != "good":
            statuses.setdefault(out.tag, set()).add(out.status)
    result.note("answers: " + ", ".join(f"{k} {sorted(v, key=str)}" for k, v in statuses.items()))
    result.note(f"slowest hostile answer {slowest.seconds:.2f}s ({slowest.tag}); worker RSS "
                f"growth {sampler.worker_growth:.1f} MB")
    result.expect(result.restarts == 0, "the worker was restarted")
    result.expect(sampler.worker_growth < MAX_RSS_GROWTH_MB,
                  f"worker RSS grew {sampler.worker_growth:.0f} MB")
    result.expect_nothing_lost()
    return result


def drill_progressive(target: Target, quick: bool) -> Result:
    """A progressive JPEG of thousands of scans, alone and beside good requests: answered within
    the response timeout, the worker survives, the neighbours are answered."""
    result = Result("progressive JPEG, 3000 scans")
    scans = 3000
    data = payloads.progressive_jpeg_scans(scans)
    cat = good_bodies()["cat"]
    before = target.worker_pids()
    with Sampler(target) as sampler:
        outcomes = run_load(target, [("scans", data)] + [("good", cat)] * 6, 4)
    result.count(outcomes)
    result.peak_rss_mb = sampler.peak_worker
    result.restarts = len(target.worker_pids() - before)
    bomb = outcomes[0]
    result.note(f"{len(data) / MB:.1f} MB, {scans} scans: HTTP {bomb.status} in "
                f"{bomb.seconds:.1f}s; good neighbours p99 "
                f"{p99([o.seconds for o in outcomes[1:]]):.1f}s")
    result.expect(bomb.status is not None and bomb.seconds < target.timeout,
                  "the scan bomb was not answered within the response timeout")
    result.expect(all(o.status == 200 for o in outcomes[1:]), "a good neighbour failed")
    result.expect(result.restarts == 0, "the worker was restarted")
    result.expect_nothing_lost()
    return result


def _soak_bodies(count: int) -> list[tuple[str, bytes]]:
    import base64
    import io

    from PIL import Image

    good = good_bodies()
    with Image.open(io.BytesIO(good["coffee"])) as image:
        png = payloads.encode(image.convert("RGB").resize((320, 240)), "PNG")
    instances = json.dumps({"instances": [{"b64": base64.b64encode(good["cat"]).decode()}] * 2})
    mix = [("jpeg", good["cat"]), ("jpeg", good["coffee"]), ("png", png), ("jpeg", good["cat"]),
           ("instances", instances.encode()), ("jpeg", good["cat"]),
           ("bad-bytes", b"not an image at all"), ("bad-topk", b'{"topk": "\xc3\xa9"}'),
           ("truncated", payloads.truncated(good["cat"])), ("jpeg", good["coffee"])]
    return [mix[i % len(mix)] for i in range(count)]


def drill_soak(target: Target, quick: bool) -> Result:
    """Several thousand mixed requests (good photos, PNG, instance lists, bad bytes, bad
    parameters, truncated JPEGs): no 5xx, nothing lost, the worker's RSS growth bounded."""
    result = Result("soak, mixed")
    count = 300 if quick else 3000
    bodies = _soak_bodies(count)
    run_load(target, bodies[:100], 4)  # warm: allocator arenas, lazy imports, every code path
    before = target.worker_pids()
    checkpoints = [target.worker_rss_mb()]
    outcomes: list[Outcome] = []
    started = time.monotonic()
    segments = 4
    with Sampler(target) as sampler:
        for i in range(segments):
            part = bodies[i * count // segments : (i + 1) * count // segments]
            outcomes += run_load(target, part, 4)
            checkpoints.append(target.worker_rss_mb())
    elapsed = time.monotonic() - started
    result.count(outcomes)
    result.peak_rss_mb = sampler.peak_worker
    result.restarts = len(target.worker_pids() - before)
    growth = checkpoints[-1] - checkpoints[0]
    late = checkpoints[-1] - checkpoints[segments // 2]
    result.note(f"{count} requests in {elapsed:.0f}s ({count / elapsed:.1f}/s); worker RSS at "
                f"each quarter: {' -> '.join(f'{c:.0f}' for c in checkpoints)} MB (growth "
                f"{growth:+.1f} MB, second half {late:+.1f} MB)")
    for tag in ("jpeg", "png", "instances"):
        bad = [o.status for o in outcomes if o.tag == tag and o.status != 200]
        result.expect(not bad, f"good {tag} requests answered {sorted(set(bad), key=str)}")
    for tag in ("bad-bytes", "bad-topk", "truncated"):
        bad = [o.status for o in outcomes if o.tag == tag and not (o.status and
                                                                   400 <= o.status < 500)]
        result.expect(not bad, f"{tag} answered {sorted(set(bad), key=str)}, expected 4xx")
    result.expect(result.restarts == 0, "the worker was restarted")
    result.expect(growth < MAX_RSS_GROWTH_MB, f"worker RSS grew {growth:.0f} MB")
    # Bounded, not creeping: the second half adds little next to the first.
    result.expect(late < MAX_RSS_GROWTH_MB / 2, f"worker RSS still growing: {late:+.0f} MB "
                  "in the second half")
    result.expect_nothing_lost()
    return result


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


def drill_tf_graph(_target: Target | None, quick: bool) -> Result:
    """The SavedModel run by TensorFlow in this process: a 20000^2 PNG, a many-frame GIF and a
    truncated JPEG batched with good instances. The bad ones get their `error`, fast and
    without decoding the bomb; the good ones get the answer they get alone."""
    import torch  # noqa: F401  (before tensorflow)
    import tensorflow as tf

    result = Result("TF graph: bombs batched")
    model = catalog.load()[MODEL]
    loaded = tf.saved_model.load(str(model.savedmodel_dir))
    predict = loaded.signatures["serving_default"]
    good = good_bodies()
    batch = {"good-cat": good["cat"], "png-20000^2": payloads.png_bomb(),
             "gif-400-frames": payloads.many_frame_gif(400, 1000),
             "truncated-jpeg": payloads.truncated(good["cat"]), "good-coffee": good["coffee"],
             "gif-65535^2": payloads.gif_bomb(), "bmp-20000^2": payloads.bmp_bomb()}
    alone = {k: predict(images=tf.constant([batch[k]])) for k in ("good-cat", "good-coffee")}
    me = psutil.Process()
    baseline = me.memory_info().rss / MB
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], me.memory_info().rss / MB)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    out = predict(images=tf.constant(list(batch.values())))
    elapsed = time.monotonic() - started
    stop.set()
    sampler.join()
    errors_ = [e.decode() for e in out["error"].numpy()]
    for row, (name, _) in enumerate(batch.items()):
        result.sent += 1
        if errors_[row]:
            result.client_errors += 1
        else:
            result.ok += 1
        if name.startswith("good"):
            same = (out["class_ids"].numpy()[row] == alone[name]["class_ids"].numpy()[0]).all()
            result.expect(not errors_[row] and same, f"{name}: not answered as when alone")
        elif name.startswith("gif-400"):
            result.expect(not errors_[row], f"{name}: {errors_[row]} (first frame expected)")
        else:
            result.expect(bool(errors_[row]), f"{name}: no error")
    growth = peak[0] - baseline
    result.peak_rss_mb = peak[0]
    result.note(f"batch of {len(batch)} answered in {elapsed:.2f}s, RSS growth {growth:.0f} MB; "
                + "; ".join(f"{n}: {e[:60]!r}" for n, e in zip(batch, errors_) if e))
    result.expect(growth < MAX_RSS_GROWTH_MB + 100,
                  f"RSS grew {growth:.0f} MB (the 1000x1000 GIF frame alone is ~50 MB of floats)")
    return result


# ---------------------------------------------------------------------------------- driver

SERVER_DRILLS: dict[str, Callable[[Target, bool], Result]] = {
    "worker-kill": drill_worker_kill,
    "worker-stop": drill_worker_stop,
    "flood": drill_flood,
    "big-bodies": drill_big_bodies,
    "slowloris": drill_slowloris,
    "bombs": drill_bombs,
    "progressive": drill_progressive,
    "soak": drill_soak,
    "tokens": drill_tokens,
    # Last: it kills and restarts the shared server.
    "frontend-kill": drill_frontend_kill,
}
ALL = [*SERVER_DRILLS, "tf-graph"]


def run(names: list[str], quick: bool = False, log: Callable[[str], None] = print
        ) -> list[Result]:
    """Run the named drills (one shared TorchServe for the server drills) and return results."""
    results = []
    server_names = [n for n in names if n in SERVER_DRILLS]
    if server_names:
        run_dir = Path(tempfile.mkdtemp(prefix="drills-"))
        log(f"[drills] starting TorchServe ({MODEL}) on free loopback ports in {run_dir}")
        target = Target(launcher.start(run_dir, launcher.Ports.free(), [MODEL]))
        try:
            for name in server_names:
                log(f"[drills] {name} ...")
                started = time.monotonic()
                try:
                    result = SERVER_DRILLS[name](target, quick)
                except Exception as exc:  # noqa: BLE001  (a drill that crashes is a failed drill)
                    result = Result(name, failures=[f"the drill crashed: {exc!r}"])
                log(f"[drills] {name}: {'pass' if result.passed else 'FAIL'} "
                    f"({time.monotonic() - started:.0f}s)")
                results.append(result)
                if not target.ready() and target.wait_ready(60.0) is None:
                    log("[drills] the server did not recover; stopping the server drills")
                    break
        finally:
            launcher.stop(target.server.run_dir)
    if "tf-graph" in names:
        log("[drills] tf-graph ...")
        try:
            results.append(drill_tf_graph(None, quick))
        except Exception as exc:  # noqa: BLE001
            results.append(Result("TF graph: bombs batched", failures=[f"crashed: {exc!r}"]))
    return results


def report(results: list[Result]) -> str:
    lines = [table(results), ""]
    for r in results:
        for text in r.notes:
            lines.append(f"  {r.drill}: {text}")
        for text in r.failures:
            lines.append(f"  {r.drill}: FAILED: {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--only", help=f"comma-separated drills (default: all): {','.join(ALL)}")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else ALL
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"unknown drills {unknown}; choose from {ALL}")
    results = run(names, args.quick)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    failed = [r.drill for r in results if not r.passed]
    if failed:
        print(f"\n{len(failed)} drill(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
