# Serving bundle: TorchServe + TF Serving. `make help` lists the targets.
# Every target installs what it needs first (.venv from requirements.txt) and is idempotent.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv archive serve stop status test bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip==25.3
	$(PY) -m pip install -r requirements.txt
	# declares the full `tensorflow`; this environment has tensorflow-cpu (same modules)
	$(PY) -m pip install --no-deps tensorflow-serving-api==2.21.0
	touch $@

venv: $(STAMP)  ## create .venv with the pinned requirements

archive: $(STAMP)  ## build .mar archives, SavedModels and sample photos (skips what is up to date)
	$(PY) -m scripts.build

serve: archive  ## start the servers in the background; returns when the models are READY
	$(PY) -m scripts.torchserve start

stop:  ## stop the servers started by make serve
	@if [ -x $(PY) ]; then $(PY) -m scripts.torchserve stop; fi

status:  ## worker status of the running servers
	$(PY) -m scripts.torchserve status

test: $(STAMP)  ## install everything and run every test
	$(PY) -m pytest $(PYTEST_ARGS)

clean: stop  ## remove build output (keeps .venv)
	rm -rf build samples .run model_store/*.mar model_store/tf
