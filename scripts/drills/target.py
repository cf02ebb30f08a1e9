"""The server a drill runs against: its processes, memory sampling, bounded load."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import requests

from scripts import catalog
from scripts.build import samples
from scripts.drills.results import Outcome
from scripts.serve import torchserve as launcher

MODEL = "efficientnet_lite0"
MB = 1024 * 1024
# Growth of the worker's resident memory a drill may cause (issue 11: < 50 MB).
MAX_RSS_GROWTH_MB = 50.0
# TorchServe 0.12 refuses a wrong or expired key with 401, or 400 for some malformed ones.
REFUSED_KEY = (400, 401)
# TorchServe's job_queue_size (its default: config/torchserve.properties does not set it).
JOB_QUEUE_SIZE = 100


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
