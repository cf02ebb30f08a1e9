"""Build-time export of the files a runtime needs, and the agreement check against eager PyTorch.

    python -m scripts.build.export_runtimes [--model NAME] [--runtime KIND ...]

`make archive` calls prepare(model, archive_extra_dir) for every TorchServe model: when the
catalog's `runtime:` needs an exported file (onnxruntime, openvino: model.onnx), it is written
into the archive, and the runtime is loaded from exactly that file and compared with eager
PyTorch on the sample photos, one at a time and as one batch (which exercises the dynamic batch
axis). Agreement means: the top-5 classes identical, in the same order, and the largest
probability difference below 1e-3. Anything else raises AgreementError and fails the build.
TorchScript is checked too (it is traced at load, so nothing is exported for it).

Run directly, it checks every runtime and prints the table (max |dp| per runtime).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch  # noqa: F401  (torch before anything that may import tensorflow)

from handlers import runtimes
from scripts import catalog
from scripts.build import samples
from scripts.catalog import Model

MAX_PROBABILITY_DELTA = 1e-3
MAX_VALUE_DELTA = 1e-4
TOPK = 5
NEEDS_EXPORT = ("onnxruntime", "openvino")


class AgreementError(RuntimeError):
    """A runtime answers differently from eager PyTorch on the sample photos."""


@dataclass
class Spec:
    """How to build, export and compare one model's network."""

    build_module: object  # () -> nn.Module in eval mode with its weights
    example: tuple[torch.Tensor, ...]
    inputs: list[tuple[str, tuple[torch.Tensor, ...]]]  # (sample name, model inputs)
    input_names: tuple[str, ...] = ("input",)
    output_names: tuple[str, ...] = ("logits",)
    dynamic_axes: dict = field(default_factory=dict)
    # "probabilities": softmax of the output, top-5 identical and max |dp| < 1e-3 (classifiers);
    # "values": the raw outputs (e.g. token embeddings) within MAX_VALUE_DELTA.
    compare: str = "probabilities"
    runtimes: tuple[str, ...] = ("torchscript", "onnxruntime", "openvino")


def classifier_spec(model: Model) -> Spec:
    """EfficientNet-style classifier: images preprocessed as the handler does."""
    from handlers import images
    from scripts.build.export_tf import torch_network

    cfg = model.input
    size = int(cfg["size"])
    min_side = images.draft_side(size, float(cfg["crop_fraction"]))
    tensors = []
    for name, path in sorted(samples.write_all().items()):
        rgb = images.decode(path.read_bytes(), int(cfg["max_image_pixels"]), min_side)
        pixels = images.to_model_input(rgb, size, float(cfg["crop_fraction"]), float(cfg["mean"]),
                                       float(cfg["std"]), torch.device("cpu"))
        tensors.append((name, pixels))
    inputs = [(name, (t.unsqueeze(0),)) for name, t in tensors]
    inputs.append(("batch of all samples", (torch.stack([t for _, t in tensors]),)))
    return Spec(
        build_module=lambda: torch_network(model),
        example=(torch.zeros(1, 3, size, size),),
        inputs=inputs,
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )


SENTENCES = ("A man is eating food.", "A man is eating a piece of bread.",
             "The new movie is awesome, and the popcorn was not bad either.", "Hi")


