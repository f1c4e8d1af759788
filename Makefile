# Quick start: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test soak lint typecheck unit bench chaos redis-server debian-python builder image promtool alerts lock upgrade clean

# The venv holds exactly what the locks pin, hash-checked: the runtime from requirements.lock (what
# the image and the VM recipe ship), the tools from requirements-dev.lock. A changed lock or
# pyproject.toml rebuilds it from nothing, so no package outlives its pin.
LOCKS := requirements.lock requirements-dev.lock
$(STAMP): pyproject.toml $(LOCKS)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (PYTHON=$(PYTHON))")'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes $(addprefix -r ,$(LOCKS))
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

# Integration tests start their own redis-server instances; CI must not silently skip them.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "redis-server not found: installing it with apt-get"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }

# Debian 12's own Python (3.11.2, as on a stock VM): the pinned recipe is tested with it.
debian-python:
	@test -x /usr/bin/python3 && /usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null || { \
		echo "Debian's python3-venv not found: installing it with apt-get"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }

# buildah builds and runs the container image without a Docker engine; mmdebstrap makes its base
# where the registry image cannot be pulled.
builder:
	@command -v buildah >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1 || { \
		echo "buildah or mmdebstrap not found: installing them with apt-get"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq buildah mmdebstrap; }

# The image, localhost/orca-token-daemon:<version> and :latest (tools/image.py says how).
image: builder
	python3 tools/image.py

demo: $(STAMP)
	$(BIN)/orca-tokens demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The TypeScript consumer test reads our keys with the npm redis client (node is needed in CI).
TS_DEPS := tests/ts/node_modules/.installed
$(TS_DEPS): tests/ts/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd tests/ts && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the TypeScript consumer test will say so"; fi

# promtool (from Debian's prometheus package) runs the alerting rules' unit tests.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		echo "promtool not found: installing Debian's prometheus package with apt-get"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

alerts: promtool
	cd deploy/monitoring && promtool check rules alerts.yml && promtool test rules alerts.test.yml

# The fast loop: in-process tests on fakeredis, respx and injected clocks (no `e2e` mark).
unit: $(STAMP)
	$(BIN)/pytest -m "not e2e and not soak" -n 2

# Everything: lint, types, and every test, end-to-end ones (processes, real servers) included.
test: lint typecheck $(STAMP) redis-server debian-python builder promtool $(TS_DEPS)
	$(BIN)/pytest -m "not soak" -n 8 --dist worksteal  # most tests wait on processes, not CPU

# The real-time runs longer than a minute (under 20 minutes in all); `.ci/run` runs it after test.
soak: $(STAMP) redis-server
	$(BIN)/pytest -m soak -n 4 --dist worksteal

# Two locks, each one universal resolution with hashes for CPython 3.11.0 and newer (pins behind
# markers, such as redis's async-timeout below 3.11.3, are in them): requirements.lock, the runtime
# and the audit extra (what the Dockerfile and the VM recipe install); requirements-dev.lock, the
# tools, the demo and pip and setuptools themselves, resolved within the first so the two agree.
# tests/test_lock.py fails when either no longer matches pyproject.toml. `make lock` keeps every
# pin that still fits; `make upgrade` moves every pin to the newest release, then runs the suite.
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--no-emit-index-url
lock: $(STAMP)
	$(UV_COMPILE) $(UPGRADE) --extra audit --output-file requirements.lock pyproject.toml
	$(UV_COMPILE) $(UPGRADE) --extra audit --extra dev --extra demo --constraint requirements.lock \
		--output-file requirements-dev.lock pyproject.toml tools/bootstrap.in

upgrade:
	$(MAKE) lock UPGRADE=--upgrade
	$(MAKE) test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info

# Benchmarks on loopback, each figure beside a baseline measured in the same run (~3 min).
bench: $(STAMP) redis-server
	$(BIN)/python -m bench.run

# Faults injected into two running daemons (loopback only, under 3 minutes); prints the figures.
chaos: $(STAMP) redis-server
	$(BIN)/python -m tools.chaos
