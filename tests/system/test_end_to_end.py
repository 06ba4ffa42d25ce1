"""A real Airflow (api-server, scheduler, dag-processor, LocalExecutor) running our ``dags/`` on loopback.

Everything goes through the REST API the UI uses (``/api/v2``), or through the UI itself in a headless Chromium.
One PostgreSQL server holds both Airflow's metadata database and the scenario database. The stack is started
once for this module and stopped (every process group) even when a test fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest
import yaml

from devtools.harness.airflow_stack import USERNAME
from devtools.harness.deployment import Deployment as BaseDeployment
from devtools.harness.deployment import deployed, matviews_dags
from devtools.harness.paths import REPO
from devtools.harness.scenario import add_new_users, create_reference_scenario, view_rows

if TYPE_CHECKING:
    from collections.abc import Iterator

    import psycopg

ARTIFACTS = REPO / "artifacts"
REFERENCE_DAG = "matview.public.polls_user_matt_view"
MINUTELY_DAG = "matview.public.young_users"
DOOMED_DAG = "matview.public.doomed_view"
STEADY_DAG = "matview.public.steady_view"
BUDGET_DAG = "matview.public.budget_view"
CHROMIUM = Path("/usr/bin/chromium")
RUN_TIMEOUT = 240  # seconds for a run to finish, on a loaded 2-core CI machine

pytestmark = pytest.mark.timeout(600)


class Deployment(BaseDeployment):
    """The running stack, with the failed run a test leaves for the next ones."""

    failed_run_id: str | None = None

    def task_instance(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/refresh"))

    def xcom(self, dag_id: str, run_id: str) -> dict[str, Any]:
        entry = self.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/refresh/xcomEntries/return_value")
        return dict(entry["value"])


def _deployment_config() -> dict[str, Any]:
    """The shipped example config plus a view on a one-minute schedule and one that will be dropped."""
    config = yaml.safe_load((REPO / "dags" / "matviews.yaml").read_text())
    config["views"] += [
        {"name": "public.young_users", "schedule": "* * * * *"},
        {"name": "public.doomed_view", "schedule": None, "retries": 0},
        {"name": "public.steady_view", "schedule": None, "skip_if_unchanged": True, "tags": ["steady"]},
        {  # never runs (paused): shows a staleness budget and a schedule in its own timezone
            "name": "public.budget_view",
            "schedule": "0 6 * * *",
            "timezone": "Europe/Paris",
        },
    ]
    config["views"][-1] |= {
        "max_staleness": "1m",
        "on_stale": [
            {"notifier": "airflow.providers.smtp.notifications.smtp.SmtpNotifier", "to": "oncall@example.com"}
        ],
    }
    return config


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    def scenario(conn: psycopg.Connection) -> None:
        create_reference_scenario(conn)
        conn.execute("CREATE MATERIALIZED VIEW young_users AS SELECT * FROM polls_user WHERE age < 25")
        conn.execute("CREATE MATERIALIZED VIEW doomed_view AS SELECT * FROM polls_user")
        conn.execute("CREATE TABLE steady_source AS SELECT g AS id FROM generate_series(1, 3) AS g")
        conn.execute("CREATE MATERIALIZED VIEW steady_view AS SELECT id FROM steady_source")

    dags = matviews_dags(tmp_path_factory.mktemp("dags"), _deployment_config())
    with deployed(dags, scenario, (REFERENCE_DAG, MINUTELY_DAG, DOOMED_DAG, STEADY_DAG, BUDGET_DAG)) as up:
        yield Deployment(up.stack, up.api, up.dsn, up.started_in)


def test_dag_processor_lists_one_dag_per_view(deployment: Deployment) -> None:
    listed = deployment.api.get("/dags?tags=matview&limit=100")
    # One DAG per view, and the lag monitor of the connection's views with max_staleness (budget_view's).
    assert sorted(dag["dag_id"] for dag in listed["dags"]) == sorted(
        [DOOMED_DAG, REFERENCE_DAG, MINUTELY_DAG, STEADY_DAG, BUDGET_DAG, "matview.freshness.postgres_default"]
    )
    assert deployment.api.get("/importErrors")["total_entries"] == 0
    reference = deployment.api.get(f"/dags/{REFERENCE_DAG}/details")
    assert reference["is_paused"] is True, "new DAGs start paused, as Airflow's default"
    assert reference["max_active_runs"] == 1
    assert reference["catchup"] is False
    assert "public.polls_user_matt_view" in reference["doc_md"]
    print(f"Airflow up and all DAGs parsed in {deployment.started_in:.1f}s")


def test_trigger_with_params_through_the_rest_api(deployment: Deployment) -> None:
    with deployment.connect() as conn:
        add_new_users(conn)
        assert [name for _, name, _ in view_rows(conn)] == ["alice", "bob", "carol", "dave", "erin"]

    started = time.monotonic()
    deployment.api.patch(f"/dags/{REFERENCE_DAG}", {"is_paused": False})
    run_id = deployment.trigger(REFERENCE_DAG, {"concurrently": "false"})
    # Unpausing the @daily DAG also starts today's scheduled run, which this one may queue behind.
    run = deployment.api.wait_for_run(REFERENCE_DAG, run_id, timeout=RUN_TIMEOUT)
    print(f"triggered run of {REFERENCE_DAG} succeeded in {time.monotonic() - started:.1f}s")

    assert run["state"] == "success", deployment.stack.log("scheduler")
    with deployment.connect() as conn:
        assert [name for _, name, _ in view_rows(conn)] == ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
    result = deployment.xcom(REFERENCE_DAG, run_id)
    assert result["view"] == "public.polls_user_matt_view"
    assert result["mode"] == "blocking", "the run's params (concurrently=false) override the config's auto"
    assert result["rows"] == 7
    assert result["sources"] == ["public.polls_user"]

    history = deployment.api.get(f"/dags/{REFERENCE_DAG}/dagRuns?order_by=-run_after")["dag_runs"]
    ours = next(entry for entry in history if entry["dag_run_id"] == run_id)
    assert (ours["state"], ours["run_type"], ours["conf"]) == ("success", "manual", {"concurrently": "false"})
    task = deployment.task_instance(REFERENCE_DAG, run_id)
    assert (task["state"], task["try_number"], task["operator"]) == ("success", 1, "RefreshMaterializedViewOperator")
    events = deployment.api.get("/assets/events?source_dag_id=" + REFERENCE_DAG)["asset_events"]
    assert any(event["source_run_id"] == run_id and event["extra"]["rows"] == 7 for event in events)


def failed_run(deployment: Deployment) -> str:
    """A run of the DAG whose view was dropped: it fails (once per module; later callers get the same run)."""
    if deployment.failed_run_id is None:
        with deployment.connect() as conn:
            conn.execute("DROP MATERIALIZED VIEW IF EXISTS doomed_view")
        deployment.api.patch(f"/dags/{DOOMED_DAG}", {"is_paused": False})
        deployment.failed_run_id = deployment.trigger(DOOMED_DAG)
        deployment.api.wait_for_run(DOOMED_DAG, deployment.failed_run_id, timeout=RUN_TIMEOUT)
    return deployment.failed_run_id


def test_failed_refresh_states_its_cause_at_the_end_of_the_task_log(deployment: Deployment) -> None:
    run_id = failed_run(deployment)

    run = deployment.api.get(f"/dags/{DOOMED_DAG}/dagRuns/{run_id}")
    task = deployment.task_instance(DOOMED_DAG, run_id)
    assert (run["state"], task["state"], task["try_number"]) == ("failed", "failed", 1)

    log = deployment.api.get(f"/dags/{DOOMED_DAG}/dagRuns/{run_id}/taskInstances/refresh/logs/1?full_content=true")
    entries = log["content"]
    errors = [index for index, entry in enumerate(entries) if entry.get("level") == "error"]
    assert errors, entries[-10:]
    assert len(entries) - errors[-1] <= 4, "the error is among the log's last lines"
    cause = entries[errors[-1]]["error_detail"][-1]["exc_value"]
    first_sentence = cause.split(". ")[0]
    assert first_sentence.startswith("Materialized view public.doomed_view does not exist")
    assert "connection 'postgres_default'" in first_sentence
    print(f"last lines of the failed task's log state: {cause}")


@pytest.mark.airflow_run  # the end-to-end test `make test-matrix` runs on every Airflow minor
def test_scheduled_run_needs_no_trigger(deployment: Deployment) -> None:
    with deployment.connect() as conn:
        conn.execute("INSERT INTO polls_user (id, name, age) VALUES (100, 'yuki', 19)")
        assert conn.execute("SELECT count(*) FROM young_users").fetchone() == (0,)
    deployment.api.patch(f"/dags/{MINUTELY_DAG}", {"is_paused": False})
    started = time.monotonic()

    deadline = started + RUN_TIMEOUT
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = deployment.api.get(f"/dags/{MINUTELY_DAG}/dagRuns")["dag_runs"]
        if any(run["state"] == "success" for run in runs):
            break
        time.sleep(2)
    print(f"first scheduled run of {MINUTELY_DAG} succeeded {time.monotonic() - started:.1f}s after unpausing")

    succeeded = [run for run in runs if run["state"] == "success"]
    assert succeeded, f"no successful run within {RUN_TIMEOUT}s: {runs}\n{deployment.stack.log('scheduler')}"
    assert {run["run_type"] for run in runs} == {"scheduled"}
    assert all(run["run_after"].endswith(":00Z") for run in runs), "scheduled on the minute, by the cron"
    with deployment.connect() as conn:
        assert conn.execute("SELECT name FROM young_users").fetchall() == [("yuki",)]


@pytest.fixture
def page(deployment: Deployment) -> Iterator[Any]:
    """A headless Debian Chromium tab, signed in to the Airflow UI as the admin user."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make test installs it with apt-get when run as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it is in the dev extra)")
    ARTIFACTS.mkdir(exist_ok=True)
    url = deployment.stack.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.goto(f"{url}/")
            tab.get_by_label("Username").fill(USERNAME)
            tab.get_by_label("Password").fill(deployment.stack.password)
            tab.get_by_role("button", name="Sign in").click()
            tab.wait_for_url(f"{url}/")
            yield tab
        finally:
            browser.close()


