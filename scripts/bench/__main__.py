"""Entry point of `make bench`; see scripts/bench/__init__.py and docs/benchmarks.md."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from handlers import runtimes
from scripts import catalog
from scripts.build import export_runtimes, samples
from scripts.serve import torchserve as launcher
from scripts.bench import report, targets
from scripts.bench.load import Cell, closed_loop, in_process, timed_ms
from scripts.catalog import ROOT

OUT = ROOT / "build" / "bench"
TEXT = "A man is eating a piece of bread."


@dataclass(frozen=True)
class Plan:
    """How much to measure: bounded per cell by a count and a time."""

    concurrency: tuple[int, ...]
    max_requests: int
    max_seconds: float
    raw_images: int
    raw_seconds: float

    @classmethod
    def make(cls, quick: bool) -> "Plan":
        if quick:
            return cls((1, 8), 60, 6.0, 32, 3.0)
        return cls((1, 2, 4, 8, 16), 300, 15.0, 160, 8.0)


# --------------------------------------------------------------------------- inputs


def photo_12mp(out: Path) -> Path:
    """A 4000x3000 JPEG, like a phone photo: the cat upscaled, with sensor-like noise so the file
    has a realistic size (a smooth upscale would compress to a fraction of a real photo)."""
    from PIL import Image

    path = out / "photo_12mp.jpg"
    if path.is_file():
        return path
    cat = Image.open(samples.write_all()["cat"]).convert("RGB").resize((4000, 3000),
                                                                       Image.Resampling.BICUBIC)
    noise = np.random.default_rng(0).normal(0, 6, (3000, 4000, 3))
    pixels = np.clip(np.asarray(cat, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    tmp = path.with_suffix(".tmp")
    Image.fromarray(pixels).save(tmp, format="JPEG", quality=92)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- in-process rows


def classifier_pipeline(model: catalog.Model):
    """decode(bytes) -> HxWx3 uint8 and preprocess(rgb) -> CHW tensor, as the handler does."""
    from handlers import images

    cfg = model.input
    size, fraction = int(cfg["size"]), float(cfg["crop_fraction"])
    min_side = images.draft_side(size, fraction)

    def decode(data: bytes):
        return images.decode(data, int(cfg["max_image_pixels"]), min_side)

    def preprocess(rgb):
        return images.to_model_input(rgb, size, fraction, float(cfg["mean"]), float(cfg["std"]),
                                     torch.device("cpu"))

    return decode, preprocess


def raw_rows(model, kinds, photos, plan, breakdown, agreement) -> list[Cell]:
    """raw:<runtime> rows (decode + preprocess + model on a batch of `concurrency` images) and the
    in-process breakdown of where the time goes."""
    spec = export_runtimes.spec_for(model)
    decode, preprocess = classifier_pipeline(model)
    # Preprocessing runs torch ops too: give them the threads one served worker has.
    torch.set_num_threads(runtimes.threads_per_worker(model.workers.max))
    cells = []
    reference = spec.build_module()
    for image, data in photos.items():
        rgb = decode(data)
        breakdown.append({"step": "decode (JPEG, draft mode)", "image": image,
                          "ms": timed_ms(lambda: decode(data), 20, 3.0)})
        breakdown.append({"step": "crop + resize + scale", "image": image,
                          "ms": timed_ms(lambda: preprocess(rgb), 20, 3.0)})
    with tempfile.TemporaryDirectory(prefix="bench-raw-") as tmp:
        export_runtimes.export(spec, Path(tmp))
        for kind in kinds:
            agreement[kind] = (export_runtimes.agreement(spec, kind, Path(tmp), reference)
                               if kind != "eager" else 0.0)
            # The threads one served worker gets (cores // the catalog's workers).
            runtime = runtimes.load(kind, spec.build_module, spec.example, Path(tmp),
                                    torch.device("cpu"), model.workers.max)
            for batch in (1, 8):
                x = torch.zeros(batch, *spec.example[0].shape[1:])
                breakdown.append({"step": f"model {kind}, batch {batch} (per batch)",
                                  "image": "any", "ms": timed_ms(lambda: runtime(x), 20, 3.0)})
            for image, data in photos.items():
                for conc in plan.concurrency:
                    def run_batch(data=data, conc=conc):
                        batch = torch.stack([preprocess(decode(data)) for _ in range(conc)])
                        return runtime(batch)

                    cell = in_process(f"raw:{kind}", image, conc, run_batch, plan.raw_images,
                                      plan.raw_seconds)
                    print(_line(cell), flush=True)
                    cells.append(cell)
            del runtime
    return cells


# --------------------------------------------------------------------------- served rows


def sender_factory(server: launcher.Server, target: targets.Target, payload: bytes):
    from clients import RetryPolicy, Timeouts, TorchServeClient

    def make():
        client = TorchServeClient(server.inference_url, key_file=server.key_file,
                                  model=target.model, retry=RetryPolicy.none(),
                                  timeouts=Timeouts(connect=10, read=120))
        if target.payload == "text":
            return (lambda: client.predict({"text": payload.decode()})), client.close
        return (lambda: client.predict(payload)), client.close

    return make


class ColdStart:
    """Per-worker load time from TorchServe's WorkerLoadTime gauge (frontend metric)."""

    @staticmethod
    def read(server: launcher.Server) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        import requests

        text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
        loads: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("WorkerLoadTime"):
                    worker = sample.labels.get("WorkerName", "?")
                    # W-<port>-<model>_<version>
                    model = worker.split("-", 2)[-1].rsplit("_", 1)[0]
                    loads[model] = max(loads.get(model, 0.0), sample.value / 1000)
        return loads


