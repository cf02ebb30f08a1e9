"""Generate the TorchServe gRPC stubs from the .proto files of an installed TorchServe.

    python -m clients.build_protos [--jar PATH] [--out DIR] [--check]

Contract:
  - Sources: proto/inference.proto and proto/management.proto inside TorchServe's
    ts/frontend/model-server.jar (the exact files the server was built from), compiled against
    googleapis-common-protos' google/rpc/status.proto and protobuf's well-known types.
  - Output: clients/_generated/{inference,management}_pb2.py, *_pb2_grpc.py and *_pb2.pyi.
    They are build products (ignored by git) and are shipped inside the client wheel, so an
    application installs the wheel without TorchServe or grpcio-tools.
  - google.rpc.status_pb2 is NOT generated: the stubs import it from googleapis-common-protos,
    a runtime dependency of the `grpc` extra, so one process never holds two copies of it.
  - Idempotent: skipped when the outputs are newer than the jar (use --force to rebuild).
Needs grpcio-tools and torchserve (or --jar) in the environment that runs it: the bundle's .venv.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
GENERATED = PACKAGE_DIR / "_generated"
# The stubs' own package path: protoc derives import lines from the .proto location relative to
# the include root, so the protos are staged under this path to get package-qualified imports.
STAGE_PREFIX = Path("clients") / "_generated"
PROTOS = ("inference.proto", "management.proto")
OUTPUTS = tuple(f"{Path(p).stem}{suffix}" for p in PROTOS
                for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"))


class ProtoBuildError(RuntimeError):
    """The stubs could not be generated (missing torchserve, grpcio-tools or protoc failure)."""


def find_jar() -> Path:
    """model-server.jar of the installed torchserve package."""
    spec = importlib.util.find_spec("ts")
    if spec is None or not spec.submodule_search_locations:
        raise ProtoBuildError("torchserve is not installed here: pass --jar "
                              "path/to/ts/frontend/model-server.jar or run in the bundle's .venv")
    jar = Path(next(iter(spec.submodule_search_locations))) / "frontend" / "model-server.jar"
    if not jar.is_file():
        raise ProtoBuildError(f"{jar} does not exist (broken torchserve install?)")
    return jar


def _include_dir(module: str, marker: str) -> Path:
    """The directory that contains `marker` (a proto path) for an installed package."""
    spec = importlib.util.find_spec(module)
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        base = Path(root)
        for candidate in (base, base.parent, base.parent.parent, base / "_proto"):
            if (candidate / marker).is_file():
                return candidate
    raise ProtoBuildError(f"cannot find {marker} (is the package providing {module} installed?)")


def up_to_date(jar: Path, out: Path) -> bool:
    outputs = [out / name for name in OUTPUTS]
    return all(p.is_file() for p in outputs) and min(
        p.stat().st_mtime for p in outputs) >= jar.stat().st_mtime


def generate(jar: Path | None = None, out: Path = GENERATED, force: bool = False) -> list[Path]:
    """Write the stubs into `out`; return their paths. Raises ProtoBuildError."""
    jar = Path(jar) if jar else find_jar()
    if not force and up_to_date(jar, out):
        return [out / name for name in OUTPUTS]
    if importlib.util.find_spec("grpc_tools") is None:
        raise ProtoBuildError("grpcio-tools is needed to generate the stubs: "
                              "pip install grpcio-tools")
    status_root = _include_dir("google.rpc", "google/rpc/status.proto")
    wkt_root = _include_dir("grpc_tools", "google/protobuf/empty.proto")
    with tempfile.TemporaryDirectory(prefix="ts-protos-") as tmp:
        stage, gen = Path(tmp) / "src", Path(tmp) / "gen"
        (stage / STAGE_PREFIX).mkdir(parents=True)
        gen.mkdir()
        with zipfile.ZipFile(jar) as archive:
            for name in PROTOS:
                try:
                    data = archive.read(f"proto/{name}")
                except KeyError:
                    raise ProtoBuildError(f"{jar} has no proto/{name}") from None
                (stage / STAGE_PREFIX / name).write_bytes(data)
        # protoc runs in a child process: grpc_tools' extension carries its own protobuf
        # runtime, and loading it next to TensorFlow's in one process crashes the process.
        args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{stage}", f"-I{status_root}",
                f"-I{wkt_root}", f"--python_out={gen}", f"--pyi_out={gen}",
                f"--grpc_python_out={gen}", *(str(STAGE_PREFIX / name) for name in PROTOS)]
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode != 0:
            raise ProtoBuildError(f"protoc failed on the protos of {jar}: {result.stderr}")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in OUTPUTS:
            target = out / name
            # Replace file by file so an importing process never sees a half-written stub.
            tmp_target = target.with_suffix(target.suffix + ".tmp")
            tmp_target.write_bytes((gen / STAGE_PREFIX / name).read_bytes())
            tmp_target.replace(target)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jar", type=Path, help="model-server.jar (default: installed torchserve)")
    parser.add_argument("--out", type=Path, default=GENERATED)
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")
    parser.add_argument("--check", action="store_true",
                        help="only check that the stubs exist; exit 1 if not")
    args = parser.parse_args(argv)
    if args.check:
        missing = [n for n in OUTPUTS if not (args.out / n).is_file()]
        if missing:
            print(f"error: missing gRPC stubs {missing}: run python -m clients.build_protos",
                  file=sys.stderr)
            return 1
        return 0
    try:
        written = generate(args.jar, args.out, args.force)
    except ProtoBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"gRPC stubs in {args.out}: {', '.join(p.name for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
