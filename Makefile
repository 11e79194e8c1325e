PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench schema clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m slotengine.api.explorer
	touch $(STAMP)

run: install
	$(BIN)/slotengine dev

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src workers tests
	$(BIN)/ruff format --check src workers tests
	$(BIN)/mypy src workers

bench: install
	$(BIN)/python -m bench

schema: install
	$(BIN)/slotengine schema > schema.graphql

clean:
	rm -rf $(VENV) .slotengine .pytest_cache