def served_rows(server, served, photos, plan, extra_payloads) -> list[Cell]:
    cells = []
    image_targets = [t for t in served if t.payload == "image"]
    for image, data in photos.items():
        for conc in plan.concurrency:
            # Interleaved: every target runs in each (image, concurrency) cell back to back, so
            # a load change on the shared machine hits all targets of a cell alike.
            for target in image_targets:
                cell = closed_loop(target.name, image, sender_factory(server, target, data),
                                   conc, plan.max_requests, plan.max_seconds)
                print(_line(cell), flush=True)
                cells.append(cell)
    for target in (t for t in served if t.payload != "image"):
        label, data = extra_payloads[target.payload]
        for conc in (1, 8):
            cell = closed_loop(target.name, label, sender_factory(server, target, data),
                               conc, plan.max_requests, plan.max_seconds)
            print(_line(cell), flush=True)
            cells.append(cell)
    return cells


def _line(cell: Cell) -> str:
    err = f", {cell.errors} errors ({cell.first_error})" if cell.errors else ""
    return (f"[bench] {cell.target:<22} {cell.image:<6} c={cell.concurrency:<3} "
            f"{cell.rps:7.1f}/s  p50 {cell.p50_ms:7.1f}  p95 {cell.p95_ms:7.1f}  "
            f"p99 {cell.p99_ms:7.1f} ms{err}")


# --------------------------------------------------------------------------- main


def build_targets(store: Path, models: dict, kinds: tuple[str, ...], notes: list[str]):
    classifier = models[targets.CLASSIFIER]
    settings = targets.server_settings(classifier)
    served = [targets.noop_archive(store, settings), targets.stock_archive(store, classifier,
                                                                           settings)]
    served += [targets.handler_archive(store, classifier, kind) for kind in kinds]
    served.append(targets.baseline_archive(store, classifier))
    notes.append("baseline:eager is today's handler as it was served: eager runtime, 1 worker "
                 "(all cores as threads), batch 8, 10 ms window; every other classifier target "
                 "uses the catalog's batching and workers.")
    payloads = {}
    for name, payload in (("minilm_embeddings", "text"), ("face_detector", "face")):
        if name in models and "torchserve" in models[name].servers:
            served.append(targets.catalog_archive(store, models[name], payload))
    sample_files = samples.write_all()
    payloads["text"] = ("sentence", TEXT.encode())
    if "astronaut" in sample_files:
        payloads["face"] = ("astronaut", sample_files["astronaut"].read_bytes())
    return served, payloads, settings