class HiddenStates(torch.nn.Module):
    """A Hugging Face encoder as a module of plain tensors: (ids, mask, types) -> token states."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.network(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=token_type_ids).last_hidden_state


def embedder_spec(model: Model) -> Spec:
    """Sentence-transformers encoder (text_embedder): token states compared value by value, on
    single sentences and on one padded batch (the attention mask must hide the padding)."""
    from tokenizers import Tokenizer

    folder = model.files[model.handler_settings["model_dir"]].resolve()

    def build_module():
        from transformers import AutoModel

        network = AutoModel.from_pretrained(str(folder), local_files_only=True,
                                            use_safetensors=True)
        return HiddenStates(network.eval()).eval()

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    encodings = [tokenizer.encode(text) for text in SENTENCES]

    def batch(rows):
        length = max(len(e.ids) for e in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        mask, types = torch.zeros_like(ids), torch.zeros_like(ids)
        for row, encoding in enumerate(rows):
            n = len(encoding.ids)
            ids[row, :n] = torch.tensor(encoding.ids)
            types[row, :n] = torch.tensor(encoding.type_ids)
            mask[row, :n] = 1
        return ids, mask, types

    names = ("input_ids", "attention_mask", "token_type_ids")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*names, "hidden")}
    inputs = [(text, batch([e])) for text, e in zip(SENTENCES, encodings)]
    inputs.append(("padded batch of all sentences", batch(encodings)))
    return Spec(build_module, batch(encodings[:1]), inputs, names, ("hidden",), axes,
                compare="values", runtimes=("torchscript", "onnxruntime", "openvino"))


def spec_for(model: Model) -> Spec:
    if model.handler == "image_classifier":
        return classifier_spec(model)
    if model.handler == "text_embedder":
        return embedder_spec(model)
    raise NotImplementedError(f"no runtime export for handler {model.handler!r}")


def model_runtime(model: Model) -> str:
    return model.runtime


def export(spec: Spec, target_dir: Path) -> Path:
    """Write model.onnx into target_dir."""
    return runtimes.export_onnx(spec.build_module(), spec.example,
                                Path(target_dir) / runtimes.ONNX_FILE, spec.input_names,
                                spec.output_names, spec.dynamic_axes)


def agreement(spec: Spec, kind: str, model_dir: Path,
              reference: torch.nn.Module | None = None) -> float:
    """Largest |dp| of `kind` vs eager over the samples; AgreementError if top-5 differs or
    the difference reaches MAX_PROBABILITY_DELTA."""
    reference = reference if reference is not None else spec.build_module()
    runtime = runtimes.load(kind, spec.build_module, spec.example, model_dir,
                            torch.device("cpu"))
    worst = 0.0
    for name, inputs in spec.inputs:
        with torch.inference_mode():
            expected = reference(*inputs).float()
        got = runtime(*inputs)
        if got.shape != expected.shape:
            raise AgreementError(f"{kind}: output shape {tuple(got.shape)} on {name}, eager gives "
                                 f"{tuple(expected.shape)}")
        if spec.compare == "values":
            delta = float((got - expected).abs().max())
            if not delta < MAX_VALUE_DELTA:
                raise AgreementError(f"{kind} disagrees with eager PyTorch on {name!r}: max "
                                     f"|d| {delta:.2e} >= {MAX_VALUE_DELTA:.0e}")
            worst = max(worst, delta)
            continue
        expected, got = torch.softmax(expected, dim=1), torch.softmax(got, dim=1)
        delta = float((got - expected).abs().max())
        top_expected = torch.topk(expected, TOPK, dim=1).indices
        top_got = torch.topk(got, TOPK, dim=1).indices
        if not torch.equal(top_expected, top_got):
            raise AgreementError(
                f"{kind} disagrees with eager PyTorch on {name}: top-{TOPK} "
                f"{top_got.tolist()} instead of {top_expected.tolist()} (max |dp| {delta:.2e})")
        if not delta < MAX_PROBABILITY_DELTA:
            raise AgreementError(
                f"{kind} disagrees with eager PyTorch on {name}: max |dp| {delta:.2e} >= "
                f"{MAX_PROBABILITY_DELTA:.0e}")
        worst = max(worst, delta)
    return worst


def prepare(model: Model, target_dir: Path, kind: str | None = None) -> Path | None:
    """Export what `kind` (default: the catalog's runtime) needs into target_dir (an archive's
    extra files) and check it there. Returns the exported file, or None for eager."""
    kind = kind or model_runtime(model)
    if kind == "eager":
        return None
    spec = spec_for(model)
    exported = export(spec, target_dir) if kind in NEEDS_EXPORT else None
    delta = agreement(spec, kind, target_dir)
    bound = (f"max |dp| {delta:.1e} < {MAX_PROBABILITY_DELTA:.0e}, top-{TOPK} identical"
             if spec.compare == "probabilities" else
             f"max |d| {delta:.1e} < {MAX_VALUE_DELTA:.0e}")
    print(f"[export_runtimes] {model.name}: {kind} agrees with eager on "
          f"{len(spec.inputs)} inputs ({bound})")
    return exported


def check_all(model: Model, kinds: tuple[str, ...] = runtimes.RUNTIMES[1:]) -> dict[str, float]:
    """Export once and check every runtime; {kind: max |dp|}. Raises on the first disagreement."""
    spec = spec_for(model)
    reference = spec.build_module()
    with tempfile.TemporaryDirectory(prefix="export-runtimes-") as tmp:
        export(spec, Path(tmp))
        return {kind: agreement(spec, kind, Path(tmp), reference) for kind in kinds}


def sources() -> list[Path]:
    """Files whose change changes what prepare() writes."""
    return [Path(__file__).resolve()]  # handlers/runtimes.py counts as a handler source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="only this model (repeatable)")
    parser.add_argument("--runtime", action="append", choices=runtimes.RUNTIMES[1:],
                        help="only this runtime (repeatable; default all)")
    args = parser.parse_args(argv)
    models = [m for m in catalog.for_server("torchserve")
              if not args.model or m.name in args.model]
    kinds = tuple(args.runtime or runtimes.RUNTIMES[1:])
    failed = False
    for model in models:
        try:
            spec_for(model)
        except NotImplementedError as exc:
            print(f"{model.name}: {exc}")
            continue
        try:
            for kind, delta in check_all(model, kinds).items():
                print(f"{model.name}: {kind:<12} max |delta| {delta:.1e}  (agrees)")
        except AgreementError as exc:
            print(f"{model.name}: DISAGREES: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
