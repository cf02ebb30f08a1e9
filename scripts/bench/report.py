"""The benchmark's outputs: results.json (rows), report.md (tables, ratios) and *.png plots."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

from scripts.bench.load import Cell

# The targets: (what, numerator target/image/concurrency, denominator, ratio wanted).
IMAGES = ("small", "12mp")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.machine()} Linux, {cpu}, {len(os.sched_getaffinity(0))} cores usable, "
            f"load average at the end {load}")


def _find(cells: list[Cell], target: str, image: str, concurrency: int) -> Cell | None:
    return next((c for c in cells if (c.target, c.image, c.concurrency) ==
                 (target, image, concurrency)), None)


def ratios(cells: list[Cell], default_runtime: str, baseline: list[dict] | None = None
           ) -> list[tuple[str, str, float | None, float]]:
    """(target statement, how measured, ratio, wanted) for the issue's targets."""
    mine = f"handler:{default_runtime}"

    def rps(target, image, conc, rows=None):
        if rows is not None:
            row = next((r for r in rows if (r["target"], r["image"], r["concurrency"]) ==
                        (target, image, conc)), None)
            return row["rps"] if row else None
        cell = _find(cells, target, image, conc)
        return cell.rps if cell else None

    def p50(target, image, rows=None):
        if rows is not None:
            row = next((r for r in rows if (r["target"], r["image"], r["concurrency"]) ==
                        (target, image, 1)), None)
            return row["p50_ms"] if row else None
        cell = _find(cells, target, image, 1)
        return cell.p50_ms if cell else None

    def div(a, b):
        return a / b if a is not None and b else None

    today = "baseline:eager" if _find(cells, "baseline:eager", "small", 8) else "handler:eager"
    out = [
        (f"{mine} vs {today} (today's handler), small, 8 concurrent (img/s)", "this run",
         div(rps(mine, "small", 8), rps(today, "small", 8)), 4.0),
        (f"{mine} vs stock, small, 8 concurrent (img/s)", "this run",
         div(rps(mine, "small", 8), rps("stock", "small", 8)), 5.0),
        (f"{mine} vs noop floor, small, 8 concurrent (img/s)", "this run",
         div(rps(mine, "small", 8), rps("noop", "small", 8)), 0.3),
        (f"{mine} vs stock, 12mp, 8 concurrent (img/s)", "this run",
         div(rps(mine, "12mp", 8), rps("stock", "12mp", 8)), 5.0),
        (f"{today} p50 / {mine} p50, small, sequential", "this run",
         div(p50(today, "small"), p50(mine, "small")), 2.0),
    ]
    if baseline:
        out += [
            (f"{mine} vs the baseline run's handler:eager, small, 8 concurrent (img/s)",
             "baseline file", div(rps(mine, "small", 8), rps("handler:eager", "small", 8,
                                                              baseline)), 4.0),
            (f"baseline handler:eager p50 / {mine} p50, small, sequential", "baseline file",
             div(p50("handler:eager", "small", baseline), p50(mine, "small")), 2.0),
        ]
    return out


def fastest_handler(cells: list[Cell]) -> str | None:
    """The runtime whose handler served most images/s at small, 8 concurrent. Every runtime
    measured passed the build's agreement check (its archive would not exist otherwise)."""
    best = max((c for c in cells if c.target.startswith("handler:") and c.image == "small"
                and c.concurrency == 8), key=lambda c: c.rps, default=None)
    return best.target.split(":", 1)[1] if best else None


def time_split(cells: list[Cell], breakdown: list[dict], runtime: str) -> list[dict]:
    def step(prefix: str, image: str) -> float | None:
        return next((b["ms"] for b in breakdown if b["step"].startswith(prefix)
                     and b["image"] in (image, "any")), None)

    rows = []
    for image in IMAGES:
        handler = _find(cells, f"handler:{runtime}", image, 1)
        noop = _find(cells, "noop", image, 1)
        parts = [step("decode", image), step("crop", image),
                 step(f"model {runtime}, batch 1", image)]
        if handler is None or noop is None or None in parts:
            continue
        rest = handler.p50_ms - noop.p50_ms - sum(parts)
        rows.append({"image": image, "handler": handler.p50_ms, "frontend": noop.p50_ms,
                     "decode": parts[0], "preprocess": parts[1], "model": parts[2],
                     "rest": rest})
    return rows


