"""Python clients for the bundle's model servers: TorchServe and TF Serving, REST and gRPC.

    from clients import TorchServeClient
    with TorchServeClient(key_file=".run/torchserve/key_file.json") as ts:
        for p in ts.classify_image("samples/cat.jpg", "efficientnet_lite0", topk=3):
            print(p.label, p.probability)

REST needs only urllib3, numpy, tenacity and prometheus-client; the gRPC clients
are imported lazily and need the `grpc` (TorchServe) or `tfserving-grpc` (TF Serving) extra.
"""

from __future__ import annotations

from clients.errors import (
    ConfigurationError,
    ConnectionFailed,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ServerError,
    ServingError,
    Timeout,
    Unauthorized,
    Unavailable,
)
from clients.inputs import Prediction
from clients.tfserving_rest import TFServingClient
from clients.torchserve_rest import ModelHealth, TorchServeClient
from clients.transport import RetryPolicy, Timeouts

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError", "ConnectionFailed", "InvalidInput", "ModelHealth", "NotFound",
    "PermissionDenied", "Prediction", "RetryPolicy", "ServerError", "ServingError",
    "TFServingClient", "Timeout", "Timeouts", "TorchServeClient", "Unauthorized", "Unavailable",
]  # TorchServeGrpcClient / TFServingGrpcClient: attribute access only (optional extras)


def __getattr__(name: str):
    # gRPC clients load grpc (and, for TF Serving, TensorFlow) only when asked for.
    if name == "TorchServeGrpcClient":
        from clients.torchserve_grpc import TorchServeGrpcClient
        return TorchServeGrpcClient
    if name == "TFServingGrpcClient":
        from clients.tfserving_grpc import TFServingGrpcClient
        return TFServingGrpcClient
    raise AttributeError(f"module 'clients' has no attribute {name!r}")
