#!/usr/local/bin/busybox sh
# Container healthcheck and Kubernetes probe for TF Serving: ready = every model of
# models.config has a version in state AVAILABLE (GET /v1/models/<name> on the REST port).
#
# The official tensorflow/serving image has no curl or wget. Rather than installing a package
# manager's worth of tools, the image carries one statically linked busybox (copied from the
# pinned official busybox image, docker/Dockerfile.tfserving), and this script runs under its
# sh, using its wget, sed and grep: nothing else from the base image is needed.
set -eu
bb=/usr/local/bin/busybox
config=${TFS_MODEL_CONFIG:-/etc/tfserving/models.config}
rest=${TFS_REST_URL:-http://127.0.0.1:8501}

# Model names are the `name: "..."` fields of the model config (text proto).
models=$($bb sed -n 's/^[[:space:]]*name:[[:space:]]*"\([^"]*\)".*/\1/p' "$config")
[ -n "$models" ] || { echo "no model names in $config"; exit 1; }
for model in $models; do
    status=$($bb wget -q -T 4 -O - "$rest/v1/models/$model" 2>&1) || {
        echo "$model: REST status request failed: $status"; exit 1; }
    echo "$status" | $bb grep -q '"state": *"AVAILABLE"' || {
        echo "$model: no version AVAILABLE"; exit 1; }
done
echo ready