def throughput_split(cells: list[Cell], breakdown: list[dict], runtime: str,
                     workers: int) -> list[dict]:
    """At 8 concurrent: ms of wall time per image served, against the in-process cost of one
    image in one worker (decode + preprocess + 1/8 of a batch-8 model call) / workers."""
    rows = []
    for image in IMAGES:
        handler = _find(cells, f"handler:{runtime}", image, 8)
        noop = _find(cells, "noop", image, 8)
        steps = {b["step"].split(" (")[0].split(",")[0]: b["ms"] for b in breakdown
                 if b["image"] in (image, "any")}
        model8 = next((b["ms"] for b in breakdown
                       if b["step"].startswith(f"model {runtime}, batch 8")), None)
        decode, prep = steps.get("decode"), steps.get("crop + resize + scale")
        if not (handler and noop and handler.rps and noop.rps) or None in (model8, decode, prep):
            continue
        work = (decode + prep + model8 / 8) / max(1, workers)
        rows.append({"image": image, "handler": 1000 / handler.rps, "frontend": 1000 / noop.rps,
                     "decode": decode / max(1, workers), "preprocess": prep / max(1, workers),
                     "model": model8 / 8 / max(1, workers),
                     "rest": 1000 / handler.rps - 1000 / noop.rps - work})
    return rows


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def write_json(path: Path, cells: list[Cell]) -> None:
    path.write_text(json.dumps([c.row() for c in cells], indent=1) + "\n")


