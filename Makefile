# The two commands a new user needs (README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest clean docs dist

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: build the demo PM database, start the sandbox and the real daemon, feed it PM changes, print what was ordered and why
demo: $(STAMP)
	$(BIN)/python -m propready.demo.run

## test: lint, type-check and run the whole suite (SQLite and PostgreSQL on 127.0.0.1:5432)
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check daemon tests migrations
	$(BIN)/ruff format --check daemon tests migrations

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

## docs: regenerate README.md's payload-columns table from the planner's own table
docs: $(STAMP)
	$(BIN)/python -m propready.docs

## dist: build the wheel and the sdist into dist/; the wheel carries the migrations, the example
## config and rules, the systemd unit(s) and the runbook (`propready deploy-files DIR` writes them)
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache dist build