def test_trigger_from_the_ui_in_a_real_browser(deployment: Deployment, page: Any) -> None:
    with deployment.connect() as conn:
        conn.execute("INSERT INTO polls_user (id, name, age) VALUES (8, 'heidi', 44)")
    screenshot = ARTIFACTS / "airflow-ui-triggered-run.png"
    url = deployment.stack.url
    # Switched on, as a user would first: the trigger form of a paused DAG adds an "unpause on trigger" checkbox.
    deployment.api.patch(f"/dags/{REFERENCE_DAG}", {"is_paused": False})

    page.goto(f"{url}/dags/{REFERENCE_DAG}")
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    concurrently = form.locator("#element_concurrently")
    assert concurrently.input_value() == "auto"
    suggestions = form.locator("datalist#list_concurrently option")
    assert suggestions.evaluate_all("options => options.map(option => option.value)") == ["auto", "true", "false"]
    concurrently.fill("false")
    form.locator("label").filter(has=page.locator("input[type=checkbox]")).first.click()
    form.get_by_role("button", name="Trigger").click()

    page.wait_for_url(f"{url}/dags/{REFERENCE_DAG}/runs/**")
    run_id = unquote(page.url.rsplit("/runs/", 1)[1])
    deployment.api.wait_for_run(REFERENCE_DAG, run_id, timeout=RUN_TIMEOUT)
    page.get_by_text("Success", exact=True).first.wait_for(timeout=30_000)  # the page shows it too
    page.screenshot(path=str(screenshot))

    run = deployment.api.get(f"/dags/{REFERENCE_DAG}/dagRuns/{run_id}")
    assert (run["state"], run["run_type"]) == ("success", "manual")
    assert run["conf"] == {"concurrently": "false", "analyze": True}, "the form's values reached the run"
    assert run["triggering_user_name"] == USERNAME
    assert deployment.xcom(REFERENCE_DAG, run_id)["mode"] == "blocking"
    with deployment.connect() as conn:
        assert "heidi" in [name for _, name, _ in view_rows(conn)]
    assert screenshot.stat().st_size > 10_000


