"""Background server processes, shared by the TorchServe and TF Serving launchers.

A server runs in a session of its own, so `make` or Ctrl-C never kills it by accident and a stop
reaches the whole process group: the torchserve CLI, its Java frontend and the Python workers.

A pid written to a state file outlives the process: after a crash or a reboot the number may
belong to someone else. So every launch carries a random launch id in its environment (inherited
by the whole group), and the state file records the leader's start time and command line. A
process is signalled only when it still shows that id, or is the very leader recorded.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

LAUNCH_ID_VAR = "BUNDLE_LAUNCH_ID"


@dataclass(frozen=True)
class Launch:
    """What identifies a launched process group, persisted in the launcher's state file."""

    pid: int
    create_time: float
    cmdline: tuple[str, ...]
    launch_id: str

    def to_json(self) -> dict:
        return {**asdict(self), "cmdline": list(self.cmdline)}

    @classmethod
    def from_json(cls, doc: dict) -> "Launch":
        return cls(int(doc["pid"]), float(doc.get("create_time", 0.0)),
                   tuple(doc.get("cmdline", ())), str(doc.get("launch_id", "")))


def spawn(cmd: list[str], log: Path, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Launch]:
    """Start cmd as the leader of a new session; output appended to log."""
    launch_id = secrets.token_hex(8)
    env = dict(os.environ if env is None else env, **{LAUNCH_ID_VAR: launch_id})
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.Error:  # already gone: nothing will ever match it
        create_time = 0.0
    return proc, Launch(proc.pid, create_time, tuple(cmd), launch_id)


def _started_with(launch: Launch, proc: psutil.Process) -> bool:
    """proc started when the launch's leader did (start times have clock-tick resolution)."""
    return abs(proc.create_time() - launch.create_time) < 0.05


def _is_leader(launch: Launch, proc: psutil.Process) -> bool:
    try:
        return _started_with(launch, proc) and tuple(proc.cmdline()) == launch.cmdline
    except psutil.Error:
        return False


def _carries_id(launch: Launch, proc: psutil.Process) -> bool:
    try:
        return bool(launch.launch_id) and proc.environ().get(LAUNCH_ID_VAR) == launch.launch_id
    except psutil.Error:
        return False


def gone(proc: psutil.Process) -> bool:
    """Exited (a zombie waiting for its parent counts as exited)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def members(launch: Launch) -> list[psutil.Process]:
    """The live processes of this launch: its group (pgid = leader pid) that are still ours."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) != launch.pid:
                continue
        except OSError:
            continue
        if gone(proc):
            continue
        if _is_leader(launch, proc) or _carries_id(launch, proc):
            found.append(proc)
    return found


def alive(launch: Launch | None) -> bool:
    """True while any process of the launch runs (a zombie child of ours counts as gone)."""
    if launch is None:
        return False
    _reap(launch)
    return bool(members(launch))


def _reap(launch: Launch) -> None:
    """Collect the leader's exit status when it is our child (started in this process) and
    still the recorded process: a reused pid of another child of ours is left alone."""
    try:
        if _started_with(launch, psutil.Process(launch.pid)):
            os.waitpid(launch.pid, os.WNOHANG)
    except (psutil.Error, ChildProcessError):
        pass


def stop_group(launch: Launch, timeout: float = 60.0) -> bool:
    """Stop every process of the launch and wait until all are gone and reaped; False if
    none ran.

    The leader's descendants get SIGTERM first, so each exits under a living parent that
    reaps it (the torchserve CLI waits for its Java frontend, Java for its workers); the
    leader, which then normally exits by itself, gets SIGTERM next. What is still running at
    the deadline gets SIGKILL. A reused pid or group id is never signalled."""
    group = procs = members(launch)
    if not procs:
        _reap(launch)
        return False
    deadline = time.monotonic() + timeout
    followers = [p for p in procs if p.pid != launch.pid]
    for proc in followers:
        _signal(proc, signal.SIGTERM)
    if followers:
        _wait_gone(launch, followers, deadline)
        # Give the leader a moment to collect its children and exit by itself.
        procs = _wait_gone(launch, procs, min(deadline, time.monotonic() + 5))
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    procs = _wait_gone(launch, procs, deadline)
    for proc in procs:
        _signal(proc, signal.SIGKILL)
    _wait_gone(launch, procs, time.monotonic() + 10)
    # The frontend may respawn a worker it saw die while it was itself shutting down; that
    # worker is not in the first snapshot. Sweep the group until nothing of the launch is left.
    sweep_until = time.monotonic() + 10
    while (left := members(launch)) and time.monotonic() < sweep_until:
        for proc in left:
            _signal(proc, signal.SIGKILL)
        psutil.wait_procs(left, timeout=1)
        group = group + [p for p in left if p not in group]
    # Dead is not yet gone: wait until each exit was collected (by us for the leader when we
    # started it, else by its parent or init), so no zombie of ours outlives the stop.
    _reap(launch)
    psutil.wait_procs(group, timeout=10)
    return True


def _wait_gone(launch: Launch, procs: list[psutil.Process], deadline: float
               ) -> list[psutil.Process]:
    """Poll until procs are gone or the deadline passes; returns those left."""
    while True:
        _reap(launch)
        procs = [p for p in procs if not gone(p)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(0.1)


def _signal(proc: psutil.Process, sig: int) -> None:
    # psutil re-checks the process's identity (pid + start time) right before sending.
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass
