# Every target sets itself up: a fresh machine needs only python3 (3.11+).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/brokerlab/v1/*.proto)

.PHONY: install proto proto-check lint test demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

# Regenerates into a temp dir and fails if the committed code differs.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -I proto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	for f in $$tmp/brokerlab/v1/*.py $$tmp/brokerlab/v1/*.pyi; do \
	  diff -q $$f brokerlab/v1/$$(basename $$f) >/dev/null || { echo "proto drift: brokerlab/v1/$$(basename $$f) differs from proto/ (run make proto)"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "proto-check: generated code matches proto/"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: $(STAMP) proto-check
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/brokerlab demo

clean:
	rm -rf $(VENV) runs .pytest_cache

# ---- docker-compose cluster (deploy/, lab/compose_cluster.py); needs a Docker engine ------------
# make compose-up [BROKERS=5]: build the image (cached layers), start controller + brokers, wait
# until every container is healthy. Host clients: --bootstrap 127.0.0.1:19091.
BROKERS ?= 3
COMPOSE_PROJECT ?= brokerlab
COMPOSE_CLUSTER = $(PY) -m lab.compose_cluster --project $(COMPOSE_PROJECT)

.PHONY: compose-build compose-up compose-down compose-ps

compose-build: $(STAMP)
	$(COMPOSE_CLUSTER) build

compose-up: compose-build
	$(COMPOSE_CLUSTER) up --brokers $(BROKERS)

# Removes the containers, the network and the named volumes (all data).
compose-down: $(STAMP)
	$(COMPOSE_CLUSTER) down

compose-ps: $(STAMP)
	$(COMPOSE_CLUSTER) ps --brokers $(BROKERS)
