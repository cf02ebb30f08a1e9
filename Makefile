# Serving bundle: TorchServe + TF Serving. `make help` lists the targets.
# Every target installs what it needs first (.venv from requirements.txt) and is idempotent.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

# Docker: the user's `docker compose` plugin (Compose >= 2.24.4), never .venv/bin/docker-compose
# (that PyPI wrapper exits 0 even when compose fails; the tests call the binary inside it).
COMPOSE := docker compose -f docker/compose.yaml
# GPU_DEVICE_IDS=0,1 pins the gpu profile to those GPUs (else GPU_COUNT, default 1).
COMPOSE_GPU := $(COMPOSE)$(if $(GPU_DEVICE_IDS), -f docker/compose.gpu-ids.yaml)
# The server profile `make up-monitoring` adds Prometheus and Grafana to: cpu or gpu.
PROFILE ?= cpu
UP_FLAGS := up --detach --build --wait --wait-timeout 900
# SERVICES=torchserve limits make serve/up to those services (make docker-e2e: no TF Serving image).
SERVICES ?=
# Succeeds only when a Docker engine answers (the CLI alone is not enough).
DOCKER_ANSWERS = docker info >/dev/null 2>&1

.DEFAULT_GOAL := help
.PHONY: help venv archive serve stop status key test prometheus bench clean \
        docker-build up up-gpu up-monitoring down tf-configs tf-reload e2e-tfserving \
        client-stubs client-wheel bench-clients docker-e2e

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

# A missing system package is installed with apt where we are root; elsewhere one line says
# what to run. $(1): the Debian/Ubuntu package, $(2): what needs it.
apt_install = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1); \
	else echo "$(2) needs $(1): run 'sudo apt-get install -y $(1)', then make again" >&2; exit 1; fi

