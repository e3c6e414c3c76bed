# make run   set up .venv and open the REPL on the guide's demo, serving on localhost:8890
# make test  set up everything the tests need and run them all
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NODE_INSTALLED := tests/js/node_modules/.installed
SYSTEM_INSTALLED := $(VENV)/.system-deps
PYTEST_ARGS ?=

.PHONY: run test lint format clean setup

run: $(INSTALLED)
	$(BIN)/replkit repl app.sse_demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(INSTALLED) $(NODE_INSTALLED) $(SYSTEM_INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "replkit needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) --version)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(INSTALLED): pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(SYSTEM_INSTALLED): .ci/system-deps $(BIN)/python
	.ci/system-deps
	touch $@

$(NODE_INSTALLED): tests/js/package-lock.json $(SYSTEM_INSTALLED)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) tests/js/node_modules .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
