# Two commands a new user needs: `make demo` and `make test`. Each builds its own virtual environment.
# `make bench` prints the benchmark table quoted in the README (`make bench BENCH_ARGS=--quick` for a smoke run).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]" "apache-airflow==$(AIRFLOW_VERSION)"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m devtools.demo

bench: $(BIN)/.installed
	$(BIN)/python -W ignore::Warning -m devtools.bench $(BENCH_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
