# tidegate: every target sets up its own .venv when missing, so a fresh clone needs nothing else.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
QUICK ?=

.DEFAULT_GOAL := help
LOCK := requirements/dev.txt
COMPILE := $(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 --custom-compile-command "make lock" --quiet

.PHONY: help setup lock demo test test-fast lint format reference bench services-up services-down services-status browser clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2}'

# The exact, hash-checked versions of requirements/dev.txt, then tidegate itself (editable,
# no dependency resolution: the lock already holds every dependency and every extra).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install tidegate with its dev tools, as locked

lock: $(STAMP) ## Re-resolve requirements/*.txt (with hashes) after changing dependencies in pyproject.toml
	$(COMPILE) --extra dev -o requirements/dev.txt
	$(COMPILE) -o requirements/base.txt

demo: $(STAMP) ## Run the demo shop on the embedded backends (no services); ARGS=--no-serve to exit after the tour
	$(BIN)/tidegate demo $(ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict on src/
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

reference: $(STAMP) ## Regenerate the JSON Schemas shipped in the package and docs/reference.md
	$(BIN)/python -m tidegate.project.reference

services-up: ## Install (if missing) and start PostgreSQL, Redis, MariaDB and Kafka on 127.0.0.1
	bash scripts/services.sh up

services-down: ## Stop the services
	bash scripts/services.sh down

services-status: ## Which services answer
	bash scripts/services.sh status

browser: ## Install (if missing) Debian's chromium for the console's browser tests
	bash scripts/browser.sh

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: $(STAMP) services-up browser lint ## Start the services, lint, and run every test (what CI runs)
	$(BIN)/pytest || { code=$$?; [[ $$code -ne 5 ]] || echo "pytest ran no tests" >&2; exit $$code; }

test-fast: $(STAMP) ## Only the tests that need no services
	$(BIN)/pytest -m "not services and not slow"

bench: $(STAMP) services-up ## Benchmarks side by side with peers and raw limits; QUICK=1 for a small size
	$(BIN)/python -m benchmarks $(if $(QUICK),--quick,) $(ARGS)

clean: ## Remove the venv, caches and local state
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-shop
