"""Runtimes: one PyTorch network, run by eager PyTorch, TorchScript, ONNX Runtime or OpenVINO.

A handler builds its network as an nn.Module (weights loaded with weights_only=True) and asks
load() for a Runtime of the kind the catalog names (`runtime:`). Every runtime is called the same
way, with CPU or device tensors in and a float32 CPU tensor out, so the handler code around it does
not change with the runtime.

  eager        the module itself.
  torchscript  the module traced and frozen at load (a second or two). Tracing at load instead of
               shipping a TorchScript file keeps the state dict, loaded with weights_only=True, the
               only serialized form of the weights in an archive.
  onnxruntime  the archive's ONNX file (written by scripts/build/export_runtimes.py at build time, and
               checked there against eager), run by ONNX Runtime's CPU provider.
  openvino     the same ONNX file, compiled by OpenVINO for the CPU. Inference precision is set to
               f32: on CPUs with bf16/fp16 units OpenVINO otherwise lowers precision by itself, and
               the probabilities then drift by ~2e-3, more than the build's agreement bound.

Threads. A TorchServe worker is one process; N workers of a model share the machine's cores. Each
runtime gets cores // workers intra-op threads (at least 1), so N workers never run more compute
threads than there are cores: oversubscribed threads spin and preempt each other, which costs
more than it gains, and the server's own frontend needs CPU too. `BUNDLE_RUNTIME_THREADS`
overrides the count (e.g. in a container whose CPU quota is smaller than its visible cores).

GPU (written and reasoned through; no GPU was available where this was developed):
  eager / torchscript run on the handler's device (cuda:<gpu_id> assigned by TorchServe): the
  module and its inputs are moved there; the output comes back to the CPU.
  onnxruntime uses CUDAExecutionProvider (needs the onnxruntime-gpu wheel instead of onnxruntime)
  on the assigned device id, with the CPU provider as fallback for unsupported ops; if the CUDA
  provider is not available it says so in the log and runs on the CPU rather than failing.
  openvino targets Intel CPUs/GPUs only; on a CUDA machine it stays on the CPU, so choose eager or
  onnxruntime for a GPU deployment.
onnxruntime and openvino are imported only when chosen, so the eager path needs neither.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

RUNTIMES = ("eager", "torchscript", "onnxruntime", "openvino")
ONNX_FILE = "model.onnx"
THREADS_ENV = "BUNDLE_RUNTIME_THREADS"


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot be loaded here (package missing, exported file missing)."""


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Intra-op threads for one of `workers` worker processes: cores // workers, at least 1."""
    override = os.environ.get(THREADS_ENV)
    if override:
        return max(1, int(override))
    return max(1, cpu_cores() // max(1, int(workers)))


class Runtime:
    """A loaded network: runtime(*inputs) -> first output as a float32 CPU tensor."""

    kind = "eager"

    def __init__(self, module: torch.nn.Module, device: torch.device, threads: int):
        self.module = module
        self.device = device
        self.threads = threads
        torch.set_num_threads(threads)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.module(*(x.to(self.device) for x in inputs))
        return _first(out).float().cpu()

    def __repr__(self) -> str:
        return f"{self.kind} runtime on {self.device}, {self.threads} thread(s)"


class TorchScriptRuntime(Runtime):
    kind = "torchscript"

    def __init__(self, module: torch.nn.Module, device: torch.device, threads: int,
                 example: Sequence[torch.Tensor]):
        super().__init__(module, device, threads)
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.compile, which here costs seconds of
            # compilation per batch shape and was slower than ONNX Runtime anyway.
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(module.eval(), tuple(x.to(device) for x in example))
            self.module = torch.jit.freeze(traced)


class OnnxRuntime(Runtime):
    kind = "onnxruntime"

    def __init__(self, onnx_path: Path, device: torch.device, threads: int):
        self.device, self.threads = device, threads
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailable("runtime onnxruntime needs the onnxruntime package") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ORT threads spin-wait by default; on a few shared cores that spinning steals CPU
        # from request decoding and from the server's frontend.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
            else:
                logger.warning("ONNX Runtime has no CUDA provider (install onnxruntime-gpu): "
                               "running on the CPU")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {name: _numpy(x) for name, x in zip(self.input_names, inputs)}
        return torch.from_numpy(np.asarray(self.session.run(None, feed)[0], dtype=np.float32))


class OpenVinoRuntime(Runtime):
    kind = "openvino"

    def __init__(self, onnx_path: Path, device: torch.device, threads: int):
        self.device, self.threads = device, threads
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeUnavailable("runtime openvino needs the openvino package") from exc
        if device.type != "cpu":
            logger.warning("OpenVINO runs on the CPU here (it does not drive %s)", device)
        core = ov.Core()
        self.compiled = core.compile_model(str(onnx_path), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads,
            # One request at a time per worker (TorchServe batches before the handler).
            "PERFORMANCE_HINT": "LATENCY",
        })
        self.request = self.compiled.create_infer_request()

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        result = self.request.infer([_numpy(x) for x in inputs])
        return torch.from_numpy(np.array(result[self.compiled.output(0)], dtype=np.float32))


def load(kind: str, build_module: Callable[[], torch.nn.Module],
         example: Sequence[torch.Tensor], model_dir: Path, device: torch.device,
         workers: int = 1) -> Runtime:
    """The network as a runtime of `kind`.

    build_module() returns the eval-mode module with its weights (only called by the runtimes
    that run PyTorch); example is one input batch (for tracing); model_dir holds the exported
    files; workers is the model's worker count (for the thread budget).
    """
    if kind not in RUNTIMES:
        raise ValueError(f"unknown runtime {kind!r}; choose one of {', '.join(RUNTIMES)}")
    threads = threads_per_worker(workers)
    if kind in ("eager", "torchscript"):
        module = build_module()
        if not isinstance(module, torch.nn.Module):
            if kind == "torchscript":
                raise ValueError("runtime torchscript needs an nn.Module to trace")
            torch.set_num_threads(threads)
            return module  # already a forward callable on the handler's device
        module = module.eval().to(device)
        if kind == "eager":
            return Runtime(module, device, threads)
        if not example:
            raise ValueError("runtime torchscript needs an example input to trace")
        return TorchScriptRuntime(module, device, threads, example)
    onnx_path = Path(model_dir) / ONNX_FILE
    if not onnx_path.is_file():
        raise RuntimeUnavailable(f"runtime {kind} needs {ONNX_FILE} in the archive: rebuild it "
                                 "with make archive")
    # The ORT/OpenVINO worker does not run torch ops of its own beyond pre/post-processing.
    torch.set_num_threads(threads)
    if kind == "onnxruntime":
        return OnnxRuntime(onnx_path, device, threads)
    return OpenVinoRuntime(onnx_path, device, threads)


def export_onnx(module: torch.nn.Module, example: Sequence[torch.Tensor], path: Path,
                input_names: Sequence[str], output_names: Sequence[str],
                dynamic_axes: dict[str, dict[int, str]]) -> Path:
    """Write the module as ONNX (TorchScript-based exporter, opset 17, dynamic axes as given)."""
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter warns that the dynamo one is the future; the dynamo
        # exporter needs onnxscript, which this bundle does not install.
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), tuple(example), str(path), input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=dynamic_axes,
                          opset_version=17, dynamo=False)
    return path


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy())


def _first(out):
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict):
        return next(iter(out.values()))
    return out
