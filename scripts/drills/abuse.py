"""Abuse drills: huge bodies, slow clients, decompression and scan bombs, a soak."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time

from scripts.drills import payloads
from scripts.drills.results import Outcome, Result, p99
from scripts.drills.target import (
    MAX_RSS_GROWTH_MB,
    MB,
    MODEL,
    Sampler,
    Target,
    good_bodies,
    run_load,
)


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
