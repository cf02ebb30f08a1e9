#!/bin/sh
# Builds the stand-in for prom/prometheus:v2.53.3 inside a container of the Debian bookworm
# minbase image (host network). Mirrors the official image's layout (prometheus/prometheus,
# Dockerfile): /bin/prometheus and /bin/promtool, /etc/prometheus/prometheus.yml, the data
# directory /prometheus owned by nobody, busybox's wget (the compose healthcheck uses it).
# Difference: Debian's prometheus package (2.42) instead of the upstream 2.53.3 binary.
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends prometheus busybox
apt-get clean
rm -rf /var/lib/apt/lists/*
# The official image has the binaries in /bin. Bookworm's root is merged (/bin -> usr/bin), so
# /bin/prometheus already is /usr/bin/prometheus there; link only on an unmerged root.
for tool in prometheus promtool; do
    [ /bin/$tool -ef /usr/bin/$tool ] || ln -s /usr/bin/$tool /bin/$tool
done
ln -sf /bin/busybox /usr/local/bin/wget
mkdir -p /prometheus /etc/prometheus
[ -f /etc/prometheus/prometheus.yml ] || printf 'scrape_configs: []\n' > /etc/prometheus/prometheus.yml
chown -R nobody:nogroup /prometheus /etc/prometheus
