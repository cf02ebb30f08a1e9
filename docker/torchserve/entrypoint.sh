#!/bin/sh
# Start TorchServe in the foreground with token authorization ON (the official image's
# entrypoint passes --disable-token-auth; this one replaces it).
#
# The working directory is the writable run volume: TorchServe writes key_file.json there, and
# the operator reads it with
#   docker compose -f docker/compose.yaml exec torchserve cat /home/model-server/run/key_file.json
set -eu

run_dir=/home/model-server/run
store=/home/model-server/model-store
# An emptyDir (Kubernetes) or a fresh volume starts empty: make the temp and log dirs here.
mkdir -p "$run_dir/tmp" "$run_dir/logs"
cd "$run_dir"
# The run volume outlives the container: a pid file left by the previous container is stale.
rm -f "$run_dir/tmp/.model_server.pid"

# Fail with a clear message, not a worker stack trace, when the model store was not built.
missing=""
for model in $(cat /home/model-server/bundle/models.txt); do
    [ -f "$store/$model.mar" ] || missing="$missing $model.mar"
done
if [ -n "$missing" ]; then
    echo "error: missing in the model store ($store):$missing; run 'make archive' on the host" >&2
    exit 1
fi

exec torchserve --start --foreground --ncs \
    --ts-config /home/model-server/config.properties "$@"
