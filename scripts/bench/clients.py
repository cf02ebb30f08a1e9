"""Client-side overhead per request: the bundled client vs raw requests/urllib3/curl, REST vs
gRPC, against a TorchServe started by the launcher on free loopback ports.

    python -m scripts.bench.clients [--requests 50] [--run-dir DIR] [--json]

Two workloads: `predict` (the sample cat photo through efficientnet_lite0, dominated by the
model) and `ping` (no model work, so the difference between rows is almost pure client cost).
Requests are sequential (one in flight) so the numbers are latencies, not throughput, and
interleaved round-robin across rows so machine load drift does not favour one row.
curl's row uses curl's own time_total (process start-up excluded) of one process per request.
Bounded: --requests per row (plus 5 warm-up requests), loopback only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import urllib3

from scripts.build import samples
from scripts.serve import torchserve as launcher

MODEL = "efficientnet_lite0"
WARMUP = 5


def measure_interleaved(rows: list[tuple[str, Callable[[], object], bool]], n: int
                        ) -> dict[str, list[float]]:
    """Milliseconds per call for every row, round-robin: round i runs one request of each row,
    so a load change on the machine (2 shared cores) hits every row alike instead of whichever
    row happened to run at that moment. A self-timed row returns its own seconds (curl)."""
    for _, fn, _ in rows:
        for _ in range(WARMUP):
            fn()
    times: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    for _ in range(n):
        for name, fn, self_timed in rows:
            started = time.perf_counter()
            own = fn()
            elapsed = float(own) if self_timed else time.perf_counter() - started
            times[name].append(1000 * elapsed)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": statistics.median(ordered),
            "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
            "mean_ms": statistics.fmean(ordered)}


def run(server: launcher.Server, n: int) -> dict[str, dict[str, float]]:
    from clients import RetryPolicy, TorchServeClient, TorchServeGrpcClient, build_protos

    build_protos.generate()
    import grpc
    from google.protobuf import empty_pb2

    from clients._generated import inference_pb2, inference_pb2_grpc

    image = samples.path("cat").read_bytes()
    keys = server.keys()
    auth = {"Authorization": f"Bearer {keys['inference']}"}
    predict_url = f"{server.inference_url}/predictions/{MODEL}"
    ping_url = f"{server.inference_url}/ping"
    grpc_target = f"127.0.0.1:{server.ports.grpc_inference}"
    rows: list[tuple[str, Callable[[], object], bool]] = []

    def record(name: str, fn: Callable[[], object], self_timed: bool = False) -> None:
        rows.append((name, fn, self_timed))

    # --- raw baselines
    try:
        import requests

        session = requests.Session()
        record("predict rest  raw requests.Session", lambda: session.post(
            predict_url, data=image, headers={**auth, "Content-Type": "image/jpeg"},
            timeout=30).raise_for_status())
        record("ping    rest  raw requests.Session", lambda: session.get(
            ping_url, headers=auth, timeout=30).raise_for_status())
    except ImportError:
        print("requests not installed: skipping its rows", file=sys.stderr)
    pool = urllib3.PoolManager(retries=False)
    record("predict rest  raw urllib3", lambda: pool.request(
        "POST", predict_url, body=image, headers={**auth, "Content-Type": "image/jpeg"}).data)
    record("ping    rest  raw urllib3", lambda: pool.request("GET", ping_url, headers=auth).data)
    # curl reads the photo from a file that must outlive the (interleaved) measurement.
    scratch = Path(tempfile.mkdtemp(prefix="bench-clients-curl-"))
    photo = scratch / "cat.jpg"
    photo.write_bytes(image)
    if shutil.which("curl"):
        def curl(url: str, upload: bool) -> float:
            cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
                   "-H", f"Authorization: {auth['Authorization']}", url]
            if upload:
                cmd[1:1] = ["-H", "Content-Type: image/jpeg", "--data-binary", f"@{photo}"]
            status, seconds = subprocess.run(cmd, check=True, capture_output=True,
                                             text=True).stdout.split()
            if status != "200":
                raise RuntimeError(f"curl got HTTP {status} from {url}")
            return float(seconds)

        record("predict rest  raw curl (time_total)", lambda: curl(predict_url, True), True)
        record("ping    rest  raw curl (time_total)", lambda: curl(ping_url, False), True)
    channel = grpc.insecure_channel(grpc_target)
    stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
    metadata = (("authorization", auth["Authorization"]),)
    request = inference_pb2.PredictionsRequest(model_name=MODEL, input={"data": image})
    record("predict grpc  raw generated stub", lambda: stub.Predictions(
        request, metadata=metadata, timeout=30).prediction)
    record("ping    grpc  raw generated stub", lambda: stub.Ping(
        empty_pb2.Empty(), metadata=metadata, timeout=30).health)

    # --- the bundled client (retries on, as an application would use it)
    rest = TorchServeClient(server.inference_url, key_file=server.key_file, model=MODEL,
                            retry=RetryPolicy())
    grpc_client = TorchServeGrpcClient(grpc_target, key_file=server.key_file, model=MODEL)
    record("predict rest  clients.TorchServeClient", lambda: rest.predict(image))
    record("ping    rest  clients.TorchServeClient", rest.ping)
    record("predict grpc  clients.TorchServeGrpcClient", lambda: grpc_client.predict(image))
    record("ping    grpc  clients.TorchServeGrpcClient", grpc_client.ping)
    try:
        times = measure_interleaved(rows, n)
    finally:
        rest.close()
        grpc_client.close()
        channel.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {name: summary(values) for name, values in times.items()}


def overheads(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """Client median minus the matching raw median (ms)."""
    def med(name: str) -> float | None:
        return results.get(name, {}).get("median_ms")

    out = {}
    for work in ("predict", "ping"):
        for proto, client, raw in (("rest", "clients.TorchServeClient", "raw urllib3"),
                                   ("rest", "clients.TorchServeClient", "raw requests.Session"),
                                   ("grpc", "clients.TorchServeGrpcClient", "raw generated stub")):
            a, b = med(f"{work:<7} {proto}  {client}"), med(f"{work:<7} {proto}  {raw}")
            if a is not None and b is not None:
                out[f"{work} {proto}: client - {raw}"] = a - b
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50, help="measured requests per row")
    parser.add_argument("--run-dir", type=Path,
                        help="use the TorchServe started from this run dir (default: start one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 10000:
        parser.error("--requests must be 1..10000")
    started_here = args.run_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="bench-clients-")) if started_here else args.run_dir
    try:
        server = (launcher.start(run_dir, launcher.Ports.free(), [MODEL]) if started_here
                  else launcher.Server.load(run_dir))
        results = run(server, args.requests)
    finally:
        if started_here:
            launcher.stop(run_dir)
            shutil.rmtree(run_dir, ignore_errors=True)
    report = {"requests_per_row": args.requests, "rows": results,
              "client_overhead_ms": overheads(results)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'row':<46}{'median':>9}{'p90':>9}  (ms, {args.requests} sequential requests)")
        for name, row in results.items():
            print(f"{name:<46}{row['median_ms']:9.2f}{row['p90_ms']:9.2f}")
        print("\nclient overhead (median difference):")
        for name, value in report["client_overhead_ms"].items():
            print(f"  {name:<52}{value:+8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
