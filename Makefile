# airflow-provider-oftp2 — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv test lint typecheck contracts pytest bench demo docs fuzz clean

help:
	@echo "make demo   - the whole mission end to end on embedded defaults"
	@echo "make test   - ruff, mypy, import contract and the test-suite (creates .venv first)"
	@echo "make bench  - benchmarks under tests/benchmarks (not part of make test)"
	@echo "make docs   - build the documentation site strictly"
	@echo "make fuzz   - fuzz the decoders"

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -c .ci/constraints.txt -e '.[dev,docs]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check provider tests dags
	$(BIN)/ruff format --check provider tests dags

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

pytest: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests/unit tests/integration tests/interop

test: lint typecheck contracts pytest

bench: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider -s tests/benchmarks $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m oftp2_provider.demo

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -f .ci/mkdocs.yml

fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet -r .ci/fuzz-requirements.txt
	$(BIN)/python -m pytest -p no:cacheprovider -s tests/fuzz $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .site .mypy_cache .ruff_cache
