# Two commands a new user needs: `make demo` and `make test`. Each builds its own virtual environment.
# `make test-unit` runs the unit tier alone, in seconds (no server, no Debian package, no Airflow stack).
# `make bench` prints the benchmark table quoted in docs/benchmarks.md (`make bench BENCH_ARGS=--quick` for a smoke
# run), then the fleet overview's figures for 1,000 views (devtools/benchmarks/bench_fleet.py).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
# Known-good pins for that Airflow minor (`make constraints` regenerates them), so installs are reproducible.
CONSTRAINTS ?= constraints/airflow-$(word 1,$(subst ., ,$(AIRFLOW_VERSION))).$(word 2,$(subst ., ,$(AIRFLOW_VERSION))).txt
# `make airflow EXECUTOR=celery` runs the CeleryExecutor (Redis and two workers) instead of the LocalExecutor.
EXECUTOR ?= local
AIRFLOW_PORT ?= 8080
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo airflow test test-unit lint docs schema system-deps missing-system-deps chromium redis postgresql bench \
        bench-onchange bench-freshness bench-scale bench-paths bench-history clean constraints test-matrix \
        test-matrix-ci

$(BIN)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[dev]" "apache-airflow==$(AIRFLOW_VERSION)"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m devtools.demo

airflow: $(BIN)/.installed $(if $(filter celery,$(EXECUTOR)),redis)
	$(BIN)/python -m devtools.local_airflow --executor $(EXECUTOR) --port $(AIRFLOW_PORT)

# Debian packages some integration and system tests need (tests/unit needs none): Chromium for the browser tests,
# redis-server for the CeleryExecutor ones, postgresql-15 for PostgreSQL 15 (16, 17 and 18 come from wheels).
# `make system-deps` installs the missing ones with apt-get, as root; `make test` calls it when run as root, and
# otherwise says once what is missing. A test whose package is missing is skipped and says why.
system-deps: chromium redis postgresql

missing-system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing, chromium (the browser tests are skipped)"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing, redis-server (the CeleryExecutor tests are skipped)"; \
	test -x /usr/lib/postgresql/15/bin/initdb || missing="$$missing, postgresql-15 (no test runs on PostgreSQL 15)"; \
	[ -z "$$missing" ] || echo "Not root, so installing nothing. Missing: $${missing#, }. As root, make system-deps installs them."

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

# PostgreSQL 15 is Debian's (16, 17 and 18 come from wheels in the dev extras); install it when we may, and drop
# the "main" cluster Debian creates and starts with it, unless one was there before (the tests start their own).
postgresql:
	@test -x /usr/lib/postgresql/15/bin/initdb || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's postgresql-15 for the tests on PostgreSQL 15..."; \
	    had_main=$$(test -d /etc/postgresql/15/main && echo yes); \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null \
	      && { [ -n "$$had_main" ] || pg_dropcluster --stop 15 main 2>/dev/null || true; } \
	      || echo "apt-get could not install postgresql-15: the tests on PostgreSQL 15 will not run"; \
	  else echo "PostgreSQL 15 is missing and cannot be installed here: the tests on PostgreSQL 15 will not run"; fi; }

bench: $(BIN)/.installed
	$(BIN)/python -W ignore::Warning -m devtools.benchmarks.bench $(BENCH_ARGS)
	$(BIN)/python -W ignore::Warning -m devtools.benchmarks.bench_fleet $(if $(findstring --quick,$(BENCH_ARGS)),--quick)

# on_change in a real Airflow against a * * * * * schedule (about 20 minutes; BENCH_ARGS=--quick: about 10).
bench-onchange: $(BIN)/.installed
	$(BIN)/python -W ignore::Warning -m devtools.benchmarks.bench_onchange $(BENCH_ARGS)

# target_lag in a real Airflow under a steady, a bursty and no load, against a * * * * * schedule (about 12 minutes;
# BENCH_ARGS=--target 120 for a 2-minute target).
bench-freshness: $(BIN)/.installed
	$(BIN)/python -W ignore::Warning -m devtools.benchmarks.bench_freshness $(BENCH_ARGS)

