"""The benchmark's machinery (scripts/bench): bounded loops, the results.json schema, the report
and plots, and one small cell against the real TorchServe. Speed itself is never asserted."""

from __future__ import annotations

import json
import threading
import time

from scripts.bench import report, targets
from scripts.bench.load import Cell, closed_loop, in_process

ROW_KEYS = {"target", "image", "concurrency", "rps", "p50_ms", "p95_ms", "p99_ms"}


def _sender_factory(delay: float, in_flight: list[int], peak: list[int]):
    lock = threading.Lock()

    def make():
        def send():
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(delay)
            with lock:
                in_flight[0] -= 1

        return send, lambda: None

    return make


def test_closed_loop_is_bounded_by_count_and_keeps_concurrency():
    in_flight, peak = [0], [0]
    cell = closed_loop("noop", "small", _sender_factory(0.01, in_flight, peak), 4,
                       max_requests=40, max_seconds=60)
    assert cell.requests == 40 and cell.errors == 0
    assert peak[0] == 4  # exactly `concurrency` requests in flight, never more
    assert cell.p50_ms >= 10 and cell.p50_ms <= cell.p95_ms <= cell.p99_ms
    assert 0 < cell.rps <= 4 / 0.01 * 1.05


def test_closed_loop_is_bounded_by_time_and_counts_errors():
    def make():
        def send():
            time.sleep(0.05)
            raise RuntimeError("refused")

        return send, lambda: None

    started = time.perf_counter()
    cell = closed_loop("stock", "12mp", make, 2, max_requests=10_000, max_seconds=0.5)
    assert time.perf_counter() - started < 5
    assert cell.requests == 0 and cell.errors > 0 and "refused" in cell.first_error


def test_in_process_counts_images_not_batches():
    cell = in_process("raw:eager", "small", 8, lambda: time.sleep(0.002), max_images=80,
                      max_seconds=30)
    assert cell.requests == 10 and cell.concurrency == 8
    assert cell.rps > 0


def test_outputs_have_the_agreed_schema(tmp_path):
    cells = [Cell(t, img, c, 100.0 / c, 10.0 * c, 12.0 * c, 13.0 * c, requests=50)
             for t in ("noop", "stock", "handler:eager", "handler:onnxruntime", "raw:onnxruntime")
             for img in ("small", "12mp") for c in (1, 8)]
    report.write_json(tmp_path / "results.json", cells)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert isinstance(rows, list) and len(rows) == len(cells)
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["image"] in ("small", "12mp") and isinstance(row["concurrency"], int)
    pngs = report.plot(tmp_path, cells)
    assert {p.name for p in pngs} == {"throughput_small.png", "latency_small.png",
                                      "throughput_12mp.png", "latency_12mp.png"}
    assert all(p.stat().st_size > 10_000 for p in pngs)
    report.write_markdown(tmp_path / "report.md", cells, quick=True,
                          default_runtime="onnxruntime", cold={"server_s": 3.0, "noop": 1.0},
                          breakdown=[{"step": "decode", "image": "small", "ms": 1.0}],
                          agreement={"onnxruntime": 1e-7}, settings={}, baseline=None, notes=[])
    text = (tmp_path / "report.md").read_text()
    assert "| handler:onnxruntime | 8 |" in text and "throughput_small.png" in text
    # 100/8 vs 100/8 -> 1.0x: the ratio table is computed from the rows, not typed in.
    assert "handler:onnxruntime vs stock, small, 8 concurrent (img/s) | this run | 1.00×" in text


def test_a_served_cell_through_the_bundle_client(torchserve, sample_images):
    """One small cell against the real TorchServe (token auth on), as make bench runs it."""
    from scripts.bench.__main__ import sender_factory

    target = targets.Target("handler:eager", "efficientnet_lite0", "image")
    data = sample_images["cat"].read_bytes()
    cell = closed_loop(target.name, "small", sender_factory(torchserve, target, data), 2,
                       max_requests=6, max_seconds=120)
    assert cell.errors == 0, cell.first_error
    assert cell.requests == 6 and cell.rps > 0