def write_markdown(path: Path, cells: list[Cell], *, quick: bool, default_runtime: str,
                   cold: dict, breakdown: list[dict], agreement: dict[str, float],
                   settings: dict, baseline: list[dict] | None, notes: list[str]) -> None:
    lines = ["# Benchmark", "",
             f"Machine: {machine()}. Mode: {'BENCH_QUICK (short)' if quick else 'full'}. "
             f"Server settings of every served classifier target: {settings}.", ""]
    fastest = fastest_handler(cells)
    if fastest:
        lines += [f"Fastest runtime in this run (handler, small image, 8 concurrent): "
                  f"**{fastest}**; the catalog's default for the classifier: "
                  f"**{default_runtime}**.", ""]
    lines += ["## Targets (ratios from this one run)", "",
              "| target | from | ratio | wanted | met |", "|---|---|---|---|---|"]
    for what, source, ratio, wanted in ratios(cells, default_runtime, baseline):
        met = "—" if ratio is None else ("yes" if ratio >= wanted else "NO")
        lines.append(f"| {what} | {source} | {_fmt(ratio, 2)}× | ≥ {wanted:g}× | {met} |")
    for image in IMAGES:
        rows = [c for c in cells if c.image == image]
        if not rows:
            continue
        lines += ["", f"## {image} image", "",
                  "| target | concurrency | img/s | p50 ms | p95 ms | p99 ms | requests | errors "
                  "| client CPU ms/req |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in sorted(rows, key=lambda c: (_order(c.target), c.concurrency)):
            lines.append(f"| {c.target} | {c.concurrency} | {_fmt(c.rps)} | {_fmt(c.p50_ms)} | "
                         f"{_fmt(c.p95_ms)} | {_fmt(c.p99_ms)} | {c.requests} | {c.errors} | "
                         f"{_fmt(c.client_cpu_ms, 2)} |")
    others = [c for c in cells if c.image not in IMAGES]
    if others:
        lines += ["", "## Other catalog models", "",
                  "| target | input | concurrency | req/s | p50 ms | p95 ms | p99 ms | errors |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in others:
            lines.append(f"| {c.target} | {c.image} | {c.concurrency} | {_fmt(c.rps)} | "
                         f"{_fmt(c.p50_ms)} | {_fmt(c.p95_ms)} | {_fmt(c.p99_ms)} | {c.errors} |")
    if cold:
        lines += ["", "## Cold start", "",
                  f"Launcher start to every worker READY, all {len(cold) - 1} archives at once: "
                  f"{_fmt(cold.get('server_s'))} s. Per worker (TorchServe's WorkerLoadTime: "
                  "process start and the handler's initialize, while the others load too):", "",
                  "| model | worker load s |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in cold.items() if k != "server_s"]
    split = time_split(cells, breakdown, default_runtime)
    if split:
        lines += ["", f"## Where one sequential request's time goes (handler:{default_runtime})",
                  "", "Frontend = the noop target's p50 (HTTP, queue, batch delay, worker IPC); "
                  "decode, preprocess and model measured in-process (median); the rest is the "
                  "handler's own overhead and noise.", "",
                  "| image | handler p50 ms | frontend (noop p50) | decode | preprocess | "
                  "model (batch 1) | rest |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['image']} | " + " | ".join(_fmt(r[k]) for k in (
            "handler", "frontend", "decode", "preprocess", "model", "rest")) + " |"
            for r in split]
    workers = int(settings.get("maxWorkers", 1) or 1)
    split8 = throughput_split(cells, breakdown, default_runtime, workers)
    if split8:
        lines += ["", f"## Where the time goes at 8 concurrent (handler:{default_runtime}, "
                  "ms of wall time per image)", "",
                  f"Served: 1000 / img/s. In-process costs divided by the {workers} worker(s) "
                  "that run in parallel; model = a batch-8 call / 8. The frontend row is the "
                  "noop floor's cost per request.", "",
                  "| image | handler ms/img | frontend (noop) | decode | preprocess | "
                  "model (batch 8, per image) | rest |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['image']} | " + " | ".join(_fmt(r[k], 2) for k in (
            "handler", "frontend", "decode", "preprocess", "model", "rest")) + " |"
            for r in split8]
    if breakdown:
        lines += ["", "## Where the time goes (in-process, median ms)", "",
                  "| step | image | ms |", "|---|---|---|"]
        lines += [f"| {b['step']} | {b['image']} | {_fmt(b['ms'], 2)} |" for b in breakdown]
    if agreement:
        lines += ["", "## Agreement with eager (build-time check, sample photos)", "",
                  "| runtime | max \\|Δp\\| |", "|---|---|"]
        lines += [f"| {k} | {v:.1e} |" for k, v in agreement.items()]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "Plots: " + ", ".join(f"![{p.stem}]({p.name})" for p in
                                         sorted(path.parent.glob("*.png"))), ""]
    path.write_text("\n".join(lines))


def _order(target: str) -> tuple:
    kind = target.split(":")[0]
    return ({"noop": 0, "stock": 1, "baseline": 2, "handler": 3, "raw": 4}.get(kind, 5), target)


def _concurrency_axis(ax, rows: list[Cell]) -> None:
    from matplotlib import ticker

    ax.set_xticks(sorted({c.concurrency for c in rows}))
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def plot(out: Path, cells: list[Cell]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for image in IMAGES:
        rows = [c for c in cells if c.image == image]
        if not rows:
            continue
        targets = sorted({c.target for c in rows}, key=_order)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for target in targets:
            points = sorted((c.concurrency, c.rps) for c in rows if c.target == target)
            ax.plot(*zip(*points), marker="o", label=target,
                    linestyle="--" if target.startswith("raw:") else "-")
        ax.set(xscale="log", yscale="log", xlabel="concurrency (raw: batch size)",
               ylabel="images / s", title=f"Throughput vs concurrency, {image} image")
        _concurrency_axis(ax, rows)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"throughput_{image}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
        for ax, key in zip(axes, ("p50_ms", "p95_ms", "p99_ms")):
            for target in targets:
                points = sorted((c.concurrency, getattr(c, key)) for c in rows
                                if c.target == target)
                ax.plot(*zip(*points), marker="o", label=target,
                        linestyle="--" if target.startswith("raw:") else "-")
            ax.set(xscale="log", yscale="log", xlabel="concurrency", title=key[:3])
            _concurrency_axis(ax, rows)
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("latency ms (raw: per batch)")
        axes[-1].legend(fontsize=7)
        fig.suptitle(f"Latency percentiles, {image} image")
        fig.tight_layout()
        path = out / f"latency_{image}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
