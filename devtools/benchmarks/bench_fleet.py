"""Benchmark of the fleet overview: 1,000 views (``make bench`` runs it after the refresh benchmarks).

It starts its own PostgreSQL 16 (pgserver wheel) holding a migrated Airflow metadata database, writes a fleet with
Airflow's DAG-processor code (``devtools/harness/fleet_seed.py``: 1,000 DAGs, 20 runs each, so 20,000 DAG runs, task
instances and about 18,000 asset events), and measures:

1. the data: ``load_fleet`` + ``as_json`` (every query, for all views);
2. the JSON endpoint through HTTP from Airflow's own api-server (one worker, on loopback; the simple auth manager
   decodes the JWT and lists the readable DAGs);
3. the page in Debian's chromium (Playwright): from navigation until the table of 1,000 rows is drawn (skipped
   when chromium is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devtools.harness.pgcluster import ClusterUnavailable, embedded_cluster, free_port

CHROMIUM = Path("/usr/bin/chromium")
TARGET_SECONDS = 1.0
SERVER_TIMINGS: list[str] = []


def _median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms (min {min(samples) * 1000:.0f}, max {max(samples) * 1000:.0f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--views", type=int, default=1000, help="how many views (default 1000)")
    parser.add_argument("--runs", type=int, default=20, help="finished runs per view (default 20)")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions of each measurement (default 7)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 views, 5 runs each, 3 repetitions")
    args = parser.parse_args(argv)
    if args.quick:
        args.views, args.runs, args.repeat = 200, 5, 3

    try:
        cluster = embedded_cluster()
    except ClusterUnavailable as error:
        print(f"Cannot start PostgreSQL: {error}", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="matview-fleet-bench-"))
    try:
        cluster.start()
        cluster.create_database("airflow")
        os.environ.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cluster.uri("airflow").replace(
                    "postgresql://", "postgresql+psycopg2://", 1
                ),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            }
        )
        airflow = Path(sys.executable).parent / "airflow"
        subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
        return _bench(args.views, args.runs, args.repeat)
    finally:
        cluster.destroy()
        subprocess.run(["rm", "-rf", str(home)], check=False)


def _bench(views: int, runs: int, repeat: int) -> int:
    from airflow.utils.session import create_session
    from sqlalchemy import text

    from airflow_matview.fleet.overview import as_json, load_fleet
    from devtools.harness.fleet_seed import fleet_config, seed_fleet

    started = time.monotonic()
    seed_fleet(fleet_config(views), runs=runs)
    with create_session() as session:  # statistics, as autovacuum keeps them on a live metadata database
        session.execute(text("ANALYZE"))
    print(f"seeded {views} views x {runs} runs in {time.monotonic() - started:.1f}s", flush=True)

    statements = _statement_timer()
    data: list[float] = []
    for _ in range(repeat):
        statements.clear()
        with create_session() as session:
            began = time.perf_counter()
            document = as_json(load_fleet(session))
            data.append(time.perf_counter() - began)
    assert document["total"] == views, document["total"]
    per_query = ", ".join(f"{seconds * 1000:.0f}" for seconds in statements)
    queries = len(statements)

    server, url, token = _serve()
    try:
        http = _time_http(url, token, repeat, views)
        page, parts = _time_page(url, token, repeat, views)
    finally:
        _stop(server)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"\nFleet overview, {views} views, {runs} runs each (medians of {repeat}; "
        f"load average {load} on {os.cpu_count()} CPUs):"
    )
    print(f"  data (load_fleet + as_json, all queries):          {_median_ms(data)}")
    print(f"    of which {queries} SQL statements (last repetition, ms each): {per_query}")
    print(f"  JSON over HTTP (auth, permitted DAGs, queries, encode): {_median_ms(http)}")
    print(f"    the handler's own Server-Timing, each request: {' | '.join(SERVER_TIMINGS)}")
    if page:
        print(f"  page in chromium, browser clock (navigation to {views} rows drawn): {_median_ms(parts['total'])}")
        print(
            f"    of which the page's HTML {_median_ms(parts['html'])}, the JSON fetch {_median_ms(parts['fetch'])}, "
            f"drawing the table {_median_ms(parts['render'])}"
        )
        print(f"  the same from Playwright's goto() until it sees the rows (adds its round trips): {_median_ms(page)}")
        verdict = "met" if statistics.median(parts["total"]) < TARGET_SECONDS else "MISSED"
        print(f"  target: the page renders {views} views in < {TARGET_SECONDS:.0f} s: {verdict}")
    else:
        print("  page in chromium: skipped (Debian's chromium or playwright is missing)")
    return 0


def _statement_timer() -> list[float]:
    """The duration of each SQL statement sent (``after_cursor_execute`` minus ``before_cursor_execute``)."""
    from airflow.settings import engine
    from sqlalchemy import event

    durations: list[float] = []
    started: list[float] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _before(*_: Any) -> None:
        started.append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(*_: Any) -> None:
        durations.append(time.perf_counter() - started.pop())

    return durations


def _serve() -> tuple[subprocess.Popen[bytes], str, str]:
    """Airflow's api-server (one worker) on loopback with the plugin; returns the process, the page's URL and a JWT
    from ``POST /auth/token``."""
    from airflow_matview.fleet.app import URL_PREFIX

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    passwords = Path(os.environ["AIRFLOW_HOME"]) / "passwords.json"
    password = secrets.token_urlsafe(12)
    passwords.write_text(json.dumps({"admin": password}))
    env = {
        **os.environ,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    log = (Path(os.environ["AIRFLOW_HOME"]) / "api-server.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "api-server"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            request = urllib.request.Request(
                f"{base}/auth/token",
                data=json.dumps({"username": "admin", "password": password}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                token = json.load(response)["access_token"]
            return server, f"{base}{URL_PREFIX}", token
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if server.poll() is not None or time.monotonic() > deadline:
                _stop(server)
                raise RuntimeError("the api-server did not start") from None
            time.sleep(1)


def _stop(server: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _time_http(url: str, token: str, repeat: int, views: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        request = urllib.request.Request(f"{url}/api/views", headers={"Authorization": f"Bearer {token}"})
        began = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as response:
            document = json.load(response)
            server = response.headers.get("Server-Timing", "")
        samples.append(time.perf_counter() - began)
        SERVER_TIMINGS.append(server)
        assert document["total"] == views
    return samples


def _time_page(url: str, token: str, repeat: int, views: int) -> tuple[list[float], dict[str, list[float]]]:
    parts: dict[str, list[float]] = {"html": [], "fetch": [], "render": [], "total": []}
    if not CHROMIUM.exists():
        return [], parts
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [], parts
    samples = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.add_cookies([{"name": "_token", "value": token, "url": url}])
            tab = context.new_page()
            for _ in range(repeat):
                began = time.perf_counter()
                tab.goto(f"{url}/")
                tab.wait_for_selector("body[data-loaded=true]", timeout=60_000)
                samples.append(time.perf_counter() - began)
                assert tab.locator("#rows tr").count() == views
                for part in parts:
                    parts[part].append(int(tab.evaluate(f"document.body.dataset.{part}Ms")) / 1000)
        finally:
            browser.close()
    return samples, parts


if __name__ == "__main__":
    sys.exit(main())
