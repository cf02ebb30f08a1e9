#!/bin/sh
# Builds the stand-in for pytorch/torchserve:0.12.0-cpu inside a container of the Debian
# bookworm minbase image (run by scripts/serve/docker_e2e.sh with the host's network and the host's
# pip configuration and local wheel directories mounted read-only). Mirrors the official
# production image (pytorch/serve v0.12.0, docker/Dockerfile): a venv in /home/venv owned by
# model-server (uid 1000, home /home/model-server with tmp/, model-store/ and the official
# config.properties), Java 17, and the entrypoint /usr/local/bin/dockerd-entrypoint.sh.
# Differences: a /home/venv/pip.conf trusting the host's CA (see below), Debian bookworm's Python 3.11 instead of Ubuntu 20.04 with Python 3.9, Java as
# the headless runtime instead of the full JDK, and the package set of torchserve-requirements.txt.
set -eu
here=$(dirname "$0")
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    python3 python3-venv openjdk-17-jre-headless ca-certificates
apt-get clean
rm -rf /var/lib/apt/lists/*

useradd --create-home --uid 1000 model-server
mkdir -p /home/model-server/tmp /home/model-server/model-store
python3 -m venv /home/venv
/home/venv/bin/python -m pip install --no-cache-dir -q -r "$here/torchserve-requirements.txt"
find /home/venv -name __pycache__ -prune -exec rm -rf {} +
install -m 0755 "$here/dockerd-entrypoint.sh" /usr/local/bin/dockerd-entrypoint.sh
install -m 0644 "$here/config.properties" /home/model-server/config.properties
chown -R model-server /home/model-server /home/venv
# This machine reaches the package registries only through a TLS-inspecting proxy: the stand-in's
# pip trusts the host's CA bundle (mounted by docker_e2e.sh), so `pip install` in our Dockerfile
# works here as it does against PyPI elsewhere. The official image has no
# pip.conf. (/etc/pip.conf is the host's, mounted read-only during this recipe.)
if [ -f /run/host-ca.crt ]; then
    install -m 0644 /run/host-ca.crt /home/venv/host-ca.crt
    printf '[global]\ncert = /home/venv/host-ca.crt\n' > /home/venv/pip.conf  # the venv's own
fi