def default_runtime(models: dict) -> str:
    return export_runtimes.model_runtime(models[targets.CLASSIFIER])


def render(out: Path, models: dict, baseline_path: Path | None) -> None:
    """report.md and the plots from results.json and details.json."""
    cells = [Cell(**row) for row in json.loads((out / "results.json").read_text())]
    details = json.loads((out / "details.json").read_text())
    baseline = json.loads(baseline_path.read_text()) if baseline_path else None
    for old in out.glob("*.png"):
        old.unlink()
    report.plot(out, cells)
    report.write_markdown(out / "report.md", cells, default_runtime=default_runtime(models),
                          baseline=baseline, **details)
    print((out / "report.md").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Side-by-side TorchServe benchmark.")
    parser.add_argument("--quick", action="store_true",
                        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                        help="concurrency 1 and 8, fewer requests (also BENCH_QUICK=1)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--runtime", action="append", choices=runtimes.RUNTIMES,
                        help="only these runtimes (repeatable; default all)")
    parser.add_argument("--baseline", type=Path,
                        help="results.json of an earlier run: ratios vs its handler:eager too")
    parser.add_argument("--no-raw", action="store_true", help="skip the in-process rows")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite report.md and the plots from the last run's files")
    parser.add_argument("--tune", metavar="RUNTIME", choices=runtimes.RUNTIMES,
                        help="instead: the batching/worker grid of the handler on RUNTIME "
                             "(batch 8, delay 0/2/10 ms, workers 1/2; small image, "
                             "concurrency 1 and 8), beside the noop floor")
    args = parser.parse_args(argv)
    plan = Plan.make(args.quick)
    kinds = tuple(args.runtime or runtimes.RUNTIMES)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    models = catalog.load()
    if args.render:
        render(out, models, args.baseline)
        return 0
    notes: list[str] = []
    photos = {"small": samples.write_all()["cat"].read_bytes(),
              "12mp": photo_12mp(out).read_bytes()}
    print(f"[bench] images: small {len(photos['small'])} B, 12mp {len(photos['12mp'])} B; "
          f"plan {plan}", flush=True)
    store = targets.bench_store(out)
    if args.tune:
        out = out / "tune"
        out.mkdir(exist_ok=True)
        classifier = models[targets.CLASSIFIER]
        settings = targets.server_settings(classifier)
        served = [targets.noop_archive(store, settings)] + [
            targets.tuning_archive(store, classifier, args.tune, 8, delay, workers)
            for workers in (1, 2) for delay in (0, 2, 10)]
        payloads = {}
        photos = {"small": photos["small"]}
        plan = dataclasses.replace(plan, concurrency=(1, 8))
        args.no_raw = True
    else:
        served, payloads, settings = build_targets(store, models, kinds, notes)

    cells: list[Cell] = []
    breakdown: list[dict] = []
    agreement: dict[str, float] = {}
    if not args.no_raw:
        cells += raw_rows(models[targets.CLASSIFIER], kinds, photos, plan, breakdown, agreement)

    cold: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ts-") as run_dir:
        started = time.perf_counter()
        server = launcher.start(Path(run_dir), launcher.Ports.free(),
                                [t.model for t in served], model_store=store, timeout=600)
        try:
            cold["server_s"] = time.perf_counter() - started
            cold.update(ColdStart.read(server))
            print(f"[bench] cold start {cold}", flush=True)
            cells += served_rows(server, served, photos, plan, payloads)
        finally:
            launcher.stop(Path(run_dir))
    # results.json names a served target by its role, not its archive name.
    names = {t.model: t.name for t in served}
    cold = {names.get(k, k): v for k, v in cold.items()}

    report.write_json(out / "results.json", cells)
    details = {"quick": args.quick, "cold": cold, "breakdown": breakdown,
               "agreement": agreement, "settings": settings, "notes": notes}
    (out / "details.json").write_text(json.dumps(details, indent=1) + "\n")
    render(out, models, args.baseline)
    failed = [c for c in cells if c.errors]
    if failed:
        print(f"[bench] {len(failed)} cells had errors; see report.md", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
