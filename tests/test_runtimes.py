"""Runtimes (handlers/runtimes.py) and the build's export + agreement check
(scripts/build/export_runtimes.py), on the catalog's classifier and the sample photos."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from handlers import runtimes
from scripts import catalog
from scripts.build import export_runtimes

MODEL = "efficientnet_lite0"


@pytest.fixture(scope="module")
def spec():
    return export_runtimes.spec_for(catalog.load()[MODEL])


@pytest.fixture(scope="module")
def exported(spec, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("onnx")
    export_runtimes.export(spec, target)
    return target


@pytest.mark.parametrize("kind", ["torchscript", "onnxruntime", "openvino"])
def test_runtime_agrees_with_eager_on_the_samples(spec, exported, kind):
    """The build's check: top-5 identical and max |dp| < 1e-3, single images and one batch."""
    delta = export_runtimes.agreement(spec, kind, exported)
    assert 0 <= delta < export_runtimes.MAX_PROBABILITY_DELTA


def test_prepare_writes_the_onnx_file_into_the_archive_dir(tmp_path):
    model = catalog.load()[MODEL]
    written = export_runtimes.prepare(model, tmp_path, kind="onnxruntime")
    assert written == tmp_path / runtimes.ONNX_FILE and written.stat().st_size > 1_000_000
    assert export_runtimes.prepare(model, tmp_path / "none", kind="eager") is None


def test_a_disagreeing_export_fails_loudly(spec, tmp_path):
    """An ONNX file whose weights drifted (here: one conv's weights scaled) must stop the build."""
    def drifted():
        module = copy.deepcopy(spec.build_module())
        with torch.no_grad():
            module._fc.weight.mul_(1.5)
        return module

    bad = export_runtimes.Spec(drifted, spec.example, spec.inputs, spec.input_names,
                               spec.output_names, spec.dynamic_axes)
    export_runtimes.export(bad, tmp_path)
    with pytest.raises(export_runtimes.AgreementError, match="disagrees with eager"):
        export_runtimes.agreement(spec, "onnxruntime", tmp_path)


def test_batch_axis_is_dynamic(spec, exported):
    runtime = runtimes.load("onnxruntime", spec.build_module, spec.example, exported,
                            torch.device("cpu"))
    for batch in (1, 3, 8):
        out = runtime(torch.zeros(batch, *spec.example[0].shape[1:]))
        assert out.shape == (batch, 1000) and out.dtype == torch.float32


def test_threads_are_cores_divided_by_workers(monkeypatch):
    monkeypatch.delenv(runtimes.THREADS_ENV, raising=False)
    monkeypatch.setattr(runtimes, "cpu_cores", lambda: 8)
    assert [runtimes.threads_per_worker(w) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    monkeypatch.setenv(runtimes.THREADS_ENV, "3")
    assert runtimes.threads_per_worker(1) == 3


def test_missing_export_and_unknown_runtime_are_named(spec, tmp_path):
    with pytest.raises(runtimes.RuntimeUnavailable, match="model.onnx"):
        runtimes.load("openvino", spec.build_module, spec.example, tmp_path, torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        runtimes.load("tensorrt", spec.build_module, spec.example, tmp_path, torch.device("cpu"))


@pytest.fixture(scope="module")
def cat_bytes():
    from scripts.build import samples

    return samples.write_all()["cat"].read_bytes()


@pytest.fixture(scope="module")
def eager_answer(tmp_path_factory, cat_bytes):
    return _classify_with("eager", tmp_path_factory, cat_bytes)


def _classify_with(kind: str, tmp_path_factory, data: bytes):
    """Build the classifier's archive with `kind` (through build_mar, so the build's export and
    agreement check run), load it as a TorchServe worker would and classify one photo."""
    import dataclasses

    from handlers.image_classifier import ImageClassifier
    from scripts.build import artifacts
    from tests.handler_context import make_context, run_batch, unpack

    variant = dataclasses.replace(catalog.load()[MODEL], runtime=kind)
    store = tmp_path_factory.mktemp(f"store-{kind}")
    mar = artifacts.build_mar(variant, store)
    model_dir = unpack(mar, tmp_path_factory.mktemp(f"model-{kind}"))
    assert (model_dir / runtimes.ONNX_FILE).is_file() == (kind in export_runtimes.NEEDS_EXPORT)
    context = make_context(model_dir)
    handler = ImageClassifier()
    handler.initialize(context)
    assert handler.runtime == kind and type(handler.model).__name__ != "function"
    [answer] = run_batch(handler, context, [{"body": data}], [{"X-TopK": "5"}])
    assert answer.status == 200, answer.body
    return answer.body


@pytest.mark.parametrize("kind", ["torchscript", "onnxruntime", "openvino"])
def test_the_served_classifier_answers_alike_on_every_runtime(kind, tmp_path_factory, cat_bytes,
                                                               eager_answer):
    answer = _classify_with(kind, tmp_path_factory, cat_bytes)
    assert [p["class_index"] for p in answer] == [p["class_index"] for p in eager_answer]
    assert answer[0]["class_index"] in {281, 282, 285}  # a cat
    for mine, eager in zip(answer, eager_answer):
        assert abs(mine["probability"] - eager["probability"]) < 1e-3


def test_the_embedder_agrees_with_eager_on_onnxruntime(tmp_path_factory):
    """minilm_embeddings: the build's value check (token states within 1e-4) and the served
    vectors of both runtimes for texts of different lengths batched together."""
    import dataclasses
    import json as jsonlib

    from handlers.text_embedder import TextEmbedder
    from scripts.build import artifacts
    from tests.handler_context import make_context, run_batch, unpack

    base = catalog.load()["minilm_embeddings"]
    texts = ["A man is eating food.", "A man is eating a piece of bread, slowly, at noon."]
    vectors = {}
    for kind in ("eager", "onnxruntime"):
        variant = dataclasses.replace(base, runtime=kind)
        mar = artifacts.build_mar(variant, tmp_path_factory.mktemp(f"emb-store-{kind}"))
        model_dir = unpack(mar, tmp_path_factory.mktemp(f"emb-{kind}"))
        context = make_context(model_dir)
        handler = TextEmbedder()
        handler.initialize(context)
        answers = run_batch(handler, context, [{"body": jsonlib.dumps({"text": t}).encode()}
                                               for t in texts])
        assert all(a.status == 200 for a in answers), [a.body for a in answers]
        vectors[kind] = torch.tensor([a.body for a in answers])
    assert vectors["eager"].shape == (2, 384)
    assert float((vectors["eager"] - vectors["onnxruntime"]).abs().max()) < 1e-5
