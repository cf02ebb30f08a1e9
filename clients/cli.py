"""Command-line interface: `python -m clients` or the installed `serving-client` script.

    serving-client predict samples/cat.jpg [more.jpg | -] [--server tfserving] [--protocol grpc]
                           [--model M] [--version V] [--topk K] [--json]
    serving-client models | health | metrics [--json]

Addresses and tokens come from the options or the environment (TORCHSERVE_URL,
TORCHSERVE_KEY_FILE, TFSERVING_URL, ... see clients.transport). Exit codes: 0 success,
1 failure (one-line `error: ...` on stderr), 2 bad usage, 3 health check: not ready.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from clients import errors
from clients.transport import RetryPolicy, Timeouts

DEFAULT_MODEL = "efficientnet_lite0"
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_READY = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", choices=["torchserve", "tfserving"], default="torchserve")
    common.add_argument("--protocol", choices=["rest", "grpc"], default="rest")
    common.add_argument("--model", help=f"model name (predict default: {DEFAULT_MODEL})")
    common.add_argument("--version", help="model version (TF Serving: an integer)")
    common.add_argument("--label", help="TF Serving version label (e.g. stable)")
    common.add_argument("--url", help="REST inference URL (TorchServe) or REST URL (TF Serving)")
    common.add_argument("--management-url", help="TorchServe management URL")
    common.add_argument("--metrics-url", help="TorchServe metrics URL")
    common.add_argument("--grpc-target", help="gRPC host:port (inference for TorchServe)")
    common.add_argument("--grpc-management-target", help="TorchServe gRPC management host:port")
    common.add_argument("--token", help="bearer token (default: env or key file)")
    common.add_argument("--key-file", help="TorchServe key_file.json")
    common.add_argument("--timeout", type=float, default=60.0, help="read timeout, seconds")
    common.add_argument("--connect-timeout", type=float, default=5.0)
    common.add_argument("--retries", type=int, default=3,
                        help="retries of transient failures (0 disables)")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    parser = argparse.ArgumentParser(prog="serving-client", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", parents=[common], help="classify images")
    predict.add_argument("images", nargs="+", help="image files, or - for stdin")
    predict.add_argument("--topk", type=int)
    sub.add_parser("models", parents=[common], help="list models (TF Serving: --model status)")
    sub.add_parser("health", parents=[common], help="is the model READY / AVAILABLE")
    metrics = sub.add_parser("metrics", parents=[common], help="TorchServe metrics")
    metrics.add_argument("--name", action="append", default=[], help="only this metric")
    return parser


def make_client(args: argparse.Namespace) -> Any:
    """The client the options ask for (one of the four)."""
    timeouts = Timeouts(connect=args.connect_timeout, read=args.timeout)
    retry = RetryPolicy(max_attempts=1 + max(0, args.retries))
    if args.server == "torchserve":
        if args.protocol == "rest":
            from clients.torchserve_rest import TorchServeClient
            return TorchServeClient(args.url, args.management_url, args.metrics_url,
                                    token=args.token, key_file=args.key_file, model=args.model,
                                    timeouts=timeouts, retry=retry)
        from clients.torchserve_grpc import TorchServeGrpcClient
        return TorchServeGrpcClient(args.grpc_target, args.grpc_management_target,
                                    token=args.token, key_file=args.key_file, model=args.model,
                                    timeouts=timeouts, retry=retry)
    version = int(args.version) if args.version else None
    if args.protocol == "rest":
        from clients.tfserving_rest import TFServingClient
        return TFServingClient(args.url, model=args.model, version=version, label=args.label,
                               token=args.token, timeouts=timeouts, retry=retry)
    from clients.tfserving_grpc import TFServingGrpcClient
    return TFServingGrpcClient(args.grpc_target, model=args.model, version=version,
                               label=args.label, token=args.token, timeouts=timeouts, retry=retry)


def _table(rows: list[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
    return "\n".join(line.rstrip() for line in lines)


def _read_images(paths: list[str]) -> list[tuple[str, bytes]]:
    images = []
    for path in paths:
        if path == "-":
            images.append(("<stdin>", sys.stdin.buffer.read()))
        else:
            with open(path, "rb") as fh:
                images.append((path, fh.read()))
    return images


def cmd_predict(client: Any, args: argparse.Namespace) -> int:
    model = args.model or DEFAULT_MODEL
    results = []
    for name, data in _read_images(args.images):
        if args.server == "torchserve":
            preds = client.classify_image(data, model, version=args.version, topk=args.topk)
        else:
            preds = client.classify_image(data, model, topk=args.topk)
        results.append({"input": name, "predictions": [p.as_dict() for p in preds]})
    if args.json:
        print(json.dumps(results, indent=2))
        return EXIT_OK
    for result in results:
        print(result["input"])
        rows = [(i + 1, p["class_index"], f"{p['probability']:.4f}", p["label"])
                for i, p in enumerate(result["predictions"])]
        print(_table(rows, ("rank", "class", "probability", "label")))
    return EXIT_OK


def cmd_models(client: Any, args: argparse.Namespace) -> int:
    if args.server == "torchserve":
        models = []
        for entry in client.list_models():
            health = client.health(entry["modelName"])
            models.append({"model": entry["modelName"], "url": entry.get("modelUrl"),
                           "version": health.version, "ready": health.ready,
                           "workers": health.workers})
        rows = [(m["model"], m["version"], "READY" if m["ready"] else "NOT READY",
                 ", ".join(f"{k}={v}" for k, v in m["workers"].items()), m["url"])
                for m in models]
        header = ("model", "version", "state", "workers", "archive")
    else:
        model = args.model or DEFAULT_MODEL
        models = [{"model": model, "version": s.version, "state": s.state,
                   "error": s.error_message} for s in client.status(model)]
        rows = [(m["model"], m["version"], m["state"], m["error"]) for m in models]
        header = ("model", "version", "state", "error")
    print(json.dumps(models, indent=2) if args.json else _table(rows, header))
    return EXIT_OK


def cmd_health(client: Any, args: argparse.Namespace) -> int:
    if args.server == "torchserve":
        names = [args.model] if args.model else [m["modelName"] for m in client.list_models()]
        checks = []
        for name in names:
            h = client.health(name, args.version)
            checks.append({"model": name, "version": h.version, "ready": h.ready,
                           "workers": h.workers, "reason": h.reason})
    else:
        model = args.model or DEFAULT_MODEL
        version = int(args.version) if args.version else None
        ready = client.is_available(model, version)
        checks = [{"model": model, "version": version, "ready": ready,
                   "reason": "" if ready else "no AVAILABLE version"}]
    if args.json:
        print(json.dumps(checks, indent=2))
    else:
        print(_table([(c["model"], c["version"] or "", "READY" if c["ready"] else "NOT READY",
                       c["reason"]) for c in checks], ("model", "version", "state", "reason")))
    if not checks or not all(c["ready"] for c in checks):
        bad = [c["model"] for c in checks if not c["ready"]] or ["(no model registered)"]
        print(f"error: not ready: {', '.join(bad)}", file=sys.stderr)
        return EXIT_NOT_READY
    return EXIT_OK


def cmd_metrics(client: Any, args: argparse.Namespace) -> int:
    if args.server != "torchserve" or args.protocol != "rest":
        raise errors.ConfigurationError("metrics: TorchServe's REST metrics API only "
                                        "(use --server torchserve --protocol rest)")
    families = client.metrics(args.name)
    samples = [{"name": s.name, "labels": s.labels, "value": s.value}
               for fam in families.values() for s in fam.samples]
    if args.json:
        print(json.dumps(samples, indent=2))
    else:
        print(_table([(s["name"], ",".join(f"{k}={v}" for k, v in sorted(s["labels"].items())),
                       f"{s['value']:g}") for s in samples], ("metric", "labels", "value")))
    return EXIT_OK


COMMANDS = {"predict": cmd_predict, "models": cmd_models, "health": cmd_health,
            "metrics": cmd_metrics}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with make_client(args) as client:
            return COMMANDS[args.command](client, args)
    except errors.ServingError as exc:
        print(f"error: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
