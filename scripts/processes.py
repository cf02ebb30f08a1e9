"""Background server processes, shared by the TorchServe and TF Serving launchers: started in a
session of their own (so `make` or Ctrl-C never kills them by accident, and a stop reaches the
whole process group: the torchserve CLI, its Java frontend and the Python workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def spawn(cmd: list[str], log: Path, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop_group(pid: int, timeout: float = 60.0) -> bool:
    """SIGTERM the process group, SIGKILL it after timeout; False if it was not running."""
    if not alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.2)
    if alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return True
