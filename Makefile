# keypress-ari: every entry point a developer or CI needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
export KEYPRESS_TEST_DSN ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: help system-deps venv asterisk postgres test unit lint demo bench clean container-test test-all

help:
	@echo "make demo    set up Asterisk + PostgreSQL, run the daemon, place a demo call"
	@echo "make test    unit and integration tests (real Asterisk, real PostgreSQL)"
	@echo "make unit    the unit tests only (~15 s; no Asterisk, no PostgreSQL)"
	@echo "make lint    ruff + mypy"
	@echo "make container-test  build both images, run the stack, place the demo call inside"
	@echo "make bench   benchmarks: latency, throughput, memory, end to end, SIP load"

system-deps:
	bash scripts/system-deps.sh

$(BIN)/keypress-ari: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

venv: system-deps $(BIN)/keypress-ari

asterisk: system-deps
	bash asterisk/provision.sh

postgres: system-deps
	bash scripts/ensure-postgres.sh

test: venv asterisk postgres
	$(BIN)/python -m pytest

# Tests that use the asterisk or pg_dsn fixtures carry those markers (tests/conftest.py).
unit: venv
	$(BIN)/python -m pytest -m "not asterisk and not pg"

lint: venv
	$(BIN)/ruff check keypress_ari tests bench scripts
	$(BIN)/mypy

demo: venv asterisk postgres
	bash scripts/demo.sh

# Benchmarks in their own venv (aioari and matplotlib are never runtime dependencies); the
# figures land in bench/results/ (bench.json, table.md, *.png). A benchmark never fails.
BENCH_VENV := bench/.venv

$(BENCH_VENV)/.installed: bench/requirements.txt pyproject.toml
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --disable-pip-version-check -r bench/requirements.txt
	touch $@

bench: system-deps asterisk postgres $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench.run $(BENCH_ARGS)

# Builds docker/Dockerfile and docker/asterisk.Dockerfile (local bases when no registry
# serves them), runs them, places the demo call, reads its call log over the admin API.
container-test: postgres
	bash scripts/container-test.sh

test-all: test container-test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
