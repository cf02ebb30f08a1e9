"""The bundle's build and serving tools: the model catalog, archive builds, and the launchers.

Run them from the bundle's checkout as modules (`python -m scripts.serve.torchserve start`); the
Makefile, the tests and the benchmarks import them as this package.

`ROOT` is the bundle directory every tool resolves its files against (config/, handlers/,
model_store/, .run/). It is, first match wins:
1. the `BUNDLE_ROOT` environment variable (an image or an installed copy of this package
   points it at the bundle's files);
2. the checkout this package sits in, when that directory holds config/models.yaml;
3. the nearest of the current directory and its parents that holds config/models.yaml;
4. the current directory (the catalog then reports the missing config/models.yaml).
"""

from __future__ import annotations

import os
from pathlib import Path

MARKER = Path("config") / "models.yaml"


def bundle_root(env: dict[str, str] | None = None, cwd: Path | None = None) -> Path:
    """The bundle directory, by the order in this package's docstring."""
    env = os.environ if env is None else env
    if env.get("BUNDLE_ROOT"):
        return Path(env["BUNDLE_ROOT"]).resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / MARKER).is_file():
        return checkout
    cwd = (cwd or Path.cwd()).resolve()
    for directory in (cwd, *cwd.parents):
        if (directory / MARKER).is_file():
            return directory
    return cwd


ROOT = bundle_root()
