# make run   set up .venv and open the REPL on the guide's demo, serving on localhost:8890
# make test  set up everything the tests need and run them all
# make bench replkit against its peers, side by side: bench/RESULTS.md (about 10 minutes)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# PYTHON may name a pyenv shim for a version that is installed but not selected: find it.
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)' 2>/dev/null \
	|| { v=$$(pyenv whence $(PYTHON) 2>/dev/null | tail -n 1); \
	     [ -n "$$v" ] && echo "$$(pyenv root)/versions/$$v/bin/$(PYTHON)"; })
# The venv remembers the Python it was made with: another PYTHON (make test PYTHON=python3.13)
# makes a new one.
PYTHON_VERSION := $(if $(PYTHON_EXE),$(shell $(PYTHON_EXE) -c 'import sys; print("%d.%d" % sys.version_info[:2])'))
MADE_WITH := $(VENV)/.python-$(PYTHON_VERSION)
INSTALLED := $(VENV)/.installed
NODE_INSTALLED := tests/js/node_modules/.installed
SYSTEM_INSTALLED := $(VENV)/.system-deps
# The peers the benchmark compares replkit with live in an environment of their own.
PEERS := bench/.venv-peers
PEERS_INSTALLED := $(PEERS)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: run test lint format clean setup bench bench-env bench-profile

run: $(INSTALLED)
	$(BIN)/replkit repl app.sse_demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(INSTALLED) $(NODE_INSTALLED) $(SYSTEM_INSTALLED) $(PEERS_INSTALLED)

# make bench BENCH_ARGS="--label after" records a run beside the committed "before" one.
bench: bench-env
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-profile: bench-env
	$(BIN)/python -m bench.profile

bench-env: $(INSTALLED) $(SYSTEM_INSTALLED) $(PEERS_INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(MADE_WITH):
	@[ -n "$(PYTHON_EXE)" ] || { echo "$(PYTHON): no such Python"; exit 1; }
	@$(PYTHON_EXE) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "replkit needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON_EXE) --version)"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON_EXE) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(INSTALLED): pyproject.toml $(MADE_WITH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(SYSTEM_INSTALLED): .ci/system-deps $(MADE_WITH)
	.ci/system-deps
	touch $@

$(NODE_INSTALLED): tests/js/package-lock.json $(SYSTEM_INSTALLED)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
	touch $@

# aiohttp is pinned to the project's version: replkit and bare aiohttp run the same one.
$(PEERS_INSTALLED): bench/requirements-peers.txt $(INSTALLED)
	rm -rf $(PEERS)
	$(PYTHON_EXE) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet -r bench/requirements-peers.txt \
		"aiohttp==$$($(BIN)/python -c 'import aiohttp; print(aiohttp.__version__)')"
	touch $@

clean:
	rm -rf $(VENV) $(PEERS) tests/js/node_modules .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
