# Two commands a new user needs: `make demo` and `make test`. Each builds its own virtual environment.
# `make bench` prints the benchmark table quoted in the README (`make bench BENCH_ARGS=--quick` for a smoke run),
# then the fleet overview's figures for 1,000 views (devtools/bench_fleet.py).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
# `make airflow EXECUTOR=celery` runs the CeleryExecutor (Redis and two workers) instead of the LocalExecutor.
EXECUTOR ?= local
AIRFLOW_PORT ?= 8080
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo airflow test lint chromium redis bench bench-onchange clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]" "apache-airflow==$(AIRFLOW_VERSION)"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m devtools.demo

airflow: $(BIN)/.installed $(if $(filter celery,$(EXECUTOR)),redis)
	$(BIN)/python -m devtools.local_airflow --executor $(EXECUTOR) --port $(AIRFLOW_PORT)

# The browser test drives Debian's Chromium (never a downloaded browser); install it when we may.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser test..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "apt-get could not install chromium: the browser tests will be skipped"; \
	  else echo "chromium is missing and cannot be installed here: the browser tests will be skipped"; fi; }

# The CeleryExecutor stack's broker is Debian's redis-server; install it when we may (the service is not started).
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's redis-server for the CeleryExecutor tests..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
	      || echo "apt-get could not install redis-server: the CeleryExecutor tests will be skipped"; \
	  else echo "redis-server is missing and cannot be installed here: the CeleryExecutor tests will be skipped"; fi; }

bench: $(BIN)/.installed
	$(BIN)/python -W ignore::Warning -m devtools.bench $(BENCH_ARGS)
	$(BIN)/python -W ignore::Warning -m devtools.bench_fleet $(if $(findstring --quick,$(BENCH_ARGS)),--quick)

# on_change in a real Airflow against a * * * * * schedule (about 20 minutes; BENCH_ARGS=--quick: about 10).
bench-onchange: $(BIN)/.installed
	$(BIN)/python -W ignore::Warning -m devtools.bench_onchange $(BENCH_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint chromium redis
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