# Throughput with 1 and 2 Celery workers, trigger-to-success latency and what bounds it, and 200 views from one
# config in a pool, on the real CeleryExecutor stack (about 12 minutes; BENCH_ARGS=--quick: about 3).
bench-scale: $(BIN)/.installed redis
	$(BIN)/python -W ignore::Warning -m devtools.benchmarks.bench_scale $(BENCH_ARGS)

# The three ways to run a refresh side by side (on a worker, deferred, start_from_trigger), each on its own real
# Airflow (LocalExecutor, parallelism 2, a triggerer) over 1,000 tiny views on * * * * * (about 30 minutes;
# BENCH_ARGS=--quick: 60 views, about 12 minutes).
bench-paths: $(BIN)/.installed
	$(BIN)/python -W ignore::Warning -m devtools.benchmarks.bench_paths $(BENCH_ARGS)

# What the refresh history adds to a refresh (a row in its transaction, retention), side by side (about a minute).
bench-history: $(BIN)/.installed
	$(BIN)/python -W ignore::Warning -m devtools.benchmarks.bench_history $(BENCH_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The docs site (mkdocs.yml, docs/) into site/, warnings as errors: a broken link, a missing page or a shipped schema
# that is not the generated one fails. docs/hooks.py generates the config reference from the config's model.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The config's JSON Schema shipped in the repository (dags/matviews.yaml points at it); run it after changing the
# config's model.
schema: $(BIN)/.installed
	$(BIN)/airflow-matview schema > docs/matviews.schema.json

# The whole suite, every tier (tests/unit, tests/integration, tests/system), after the linters and the docs. Three
# pytest-xdist workers on the 2-core machine: most of the suite waits on servers, subprocesses and real Airflow stacks
# rather than computes (devtools/harness/xdist_scheduling.py keeps the tests of one real-Airflow stack in one worker).
# PYTEST_ARGS= runs serially; the 40 slowest tests are listed at the end.
PYTEST_ARGS ?= -n 3 --durations=40

test: lint docs $(if $(filter 0,$(shell id -u)),system-deps,missing-system-deps)
	$(BIN)/pytest $(PYTEST_ARGS)

# The unit tier alone: the package in the test process, no PostgreSQL server, no Airflow metadata database, no
# subprocess (tests/conftest.py says what each tier holds). UNIT_ARGS adds pytest options (-x, -k ...).
test-unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit $(UNIT_ARGS)

# The DAG-running tests (marker airflow_run) and one end-to-end test on other Airflow minors and Pythons, each in
# its own venv (.venv-matrix/af<version>-py<python>) built with that minor's constraints. MATRIX lists
# <airflow version>:<python>; a Python missing here is reported and skipped. MATVIEW_PG picks the server (17, a
# wheel on every Python). test-matrix-ci is the part CI runs: each other minor once, oldest and newest Python.
MATRIX ?= 3.1.8:python3.10 3.1.8:python3.11 3.1.8:python3.12 3.1.8:python3.13 \
          3.2.2:python3.10 3.2.2:python3.11 3.2.2:python3.12 3.2.2:python3.13 \
          3.3.2:python3.10 3.3.2:python3.12 3.3.2:python3.13
MATRIX_CI ?= 3.1.8:python3.10 3.2.2:python3.13
MATRIX_TESTS ?= -m airflow_run

test-matrix:
	$(PYTHON) -m devtools.matrix $(MATRIX) -- $(MATRIX_TESTS)

# CI's share: one test of each kind (dag.test, `airflow dags test`, the DagBag and `airflow dags` CLI, an asset
# event, a failing task, the moved names, a scheduled run in a real scheduler, the fleet page's queries on the
# metadata DB, every production key in a DagBag), to stay within CI's time.
MATRIX_CI_TESTS ?= -m airflow_run -k "reference_scenario or version_compat or cli_lists or emits_an_asset_event \
                   or fails_the_airflow_task or scheduled_run_needs_no_trigger or (fleet and test_app) or edge_values"

test-matrix-ci:
	$(PYTHON) -m devtools.matrix $(MATRIX_CI) -- $(MATRIX_CI_TESTS)

constraints: $(BIN)/.installed
	$(BIN)/pip install --quiet uv
	$(BIN)/python -m devtools.constraints

clean:
	rm -rf $(VENV) .venv-matrix .mypy_cache .pytest_cache .ruff_cache
