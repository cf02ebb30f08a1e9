"""The load: a bounded closed-loop threaded client, and the same loop in-process for raw rows.

Closed loop: `concurrency` threads each keep exactly one request in flight (send, wait for the
answer, send the next), so the server sees exactly that many concurrent requests. Each cell stops
after max_requests answers or max_seconds, whichever comes first. Every latency is kept (the
percentiles are exact, not histogram buckets).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

Sender = Callable[[], object]


@dataclass
class Cell:
    """One measured (target, image, concurrency) point: a results.json row plus details."""

    target: str
    image: str
    concurrency: int
    rps: float          # answers per second (images per second for raw rows: batch = concurrency)
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    client_cpu_ms: float | None = None  # this process's CPU per request (load generator cost)
    first_error: str | None = None

    def row(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def percentiles(latencies_ms: list[float]) -> tuple[float, float, float]:
    if not latencies_ms:
        return (float("nan"),) * 3
    p50, p95, p99 = np.percentile(np.asarray(latencies_ms), [50, 95, 99])
    return float(p50), float(p95), float(p99)


def closed_loop(target: str, image: str, make_sender: Callable[[], tuple[Sender, Callable]],
                concurrency: int, max_requests: int, max_seconds: float,
                warmup_per_thread: int = 2) -> Cell:
    """Run `concurrency` threads against one sender each; bounded by count and time."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    errors: list[str] = []
    start_gate = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def ticket() -> bool:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.perf_counter() >= deadline[0]:
                return False
            issued += 1
            return True

    def worker() -> None:
        send, close = make_sender()
        try:
            for _ in range(warmup_per_thread):
                try:
                    send()
                except Exception:  # noqa: BLE001  (a failing warm-up shows in the timed part)
                    pass
            start_gate.wait()
            while ticket():
                began = time.perf_counter()
                try:
                    send()
                except Exception as exc:  # noqa: BLE001  (counted and reported, not hidden)
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    latencies.append(elapsed)
        finally:
            close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + max_seconds + 600  # warm-up phase: no cut yet
    start_gate.wait(timeout=600)
    cpu_before = time.process_time()
    began = time.perf_counter()
    deadline[0] = began + max_seconds
    for thread in threads:
        thread.join(timeout=max_seconds + 180)
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    done = len(latencies)
    p50, p95, p99 = percentiles(latencies)
    return Cell(target, image, concurrency, done / wall if wall else 0.0, p50, p95, p99,
                requests=done, errors=len(errors), seconds=wall,
                client_cpu_ms=1000 * cpu / max(1, done + len(errors)),
                first_error=errors[0] if errors else None)


def in_process(target: str, image: str, batch: int, run_batch: Callable[[], object],
               max_images: int, max_seconds: float, warmup: int = 1) -> Cell:
    """Call run_batch() (one batch of `batch` images) sequentially; bounded by count and time.
    Latency is per batch; rps counts images."""
    for _ in range(warmup):
        run_batch()
    latencies = []
    began = time.perf_counter()
    deadline = began + max_seconds
    while len(latencies) * batch < max_images and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        run_batch()
        latencies.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - began
    p50, p95, p99 = percentiles(latencies)
    return Cell(target, image, batch, len(latencies) * batch / wall, p50, p95, p99,
                requests=len(latencies), seconds=wall)


def timed_ms(fn: Callable[[], object], repeats: int, max_seconds: float) -> float:
    """Median milliseconds of fn(), bounded by repeats and time (after one warm-up call)."""
    fn()
    times = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < repeats and (not times or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))
