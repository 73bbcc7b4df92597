# keypress-ari: every entry point a developer or CI needs.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
export KEYPRESS_TEST_DSN ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: help system-deps venv asterisk postgres test unit lint demo bench dist clean install systemd-test container-test test-all

help:
	@echo "make demo    set up Asterisk + PostgreSQL, run the daemon, place a demo call"
	@echo "make test    unit and integration tests (real Asterisk, real PostgreSQL)"
	@echo "make unit    the unit tests only (~15 s; no Asterisk, no PostgreSQL)"
	@echo "make lint    ruff + mypy"
	@echo "make dist    the sdist and the wheel, in dist/"
	@echo "make container-test  build both images, run the stack, place the demo call inside"
	@echo "make bench   benchmarks: latency, throughput, memory, end to end, SIP load"
	@echo "make install the daemon in a venv at PREFIX, unit, config, sysusers.d (DESTDIR-aware)"
	@echo "make systemd-test  the unit under a real systemd (nspawn), Asterisk, PostgreSQL"

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

# tests/test_systemd_unit.py (the unit under a real systemd, ~30 s; 103 s the first
# time, to build its container tree) runs as root where systemd-nspawn exists; else skipped.
# KEYPRESS_SYSTEMD_TEST=0 leaves it out.
export KEYPRESS_SYSTEMD_TEST ?= $(shell [ "$$(id -u)" = 0 ] && command -v systemd-nspawn >/dev/null && echo 1)

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

# The release artefacts: an sdist and a wheel in dist/ (tests/test_packaging.py builds them too).
dist: venv
	rm -rf dist && $(BIN)/python -m build --outdir dist .

# `make install`: a venv at $(PREFIX) holding the package, the systemd unit, the settings
# (kept if already there), sysusers.d and tmpfiles.d entries. With DESTDIR (a package or
# an image tree) the unit goes to $(DESTDIR)/lib/systemd/system and the venv is relocated
# (scripts' #! lines and pyvenv.cfg name $(PREFIX), bytecode names $(PREFIX)); the user and
# the config file's group then come at boot (systemd-sysusers, systemd-tmpfiles). Without
# DESTDIR the unit goes to /etc/systemd/system and both are applied at once.
PREFIX     ?= /opt/keypress-ari
SYSCONFDIR ?= /etc/keypress-ari
UNITDIR    ?= $(if $(DESTDIR),/lib/systemd/system,/etc/systemd/system)
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d

install:
	rm -rf "$(DESTDIR)$(PREFIX)"
	$(PY) -m venv "$(DESTDIR)$(PREFIX)"
	"$(DESTDIR)$(PREFIX)/bin/pip" install -q --disable-pip-version-check --no-compile .
	rm -rf build
	@if [ -n "$(DESTDIR)" ]; then \
	    grep -rlF "$(DESTDIR)$(PREFIX)" "$(DESTDIR)$(PREFIX)/bin" "$(DESTDIR)$(PREFIX)/pyvenv.cfg" \
	        | xargs -r sed -i "s|$(DESTDIR)$(PREFIX)|$(PREFIX)|g"; \
	fi
	$(PY) -m compileall -q -s "$(DESTDIR)" -p / "$(DESTDIR)$(PREFIX)/lib"
	install -d -m 0755 "$(DESTDIR)$(UNITDIR)" "$(DESTDIR)$(SYSUSERSDIR)" "$(DESTDIR)$(TMPFILESDIR)"
	install -m 0644 config/keypress-ari.service "$(DESTDIR)$(UNITDIR)/keypress-ari.service"
	install -m 0644 config/keypress-ari.sysusers "$(DESTDIR)$(SYSUSERSDIR)/keypress-ari.conf"
	install -m 0644 config/keypress-ari.tmpfiles "$(DESTDIR)$(TMPFILESDIR)/keypress-ari.conf"
	install -d -m 0750 "$(DESTDIR)$(SYSCONFDIR)"
	[ -e "$(DESTDIR)$(SYSCONFDIR)/keypress-ari.toml" ] || \
	    install -m 0640 config/keypress-ari.toml "$(DESTDIR)$(SYSCONFDIR)/keypress-ari.toml"
	@if [ -z "$(DESTDIR)" ]; then \
	    systemd-sysusers "$(SYSUSERSDIR)/keypress-ari.conf" && \
	    systemd-tmpfiles --create "$(TMPFILESDIR)/keypress-ari.conf" && \
	    { systemctl daemon-reload 2>/dev/null || true; }; \
	fi

# The unit under a real systemd (PID 1 in a systemd-nspawn container sharing the host
# network) with the test Asterisk and PostgreSQL: READY, STATUS, watchdog, stop, hardening,
# journal. Builds a Debian bookworm tree once (debootstrap, ~75 s) and `make install`s into it.
systemd-test: venv asterisk postgres
	KEYPRESS_SYSTEMD_TEST=1 $(BIN)/python -m pytest -s -m systemd tests/test_systemd_unit.py

# Builds docker/Dockerfile and docker/asterisk.Dockerfile (local bases when no registry
# serves them), runs them, places the demo call, reads its call log over the admin API.
container-test: postgres
	bash scripts/container-test.sh

test-all: test container-test

clean:
	rm -rf dist $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
