"""The client as an application gets it: a wheel installed into a fresh venv with only its own
dependencies (no torch, no TensorFlow, no grpc), then the README's quickstart app and the
console script make REST predictions against the session's real TorchServe.

Offline-friendly: the wheel is built from this checkout without build isolation, and the
dependencies come from pip's configured local wheel directories / index (constrained to the
bundle's pins in requirements.txt, the versions the rest of the tests use).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clients.conftest import ROOT

pytestmark = pytest.mark.slow
FORBIDDEN = ("torch", "tensorflow", "grpc", "PIL", "requests")


def _run(cmd: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory, grpc_stubs) -> Path:
    tmp = tmp_path_factory.mktemp("clean-venv")
    started = time.monotonic()
    # Build from a copy so setuptools' in-place build output stays out of the checkout.
    src = tmp / "src"
    shutil.copytree(ROOT / "clients", src, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "-w", str(tmp / "dist"), str(src)])
    (wheel,) = (tmp / "dist").glob("serving_bundle_client-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
          "-c", str(ROOT / "requirements.txt"), str(wheel)], timeout=600)
    print(f"clean venv ready in {time.monotonic() - started:.1f}s")
    return venv


def test_only_the_clients_own_dependencies(clean_venv, tmp_path):
    probe = ("import importlib.util, clients; "
             f"print(clients.__file__); print([m for m in {FORBIDDEN!r} "
             "if importlib.util.find_spec(m)])")
    out = _run([str(clean_venv / "bin" / "python"), "-c", probe], cwd=tmp_path).stdout
    path, missing = out.strip().splitlines()
    assert str(clean_venv) in path  # the installed wheel, not the checkout
    assert missing == "[]"


@pytest.mark.parametrize("key_from", ["repo", "key_file", "token"])
def test_quickstart_app_as_written(clean_venv, ts_env, torchserve, sample_images, tmp_path,
                                   key_from):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHSERVE_")}
    # A repository in which `make serve` is running: its run directory holds the key file and
    # the ports (here the session server's own), and the app runs from the repo root.
    repo = tmp_path / "repo"
    (repo / "samples").mkdir(parents=True)
    (repo / "samples" / "cat.jpg").symlink_to(sample_images["cat"])
    if key_from == "repo":
        (repo / ".run" / "torchserve").mkdir(parents=True)
        for name in ("key_file.json", "server.json"):
            (repo / ".run" / "torchserve" / name).symlink_to(torchserve.run_dir / name)
    else:
        env["TORCHSERVE_URL"] = ts_env["TORCHSERVE_URL"]
    if key_from == "key_file":
        env["TORCHSERVE_KEY_FILE"] = ts_env["TORCHSERVE_KEY_FILE"]
    elif key_from == "token":  # what `make -s key` prints: the inference key
        env["TORCHSERVE_TOKEN"] = torchserve.keys()["inference"]
    out = _run([str(clean_venv / "bin" / "python"),
                str(ROOT / "clients" / "examples" / "quickstart.py")], cwd=repo, env=env).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3 and "cat" in lines[0], out


def test_console_script_predicts(clean_venv, ts_env, sample_images):
    out = _run([str(clean_venv / "bin" / "serving-client"), "predict",
                str(sample_images["coffee"]), "--topk", "1"], env={**os.environ, **ts_env}).stdout
    assert "espresso" in out


def test_grpc_without_the_extra_says_how_to_get_it(clean_venv, tmp_path):
    probe = ("from clients import TorchServeGrpcClient\n"
             "try:\n    TorchServeGrpcClient()\n"
             "except ImportError as exc:\n    print(exc)\n")
    out = _run([str(clean_venv / "bin" / "python"), "-c", probe], cwd=tmp_path).stdout
    assert "serving-bundle-client[grpc]" in out


def test_docs_show_the_quickstart_as_it_is():
    app = (ROOT / "clients" / "examples" / "quickstart.py").read_text()
    for page in (ROOT / "docs" / "clients.md", ROOT / "clients" / "README.md"):
        assert f"```python\n{app}```" in page.read_text(), page
