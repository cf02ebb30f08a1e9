"""Python clients for the bundle's model servers: TorchServe and TF Serving, REST and gRPC.

    from clients import TorchServeClient
    with TorchServeClient() as ts:          # finds the key of `make serve` from the repo
        for p in ts.classify_image("samples/cat.jpg", "efficientnet_lite0", topk=3):
            print(p.label, p.probability)

Every name is imported lazily: `import clients.endpoints` (ports, keys, readiness) needs only
the standard library, the REST clients need urllib3 and numpy, and the gRPC clients load grpc
(and, for TF Serving, TensorFlow) only when asked for.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    **dict.fromkeys(["ServingError", "ConnectionFailed", "Timeout", "InvalidInput", "NotFound",
                     "Unauthorized", "Unavailable", "InstanceError"], "clients.errors"),
    "Prediction": "clients.images", "Face": "clients.images",
    "RetryPolicy": "clients.transport", "Timeouts": "clients.transport", "TLS": "clients.transport",
    "TorchServeClient": "clients.torchserve_rest", "ModelHealth": "clients.torchserve_common",
    "TorchServeGrpcClient": "clients.torchserve_grpc",
    "TFServingClient": "clients.tfserving_rest",
    "TFServingGrpcClient": "clients.tfserving_grpc",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clients' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
