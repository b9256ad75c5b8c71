# One entry point for set-up, checks and the demo. Every target creates what it needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck pytest demo bench chaos clean

# System packages the project needs: the mosquitto broker (tests and demo) and socat.
system-deps:
	@./scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

setup: system-deps $(STAMP)

lint: setup
	$(VENV)/bin/ruff check gateway drivers sync tests bench
	$(VENV)/bin/ruff format --check gateway drivers sync tests bench

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider

# The README's test command: everything CI runs.
test: lint typecheck pytest

demo: setup
	$(VENV)/bin/punchgate demo

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