$(STAMP): requirements.txt constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "Python 3.10+ is needed; $(PYTHON) is $$($(PYTHON) -V 2>&1) (make PYTHON=python3.X)" >&2; exit 1; }
	@# Debian/Ubuntu ship venv's pip bootstrap (ensurepip) in a separate package.
	$(PYTHON) -m venv $(VENV) || { $(call apt_install,python3-venv,.venv) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --upgrade pip==25.3
	$(PY) -m pip install -r requirements.txt -c constraints.txt
	# declares the full `tensorflow`; this environment has tensorflow-cpu (same modules)
	$(PY) -m pip install --no-deps tensorflow-serving-api==2.21.0
	# MTCNN weights for face_detector; its declared pins (torch<2.3) are old, its imports are here
	$(PY) -m pip install --no-deps facenet-pytorch==2.6.0
	touch $@

venv: $(STAMP)  ## create .venv with the pinned requirements

# TorchServe gRPC stubs of the client, generated from the installed torchserve's
# model-server.jar (+ googleapis-common-protos' google/rpc/status.proto); never committed.
CLIENT_STUBS := clients/_generated/inference_pb2.py

$(CLIENT_STUBS): $(STAMP) clients/build_protos.py
	$(PY) -m clients.build_protos

client-stubs: $(CLIENT_STUBS)  ## generate the client's TorchServe gRPC stubs (clients/_generated)

client-wheel: $(CLIENT_STUBS)  ## build the client wheel, stubs included, into dist/
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist ./clients

archive: $(STAMP) $(CLIENT_STUBS)  ## build .mar archives, SavedModels, TF Serving configs, sample photos (skips what is up to date)
	$(PY) -m scripts.build
	$(PY) -m scripts.build.tf_configs

serve: archive  ## start the servers (Docker when an engine answers, else native); returns when READY
	@if $(DOCKER_ANSWERS); then \
	  echo "Docker engine found: serving with docker compose (make up)"; \
	  $(MAKE) --no-print-directory up; \
	else \
	  $(PY) -m scripts.serve.torchserve start && $(PY) -m scripts.serve.tfserving start --mode native; \
	fi

stop:  ## stop the servers started by make serve
	@if $(DOCKER_ANSWERS); then $(COMPOSE) --profile cpu --profile gpu stop; fi
	@if [ -x $(PY) ]; then $(PY) -m scripts.serve.torchserve stop; $(PY) -m scripts.serve.tfserving stop --mode native; fi

status:  ## worker status of the running servers
	@if $(DOCKER_ANSWERS); then $(COMPOSE) --profile cpu --profile gpu ps; fi
	-$(PY) -m scripts.serve.torchserve status
	-$(PY) -m scripts.serve.tfserving status

key:  ## print the inference key of the running TorchServe (container or native)
	@if $(DOCKER_ANSWERS) && [ -n "$$($(COMPOSE) --profile cpu ps -q torchserve)" ]; then \
	  $(COMPOSE) --profile cpu exec -T torchserve python -c \
	    'import json; print(json.load(open("key_file.json"))["inference"]["key"])'; \
	else $(PY) -m scripts.serve.torchserve key; fi

# Prometheus and promtool for tests/test_monitoring.py: the two binaries of Debian's `prometheus`
# package, unpacked into .venv/bin. Not `apt-get install`: without systemd the package's postinst
# starts a Prometheus daemon listening on every interface. `apt-get download` needs no root, only
# apt's package lists (root refreshes them when they are missing).
PROMETHEUS := $(VENV)/bin/prometheus

$(PROMETHEUS): | $(STAMP)
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; chmod 755 "$$tmp"; \
	if [ "$$(id -u)" = 0 ] && ! apt-cache show prometheus >/dev/null 2>&1; then apt-get update -qq; fi; \
	if (cd "$$tmp" && apt-get download prometheus >/dev/null 2>&1); then \
	  dpkg-deb -x "$$tmp"/prometheus_*.deb "$$tmp/root"; \
	  install -m 755 "$$tmp/root/usr/bin/promtool" $(VENV)/bin/promtool; \
	  install -m 755 "$$tmp/root/usr/bin/prometheus" $@; \
	  echo "Prometheus: $$($@ --version 2>&1 | head -1) unpacked into $(VENV)/bin"; \
	elif ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  echo "Prometheus is missing (tests/test_monitoring.py): run 'sudo apt-get update', then make again" >&2; \
	fi

prometheus: $(PROMETHEUS)  ## unpack Debian's prometheus and promtool into .venv/bin (make test does it)

test: $(STAMP) $(CLIENT_STUBS) $(PROMETHEUS)  ## install everything and run every test
	$(PY) -m pytest $(PYTEST_ARGS)

tf-configs: $(STAMP)  ## regenerate config/tfserving/* from config/models.yaml
	$(PY) -m scripts.build.tf_configs

tf-reload: archive  ## apply the catalog's versions and labels to the running TF Serving (gRPC)
	$(PY) -m scripts.serve.tfserving reload

e2e-tfserving: $(STAMP)  ## tests against a running TF Serving (TFSERVING_REST_URL / TFSERVING_GRPC_TARGET)
	TFSERVING_REST_URL=$${TFSERVING_REST_URL:-http://127.0.0.1:8501} \
	TFSERVING_GRPC_TARGET=$${TFSERVING_GRPC_TARGET:-127.0.0.1:8500} \
	$(PY) -m pytest tests/test_tfserving_e2e.py -ra

bench: archive  ## side by side on one TorchServe: noop floor, stock, handler per runtime, raw (BENCH_QUICK=1: short)
	$(PY) -m scripts.bench

bench-clients: archive  ## client overhead per request: client vs requests/urllib3/curl, REST vs gRPC
	$(PY) -m scripts.bench.clients

.PHONY: drills
drills: archive  ## fault and abuse drills against a fresh TorchServe (free ports) and the TF graph; prints the table
	$(PY) -m scripts.drills

docker-build:  ## build the Docker images (cpu and gpu) FROM the pinned official images
	$(COMPOSE) --profile cpu --profile gpu build

up: archive  ## TorchServe + TF Serving in Docker (CPU images); returns when both are healthy
	$(COMPOSE) --profile cpu $(UP_FLAGS) $(SERVICES)
	@echo "TorchServe keys: $(COMPOSE) exec torchserve cat /home/model-server/run/key_file.json"

up-gpu: archive  ## the same on the GPU images (NVIDIA Container Toolkit; GPU_COUNT / GPU_DEVICE_IDS)
	$(COMPOSE_GPU) --profile gpu $(UP_FLAGS)
	@echo "TorchServe keys: $(COMPOSE) exec torchserve-gpu cat /home/model-server/run/key_file.json"

up-monitoring: archive  ## servers (PROFILE=cpu|gpu) + Prometheus :9090 + Grafana :3000
	$(if $(filter gpu,$(PROFILE)),$(COMPOSE_GPU),$(COMPOSE)) --profile $(PROFILE) --profile monitoring $(UP_FLAGS)

docker-e2e: archive  ## compose up on stand-in base images in a private dockerd, e2e tests, teardown (root; docs/docker.md)
	scripts/serve/docker_e2e.sh

down:  ## stop and remove the Docker containers of every profile (volumes are kept)
	$(COMPOSE) --profile cpu --profile gpu --profile monitoring down

clean: stop  ## remove build output (keeps .venv)
	rm -rf build samples .run model_store/*.mar model_store/tf dist \
	  clients/_generated/*_pb2.py clients/_generated/*_pb2_grpc.py clients/_generated/*_pb2.pyi \
	  clients/build clients/*.egg-info
