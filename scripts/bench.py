"""Benchmarks against a real TorchServe started by the launcher on free loopback ports.

    python -m scripts.bench [--requests 100] [--concurrency 8] [--json build/bench/torchserve.json]

Measures: cold start (launcher start -> every worker READY, archives already built), single
request latency (sequential, one connection: p50 / p95 / p99), and throughput with concurrent
clients (requests per second, latency percentiles, mean batch size from the BatchSize metric).
Every loop is bounded by a request count; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from scripts import build, catalog, samples
from scripts import torchserve as launcher


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "mean": statistics.fmean(ordered)}


def batch_stats(server: launcher.Server, model: str) -> tuple[float, float]:
    """(sum, count) of the BatchSize histogram for a model."""
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("ModelName") != model:
                continue
            if sample.name == "BatchSize_sum":
                total += sample.value
            elif sample.name == "BatchSize_count":
                count += sample.value
    return total, count


def sequential(server, model: str, data: bytes, n: int) -> dict:
    url = f"{server.inference_url}/predictions/{model}"
    headers = {**server.auth(), "Content-Type": "image/jpeg"}
    with requests.Session() as session:
        for _ in range(3):  # warm the connection and the worker
            session.post(url, data=data, headers=headers, timeout=60).raise_for_status()
        latencies = []
        for _ in range(n):
            started = time.perf_counter()
            session.post(url, data=data, headers=headers, timeout=60).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
    return {"requests": n, "latency_ms": percentiles(latencies)}


def concurrent_load(server, model: str, data: bytes, n: int, concurrency: int) -> dict:
    url = f"{server.inference_url}/predictions/{model}"
    headers = {**server.auth(), "Content-Type": "image/jpeg"}
    local = threading.local()

    def one(_):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        started = time.perf_counter()
        session.post(url, data=data, headers=headers, timeout=120).raise_for_status()
        return (time.perf_counter() - started) * 1000

    sum_before, count_before = batch_stats(server, model)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, range(n)))
    elapsed = time.perf_counter() - started
    sum_after, count_after = batch_stats(server, model)
    batches = count_after - count_before
    return {
        "requests": n,
        "concurrency": concurrency,
        "throughput_rps": n / elapsed,
        "latency_ms": percentiles(latencies),
        "mean_batch_size": (sum_after - sum_before) / batches if batches else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path, default=catalog.ROOT / "build" / "bench" /
                        "torchserve.json")
    args = parser.parse_args(argv)

    models = catalog.for_server("torchserve")
    build.build(models, servers=("torchserve",))
    photo = samples.write_all()["cat"].read_bytes()
    results: dict = {"models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-") as run_dir:
        started = time.perf_counter()
        server = launcher.start(run_dir=Path(run_dir), ports=launcher.Ports.free())
        results["cold_start_s"] = time.perf_counter() - started
        try:
            for model in models:
                results["models"][model.name] = {
                    "sequential": sequential(server, model.name, photo, args.requests),
                    "concurrent": concurrent_load(server, model.name, photo,
                                                  args.requests * 2, args.concurrency),
                }
        finally:
            launcher.stop(Path(run_dir))

    print(f"cold start (launcher -> READY): {results['cold_start_s']:.1f} s")
    for name, result in results["models"].items():
        seq, conc = result["sequential"], result["concurrent"]
        lat = seq["latency_ms"]
        print(f"{name}: sequential {seq['requests']} requests: p50 {lat['p50']:.1f} ms, "
              f"p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms")
        clat = conc["latency_ms"]
        batch = conc["mean_batch_size"]
        print(f"{name}: {conc['concurrency']} concurrent clients, {conc['requests']} requests: "
              f"{conc['throughput_rps']:.1f} req/s, p50 {clat['p50']:.1f} ms, "
              f"p95 {clat['p95']:.1f} ms, mean batch {batch:.2f}" if batch else "")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
