"""The launcher's failure paths: a model that cannot load, missing Java, busy ports, stop."""

from __future__ import annotations

import shutil
import zipfile

import pytest
import yaml

from scripts import torchserve as launcher

MODEL = "efficientnet_lite0"


def test_missing_java_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(launcher.LaunchError, match="Java 17 .*apt-get install"):
        launcher.check_java()


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
    with pytest.raises(launcher.LaunchError) as failure:
        launcher.start(run_dir=run_dir, ports=launcher.Ports.free(), models=[MODEL],
                       model_store=store, timeout=180)
    assert "model_name should be one of" in str(failure.value)  # the worker's ValueError
    assert not launcher.Server.load(run_dir).alive(), "a failed start leaves nothing running"


def test_busy_port_is_reported(torchserve, tmp_path):
    with pytest.raises(launcher.LaunchError, match="already in use"):
        launcher.start(run_dir=tmp_path / "run", ports=torchserve.ports)


def test_stop_without_server(tmp_path):
    assert launcher.stop(tmp_path) is False
    shutil.rmtree(tmp_path, ignore_errors=True)
