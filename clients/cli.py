"""Command-line interface: `python -m clients` or the installed `serving-client` script.

    serving-client predict samples/cat.jpg [more.jpg | -]      (classifier: top-k table)
    serving-client predict --model face_detector samples/astronaut.jpg      (faces table)
    serving-client predict --model minilm_embeddings "some text" ["more" | -]  (vectors)
    serving-client predict --model other_model file.bin         (any model: its JSON answer)
        [--server tfserving] [--protocol grpc] [--version V] [--topk K] [--json]
    serving-client models | health | metrics [--json]

The kind of a model (classify, embed, faces, raw) follows its name, or --kind. Addresses and
keys: options > environment > the server `make serve` started from this repo (its
.run/torchserve/), see clients.endpoints. Exit codes: 0 success, 1 failure (one-line
`error: ...` on stderr), 2 bad usage, 3 health check: not ready.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from clients import errors
from clients.torchserve_common import CLASSIFIER, EMBEDDER, FACE_DETECTOR
from clients.transport import TLS, RetryPolicy, Timeouts

DEFAULT_MODEL = CLASSIFIER
KINDS = {CLASSIFIER: "classify", EMBEDDER: "embed", FACE_DETECTOR: "faces"}
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
    common.add_argument("--tls-ca", help="CA bundle (PEM) to verify the server (https/gRPC TLS)")
    common.add_argument("--tls-cert", help="client certificate (PEM)")
    common.add_argument("--tls-key", help="client certificate's key (PEM)")
    common.add_argument("--tls", action="store_true", help="gRPC over TLS with system CAs")
    common.add_argument("--json", action="store_true", help="machine-readable output")

    parser = argparse.ArgumentParser(prog="serving-client", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", parents=[common], help="ask any model")
    predict.add_argument("inputs", nargs="+",
                         help="files (texts for an embedding model), or - for stdin")
    predict.add_argument("--kind", choices=["classify", "embed", "faces", "raw"],
                         help="how to send and show (default: from the model name)")
    predict.add_argument("--topk", type=int, help="classifier: how many classes")
    predict.add_argument("--min-score", type=float, help="face detector: lowest score")
    predict.add_argument("--max-faces", type=int, help="face detector: most faces")
    sub.add_parser("models", parents=[common], help="list models (TF Serving: --model status)")
    sub.add_parser("health", parents=[common], help="is the model READY / AVAILABLE")
    metrics = sub.add_parser("metrics", parents=[common], help="TorchServe metrics")
    metrics.add_argument("--name", action="append", default=[], help="only this metric")
    return parser


def make_client(args: argparse.Namespace) -> Any:
    """The client the options ask for (one of the four)."""
    common = {"token": args.token, "model": args.model, "retry": RetryPolicy(
        max_attempts=1 + max(0, args.retries)), "timeouts": Timeouts(
        connect=args.connect_timeout, read=args.timeout)}
    if args.tls or args.tls_ca or args.tls_cert:
        common["tls"] = TLS(args.tls_ca, args.tls_cert, args.tls_key)
    if args.server == "torchserve":
        if args.protocol == "rest":
            from clients.torchserve_rest import TorchServeClient
            return TorchServeClient(args.url, args.management_url, args.metrics_url,
                                    key_file=args.key_file, **common)
        from clients.torchserve_grpc import TorchServeGrpcClient
        return TorchServeGrpcClient(args.grpc_target, args.grpc_management_target,
                                    key_file=args.key_file, **common)
    version = int(args.version) if args.version else None
    if args.protocol == "rest":
        from clients.tfserving_rest import TFServingClient
        return TFServingClient(args.url, version=version, label=args.label, **common)
    from clients.tfserving_grpc import TFServingGrpcClient
    return TFServingGrpcClient(args.grpc_target, version=version, label=args.label, **common)


def _table(rows: list[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
    return "\n".join(line.rstrip() for line in lines)


def _read(path: str) -> tuple[str, bytes]:
    if path == "-":
        return "<stdin>", sys.stdin.buffer.read()
    with open(path, "rb") as fh:
        return path, fh.read()


def _texts(args: argparse.Namespace) -> list[str]:
    """The texts to embed: the arguments, with - standing for stdin's lines."""
    texts: list[str] = []
    for text in args.inputs:
        if text == "-":
            texts.extend(line for line in sys.stdin.read().splitlines() if line.strip())
        else:
            texts.append(text)
    return texts


def cmd_predict(client: Any, args: argparse.Namespace) -> int:
    model = args.model or DEFAULT_MODEL
    kind = args.kind or KINDS.get(model, "raw")
    if args.server == "tfserving" and kind != "classify":
        raise errors.ServingError("TF Serving serves the image classifier only (--kind classify)")
    if kind == "embed":
        texts = _texts(args)
        vectors = client.embed(texts, model, version=args.version)
        results = [{"input": t, "embedding": v.tolist()} for t, v in zip(texts, vectors,
                                                                          strict=True)]
        rows = [(t if len(t) <= 40 else t[:37] + "...", len(v), f"{float((v * v).sum()) ** 0.5:.3f}",
                 " ".join(f"{x:+.3f}" for x in v[:4]) + " ...") for t, v in zip(texts, vectors,
                                                                               strict=True)]
        tables = [(None, rows, ("text", "dim", "norm", "first values"))]
    else:
        results, tables = [], []
        for name, data in map(_read, args.inputs):
            if kind == "classify":
                version = {} if args.server == "tfserving" else {"version": args.version}
                preds = [p.as_dict() for p in client.classify_image(data, model, topk=args.topk,
                                                                    **version)]
                results.append({"input": name, "predictions": preds})
                tables.append((name, [(i + 1, p["class_index"], f"{p['probability']:.4f}",
                                       p["label"]) for i, p in enumerate(preds)],
                               ("rank", "class", "probability", "label")))
            elif kind == "faces":
                faces = [f.as_dict() for f in client.detect_faces(
                    data, model, version=args.version, min_score=args.min_score,
                    max_faces=args.max_faces)]
                results.append({"input": name, "faces": faces})
                tables.append((f"{name}: {len(faces)} face(s)", [
                    (i + 1, f"{f['score']:.3f}", ", ".join(f"{v:.0f}" for v in f["box"]))
                    for i, f in enumerate(faces)], ("face", "score", "box (x1, y1, x2, y2)")))
            else:
                answer = client.predict(data, model, version=args.version,
                                        params={"topk": args.topk})
                results.append({"input": name, "answer": answer})
                tables.append((name, None, json.dumps(answer, indent=2)))
    if args.json:
        print(json.dumps(results, indent=2))
        return EXIT_OK
    for title, rows, header in tables:
        if title:
            print(title)
        if rows is None:
            print(header)  # any other model: its JSON answer
        elif rows:
            print(_table(rows, header))
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
        raise errors.ServingError("metrics: TorchServe's REST metrics API only "
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
    except (OSError, ValueError, ImportError) as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
