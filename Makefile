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
