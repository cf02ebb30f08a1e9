"""Render config/torchserve.properties for the container, at image build time.

    python docker/torchserve/render_config.py --out /home/model-server/config.properties

Why a container-specific rendering instead of a second hand-written file: the template and the
catalog stay the single source of truth (security settings, limits, metrics, the model list), and
only the values that differ inside a container are chosen here:
  - bind 0.0.0.0: inside its network namespace the server must accept connections from the
    published ports and from Prometheus; compose publishes the ports on 127.0.0.1 of the host;
  - the official image's paths (model store /home/model-server/model-store, mounted read-only);
  - the default ports (clients/endpoints.py), since each container has its own network namespace.
Rendering at build time keeps the image immutable: the config the healthcheck and TorchServe read
is the one that was tested, never rewritten at start.

Only the standard library, PyYAML, the catalog (scripts/) and clients/endpoints.py are used: the
image has them all (the bundle's shared code is copied into it as one unit).
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

BUNDLE = Path(__file__).resolve().parents[2]  # repo root here, /home/model-server/bundle in the image
sys.path.insert(0, str(BUNDLE))

from clients import endpoints  # noqa: E402  (needs the bundle root on sys.path first)
from scripts import catalog  # noqa: E402

HOME = Path("/home/model-server")
MODEL_STORE = HOME / "model-store"
PORTS = {f"{name}_port": port for name, port in endpoints.TORCHSERVE_PORTS.items()}
# Keys expire after a day like the native launcher's; the operator reads fresh ones from the
# key file (README, "Docker").
TOKEN_EXPIRATION_MIN = 1440
HEADER = (
    "# Rendered at image build time by docker/torchserve/render_config.py from\n"
    "# config/torchserve.properties: binds 0.0.0.0 inside the container (published on the host's\n"
    "# 127.0.0.1 by docker/compose.yaml) and uses the official image's paths.\n"
)


def models() -> list[str]:
    return [m.name for m in catalog.for_server("torchserve")]


def render(bundle: Path = BUNDLE, home: Path = HOME) -> str:
    template = string.Template((bundle / "config" / "torchserve.properties").read_text())
    store = home / "model-store"
    text = template.substitute(
        bind_host="0.0.0.0",
        model_store=store,
        load_models=",".join(f"{m}={m}.mar" for m in models()),
        metrics_config=bundle / "config" / "metrics.yaml",
        token_expiration_min=TOKEN_EXPIRATION_MIN,
        **PORTS,
    )
    return HEADER + text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models-out", type=Path,
                        help="also write the model names, one per line (healthcheck, entrypoint)")
    args = parser.parse_args(argv)
    args.out.write_text(render())
    if args.models_out:
        args.models_out.write_text("\n".join(models()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
