# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
# A venv keeps its programs in Scripts on Windows, bin elsewhere.
BIN := $(VENV)/$(if $(filter Windows_NT,$(OS)),Scripts,bin)

.PHONY: run test check lint format bench dist bundle clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installed once; re-installed when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

SUBCOG := $(abspath $(BIN))/subcog
CONFIG := {"mcpServers": {"subcog": {"command": "$(SUBCOG)", "args": ["serve"]}}}

## Start the stdio MCP server on the default store (see README for connecting a client).
## First `subcog doctor` prepares the model (and says so on stderr), so that the server is
## ready when it starts. In a terminal, `subcog serve` itself prints how to connect a client;
## elsewhere (an IDE's task, a pipe) this does. Nothing but the protocol goes to stdout.
run: $(VENV)/.installed-run
	@$(BIN)/subcog doctor >&2 || true
	@[ -t 0 ] || printf '%s\n' \
		'subcog: to connect a client, put this in its configuration (Claude Desktop: claude_desktop_config.json):' \
		'$(CONFIG)' \
		'or run: claude mcp add subcog -- $(SUBCOG) serve' >&2
	@$(BIN)/subcog serve

## Run the whole test suite.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

## Lint, format check and strict type check.
check: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Print the start-up and latency figures (benchmarks/startup.py).
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/startup.py

## Build the wheel and the sdist into dist/.
dist: $(VENV)/.installed-dev
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

## Build dist/subcog.mcpb, the Claude Desktop bundle, with @anthropic-ai/mcpb (npx, Node.js).
bundle: dist
	$(BIN)/python bundle/pack.py dist/subcog-*.whl dist/subcog.mcpb

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist build