def test_failed_refresh_shows_its_cause_in_the_ui(deployment: Deployment, page: Any) -> None:
    run_id = failed_run(deployment)
    screenshot = ARTIFACTS / "airflow-ui-failed-task-log.png"

    page.goto(f"{deployment.stack.url}/dags/{DOOMED_DAG}/runs/{run_id}/tasks/refresh")
    cause = page.get_by_text("Materialized view public.doomed_view does not exist").first
    cause.wait_for(timeout=60_000)
    page.keyboard.press("w")  # the log viewer's shortcut for wrapping long lines
    page.screenshot(path=str(screenshot))
    assert "connection 'postgres_default'" in cause.inner_text()


def _finished_run(deployment: Deployment, dag_id: str) -> str:
    run_id = deployment.trigger(dag_id)
    deployment.api.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    return run_id


def test_fleet_overview_lists_every_view_in_a_real_browser(deployment: Deployment, page: Any) -> None:
    """One succeeded, one failed and one skipped (skip_if_unchanged) view on the plugin's page, inside the UI."""
    deployment.api.patch(f"/dags/{REFERENCE_DAG}", {"is_paused": False})
    deployment.api.patch(f"/dags/{STEADY_DAG}", {"is_paused": False})
    succeeded = _finished_run(deployment, REFERENCE_DAG)
    failed_run(deployment)
    _finished_run(deployment, STEADY_DAG)  # the first run refreshes and records the sources' signals
    skipped = _finished_run(deployment, STEADY_DAG)  # nothing changed since: skipped
    assert deployment.task_instance(STEADY_DAG, skipped)["state"] == "skipped"
    assert deployment.task_instance(REFERENCE_DAG, succeeded)["state"] == "success"

    fleet = deployment.api._request("GET", "/matview-fleet/api/views")
    views = {view["dag_id"]: view for view in fleet["views"]}
    assert {REFERENCE_DAG, DOOMED_DAG, STEADY_DAG, MINUTELY_DAG} <= set(views)
    expected = {REFERENCE_DAG: "success", DOOMED_DAG: "failed", STEADY_DAG: "skipped"}
    assert {dag_id: views[dag_id]["last_state"] for dag_id in expected} == expected
    assert (views[DOOMED_DAG]["status"], views[STEADY_DAG]["status"]) == ("failing", "fresh")
    assert views[STEADY_DAG]["skipped_runs"] >= 1
    budget = views[BUDGET_DAG]
    # Paused and never run: the lag monitor (a DAG of its own, unpaused) measures it all the same, and it is over its
    # max_staleness exactly when its lag is (never refreshed: counted from its first measurement).
    deadline = time.monotonic() + 60
    while budget["lag_state"] is None and time.monotonic() < deadline:  # the monitor's first measurement
        time.sleep(2)
        budget = next(
            v for v in deployment.api._request("GET", "/matview-fleet/api/views")["views"] if v["dag_id"] == BUDGET_DAG
        )
    assert (budget["max_staleness"], budget["status"]) == (60.0, "paused"), budget
    assert budget["breached"] == (budget["lag_state"] in ("over", "unknown")), budget
    assert (budget["schedule"], budget["timezone"]) == ("0 6 * * *", "Europe/Paris")
    assert views[REFERENCE_DAG]["view"] == "public.polls_user_matt_view"
    assert views[REFERENCE_DAG]["conn_id"] == "postgres_default"
    assert views[REFERENCE_DAG]["rows"] is not None and views[REFERENCE_DAG]["mode"] in ("blocking", "concurrently")

    # The nav entry opens the page inside the Airflow UI (in a frame), with the UI's sign-in cookie.
    url = deployment.stack.url
    page.goto(f"{url}/")
    page.get_by_role("link", name="Materialized views").first.click()
    page.wait_for_url(f"{url}/plugin/matview-fleet")
    frame = page.frame_locator("iframe").first
    frame.locator("body[data-loaded=true]").wait_for(timeout=30_000)
    for dag_id, state in expected.items():
        row = frame.locator(f'tr[data-view="{views[dag_id]["view"]}"]')
        assert row.locator("td[data-col=last_state]").inner_text() == state
    budget_row = frame.locator('tr[data-view="public.budget_view"]')
    assert budget_row.locator("td[data-col=staleness]").inner_text() == "never fresh"
    assert "0 6 * * * (Europe/Paris)" in budget_row.inner_text()
    for status, count in fleet["counts"].items():
        assert frame.locator(f"[data-testid=count-{status}] b").inner_text() == str(count)
    assert fleet["counts"]["failing"] >= 1 and fleet["counts"]["fresh"] >= 2

    frame.locator("button[data-sort=staleness]").click()
    shown = frame.locator("#rows tr").evaluate_all("rows => rows.map(row => row.dataset.view)")
    by_staleness = sorted(
        fleet["views"], key=lambda v: (-(v["staleness"] if v["staleness"] is not None else float("inf")), v["view"])
    )
    assert shown == [view["view"] for view in by_staleness], "most stale first; never refreshed at the top"
    assert shown.index("public.doomed_view") < shown.index("public.steady_view"), "doomed never succeeded"
    frame.locator("#status").select_option("failing")
    assert frame.locator("#rows tr").evaluate_all("rows => rows.map(row => row.dataset.view)") == ["public.doomed_view"]
    frame.locator("#status").select_option("")
    frame.locator("#tag").select_option("steady")
    assert frame.locator("#rows tr").evaluate_all("rows => rows.map(row => row.dataset.view)") == ["public.steady_view"]
    frame.locator("#tag").select_option("")
    screenshot = ARTIFACTS / "fleet-overview.png"
    frame.locator("body").evaluate("body => window.scrollTo(0, 0)")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000


def test_fleet_overview_needs_a_signed_in_user(deployment: Deployment) -> None:
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as page:
        opener.open(f"{deployment.stack.url}/matview-fleet/", timeout=30)
    assert page.value.code == 303
    assert page.value.headers["Location"].startswith("/auth/login?next=")
    with pytest.raises(urllib.error.HTTPError) as data:
        opener.open(f"{deployment.stack.url}/matview-fleet/api/views", timeout=30)
    assert data.value.code == 401


def test_fleet_plugin_is_registered_by_the_package(deployment: Deployment) -> None:
    plugins = {plugin["name"]: plugin for plugin in deployment.api.get("/plugins")["plugins"]}
    fleet = plugins["airflow_matview_fleet"]
    assert "airflow-matview" in fleet["source"], "loaded through the package's airflow.plugins entry point"
    assert [app["url_prefix"] for app in fleet["fastapi_apps"]] == ["/matview-fleet"]
    assert [(view["name"], view["href"]) for view in fleet["external_views"]] == [
        ("Materialized views", "/matview-fleet/")
    ]
    assert deployment.api.get("/plugins/importErrors")["total_entries"] == 0
