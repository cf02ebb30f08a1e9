#!/bin/bash
# Stand-in for the official image's /usr/local/bin/dockerd-entrypoint.sh (TorchServe 0.12.0),
# same behaviour: `serve` starts TorchServe in the background with the image's config and token
# authorization disabled, then keeps the container alive; anything else is run as a command.
# The bundle's image replaces this entrypoint (docker/torchserve/entrypoint.sh).
set -e
if [ "${1:-}" = serve ]; then
    torchserve --start --ts-config /home/model-server/config.properties --disable-token-auth
else
    eval "$@"
fi
exec tail -f /dev/null
