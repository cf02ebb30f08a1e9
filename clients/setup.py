"""Build hook (configuration is in pyproject.toml): a wheel always carries the TorchServe gRPC
stubs. If clients/_generated/ has none yet, they are generated here when the build environment
has torchserve and grpcio-tools (the bundle's .venv with --no-build-isolation); otherwise the
build fails with the command to run, instead of shipping a wheel whose gRPC client cannot work.
SERVING_CLIENT_REST_ONLY=1 builds a wheel without stubs on purpose."""

import importlib.util
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithStubs(build_py):
    def run(self):
        spec = importlib.util.spec_from_file_location("_build_protos", HERE / "build_protos.py")
        protos = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(protos)
        missing = [n for n in protos.OUTPUTS if not (protos.GENERATED / n).is_file()]
        if missing and not os.environ.get("SERVING_CLIENT_REST_ONLY"):
            try:
                protos.generate()
            except protos.ProtoBuildError as exc:
                raise SystemExit(
                    f"gRPC stubs missing ({', '.join(missing)}) and not buildable here: {exc}. "
                    "Run `python -m clients.build_protos` in the bundle's .venv first "
                    "(make client-stubs), or set SERVING_CLIENT_REST_ONLY=1") from None
        super().run()

    def find_package_modules(self, package, package_dir):
        # package-dir "." makes this build script look like a module of the package: drop it.
        return [m for m in super().find_package_modules(package, package_dir)
                if not (package == "clients" and m[1] == "setup")]


setup(cmdclass={"build_py": BuildPyWithStubs})
