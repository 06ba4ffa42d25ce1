"""The fleet overview served by a real Airflow (api-server, scheduler, dag-processor, triggerer, LocalExecutor).

- Hostile values reach the page through every way Airflow allows: a view named with HTML (a quoted PostgreSQL
  identifier), HTML tags, a connection id with HTML in a hand-written DAG's asset, a custom timetable whose summary
  is HTML, and an asset event whose ``extra`` holds HTML posted through the REST API by a user with the Op role.
  Debian's chromium opens the page as the admin: no script runs, the text shows literally, under the page's CSP.
- Foreign ``matview://`` assets (two parts, four parts) are skipped and counted on the page, never fatal.
- ``/docs`` and ``/openapi.json`` are not served; ``HEAD`` answers like ``GET`` without a body; the JSON is
  ``no-store``.
- A locked metadata table: the JSON answers 503 with one line within ``[matview] fleet_query_timeout``, and the page
  shows its loading state, abandons the previous request for the next, and shows the line.
- ``max_staleness`` (a lag): the page calls a view over budget exactly when the lag monitor has mailed (SMTP sink),
  on the same measurement: not for a view that reflects its sources however long ago it was refreshed, yes once a
  change waits past it behind a blocked run, a failing one, or no recorded refresh at all.
- ``target_lag``: the lag monitor's 24-hour chart of a view it measures, with its text alternative; a series written
  into its state store with HTML in it is skipped and counted, and no value of it becomes HTML.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import psycopg
import pytest

from devtools.harness.deployment import Deployment as BaseDeployment
from devtools.harness.deployment import deployed, matviews_dags
from devtools.harness.smtp_sink import SmtpSink

if TYPE_CHECKING:
    from collections.abc import Iterator

CHROMIUM = Path("/usr/bin/chromium")
SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
MAX_STALENESS = 20  # seconds
STALE_BOUND = 16  # seconds from a lag passing max_staleness to its mail, as in test_production_end_to_end
RUN_TIMEOUT = 240
QUERY_TIMEOUT = 3  # [matview] fleet_query_timeout in this stack
# Each payload would set window.pwned to its own number if a browser ran it.
VIEW_NAME = "<img src=x onerror=window.pwned=1>"
TAG = "<svg onload=window.pwned=2>"
QUOTES_TAG = 'x" onmouseover="window.pwned=8" \''
CONN_ID = "<img src=x onerror=window.pwned=3>"
SCHEDULE = "<img src=x onerror=window.pwned=4>"
EXTRA = {
    "rows": "<img src=x onerror=window.pwned=5>",
    "mode": "<img src=x onerror=window.pwned=6>",
    "seconds": "<img src=x onerror=window.pwned=7>",
}
METRICS_URL = "https://grafana.example/d/m?var-view={view}&var-conn={conn_id}"
HOSTILE_VIEW = f'public."{VIEW_NAME}"'
HOSTILE_DAG = "matview.public._img_src_x_onerror_window.pwned_1_"
MALLORY = "mallory"  # the Op user
LAGGED_DAG = "matview.public.lagged"
MONITOR_DAG = "matview.freshness.postgres_default"
LAG_REASON = "<img src=x onerror=window.pwned=10>"

pytestmark = pytest.mark.timeout(900)

TIMETABLE_PLUGIN = f'''
from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.simple import NullTimetable


class HostileTimetable(NullTimetable):
    """Manual runs only, with an HTML summary (any text a custom timetable may choose)."""

    @property
    def summary(self) -> str:
        return {SCHEDULE!r}


class HostileTimetablePlugin(AirflowPlugin):
    name = "hostile_timetable"
    timetables = [HostileTimetable]
'''

DAG_FILES = {
    "hostile.py": f"""
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from hostile_timetable import HostileTimetable

from airflow_matview.assets import matview_asset
from airflow_matview.database.identifiers import QualifiedName

with DAG("hostile_connection", schedule=HostileTimetable(), tags=[{TAG!r}, {QUOTES_TAG!r}]):
    EmptyOperator(task_id="refresh", outlets=[matview_asset({CONN_ID!r}, QualifiedName("public", "plain_view"))])
""",
    "foreign.py": """
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Asset

# Another team's assets in the matview:// scheme, that are not <conn_id>/<schema>/<name>.
with DAG("team_b_exports", schedule=None):
    EmptyOperator(task_id="export", outlets=[Asset("matview://team-b/exports")])
with DAG("team_b_four_parts", schedule=[Asset("matview://team-b/exports")]):
    EmptyOperator(task_id="export", outlets=[Asset("matview://team-b/a/b/c")])
""",
}


def _notifier(to: str) -> dict[str, Any]:
    return {"on_stale": [{"notifier": SMTP, "to": to, "smtp_conn_id": "smtp_sink"}]}


def _config() -> dict[str, Any]:
    budget: dict[str, Any] = {"max_staleness": f"{MAX_STALENESS}s", "lock_timeout": "5m", "poll_interval": "1s"}
    return {
        "defaults": {"schedule": None, "retries": 0, "concurrently": False},
        "views": [
            {"name": "public.alerted", **budget, **_notifier("alerted@example.com")},
            {"name": "public.broken", **budget, **_notifier("broken@example.com")},
            {"name": "public.idle", **budget, **_notifier("idle@example.com")},
            {"name": HOSTILE_VIEW, "tags": [TAG, QUOTES_TAG]},
            {"name": "public.follower", "after": [HOSTILE_VIEW]},
            # Measured by the lag monitor; its DAG stays paused, so nothing refreshes it and its lag grows.
            {"name": "public.lagged", "target_lag": "1m", "poll_interval": "2s"},
        ],
    }


SCENARIO = [
    "CREATE TABLE src (id int PRIMARY KEY)",
    "INSERT INTO src VALUES (1), (2)",
    "CREATE TABLE divisor (d int)",
    "INSERT INTO divisor VALUES (1)",
    "CREATE MATERIALIZED VIEW alerted AS SELECT * FROM src",
    "CREATE MATERIALIZED VIEW broken AS SELECT id / (SELECT d FROM divisor) AS x FROM src",
    "UPDATE divisor SET d = 0",  # every refresh of broken fails
    "CREATE MATERIALIZED VIEW idle AS SELECT * FROM src",
    "CREATE TABLE lagsrc (id int)",
    "CREATE MATERIALIZED VIEW lagged AS SELECT * FROM lagsrc",
]
DAG_IDS = [f"matview.public.{view}" for view in ("alerted", "broken", "idle", "follower", "lagged")]
DAG_IDS += [MONITOR_DAG]
DAG_IDS += [HOSTILE_DAG, "hostile_connection", "team_b_exports", "team_b_four_parts"]


class Deployment(BaseDeployment):
    """The stack with an SMTP sink, and the Op user's password."""

    sink: SmtpSink
    op_password: str

    def metadata(self) -> psycopg.Connection:
        """An autocommit connection to Airflow's metadata database."""
        return psycopg.connect(self.stack.cluster.dsn("airflow"), autocommit=True)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dags = matviews_dags(tmp_path_factory.mktemp("dags"), _config())
    for name, source in DAG_FILES.items():
        (dags / name).write_text(source)
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "hostile_timetable.py").write_text(TIMETABLE_PLUGIN)
    env = {
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{MALLORY}:op",
        "AIRFLOW__MATVIEW__FLEET_QUERY_TIMEOUT": str(QUERY_TIMEOUT),
        "AIRFLOW__MATVIEW__METRICS_URL": METRICS_URL,
        "AIRFLOW__MATVIEW__LINEAGE_URL": "javascript:window.pwned=9//{view}",  # not http(s): no link
    }
    with SmtpSink() as sink, deployed(dags, SCENARIO, DAG_IDS, connections={"smtp_sink": sink.uri}, env=env) as up:
        assert up.api.get("/importErrors")["total_entries"] == 0, up.api.get("/importErrors")
        deployment = Deployment(up.stack, up.api, up.dsn, up.started_in)
        deployment.sink = sink
        deployment.op_password = json.loads((up.stack.home / "passwords.json").read_text())[MALLORY]
        yield deployment


def _to(address: str) -> Any:
    return lambda mail: address in mail.to


def _timestamp(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _trigger(deployment: Deployment, view: str) -> tuple[str, str]:
    dag_id = f"matview.public.{view}"
    deployment.api.patch(f"/dags/{dag_id}", {"is_paused": False})
    return dag_id, deployment.trigger(dag_id)


@pytest.fixture
def browser(deployment: Deployment) -> Iterator[Any]:
    """A headless Debian Chromium context holding the admin's UI cookie, recording CSP violations and dialogs."""
    if not CHROMIUM.exists():  # as in test_end_to_end
        pytest.skip("Debian's chromium is not installed (make test installs it with apt-get when run as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (it is in the dev extra)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = chromium.new_context(viewport={"width": 1600, "height": 900})
            context.add_cookies([{"name": "_token", "value": deployment.api.token, "url": deployment.stack.url}])
            context.add_init_script(
                "window.violations = [];"
                "document.addEventListener('securitypolicyviolation',"
                " (e) => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));"
            )
            yield context
        finally:
            chromium.close()


def test_the_page_is_over_budget_exactly_when_the_lag_alert_fires(deployment: Deployment, browser: Any) -> None:
    """The same measurement seen by the lag monitor's alerts (mails) and by the page (JSON): a view that reflects its
    sources is within max_staleness however long ago it was refreshed; a change behind a blocked run, a view whose
    refreshes fail and one never refreshed are over it, from their mail on."""

    def stale_mails(to: str, since: float = 0.0) -> Any:
        return lambda mail: to in mail.to and mail.received_at > since and "is stale" in mail.subject

    alerted, first = _trigger(deployment, "alerted")
    run = deployment.api.wait_for_run(alerted, first, timeout=RUN_TIMEOUT)
    assert run["state"] == "success"
    time.sleep(max(0.0, _timestamp(run["end_date"]) + MAX_STALENESS + 5 - time.time()))
    view = deployment.fleet_view(alerted)
    assert (view["lag_state"], view["lag"], view["breached"], view["status"]) == ("within", 0.0, False, "fresh")
    assert view["staleness"] > MAX_STALENESS, "refreshed longer ago than max_staleness, and it reflects its sources"
    # Never refreshed since its lag is measured: what it reflects is not known, so it is over, and mailed once.
    (idle_mail,) = deployment.sink.wait_for(stale_mails("idle@example.com"), timeout=MAX_STALENESS + STALE_BOUND + 30)
    assert "no refresh of it has been recorded" in idle_mail.body, idle_mail.body
    idle = deployment.fleet_view("matview.public.idle")
    # Its DAG is paused (the page's first status), and it is over max_staleness all the same: no run is needed.
    assert (idle["breached"], idle["status"], idle["max_staleness"]) == (True, "paused", MAX_STALENESS), idle

    blocker = deployment.connect()
    try:
        with deployment.connect() as writer:
            writer.execute("INSERT INTO src VALUES (3)")
        committed = time.time()
        blocker.execute("BEGIN")
        blocker.execute("SELECT count(*) FROM alerted")  # holds ACCESS SHARE: the refresh waits for its lock
        _, second = _trigger(deployment, "alerted")
        broken, failed = _trigger(deployment, "broken")
        assert deployment.api.wait_for_run(broken, failed, timeout=RUN_TIMEOUT)["state"] == "failed"
        if time.time() < committed + MAX_STALENESS - 3:
            before = deployment.fleet_view(alerted)
            assert (before["breached"], before["status"], before["lag_state"]) == (False, "fresh", "within"), before

        (mail,) = deployment.sink.wait_for(
            stale_mails("alerted@example.com", committed), timeout=MAX_STALENESS + STALE_BOUND + 30
        )
        assert f"a run of {alerted} is running and has not committed" in mail.body, mail.body
        after = deployment.fleet_view(alerted)
        assert (after["breached"], after["status"], after["lag_state"]) == (True, "stale", "over"), after
        assert after["lag"] > MAX_STALENESS and mail.received_at >= committed + MAX_STALENESS
        tab = browser.new_page()
        tab.goto(f"{deployment.stack.url}/matview-fleet/")
        tab.locator("body[data-loaded=true]").wait_for(timeout=30_000)
        row = tab.locator('tr[data-view="public.alerted"]')
        assert row.locator("td[data-col=staleness].breach").count() == 1, "in red"
        assert "⚠" in row.locator("td[data-col=max_staleness]").inner_text()
        assert "run waiting" in row.locator("td[data-col=max_staleness]").inner_text()
        tab.close()
        deployment.sink.wait_for(stale_mails("broken@example.com"), timeout=MAX_STALENESS + STALE_BOUND + 30)
        failing = deployment.fleet_view(broken)
        assert (failing["breached"], failing["status"]) == (True, "failing"), failing
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert deployment.api.wait_for_run(alerted, second, timeout=RUN_TIMEOUT)["state"] == "success"
    deployment.sink.wait_for(
        lambda mail: "alerted@example.com" in mail.to and "is back within its max_staleness" in mail.subject,
        timeout=30,
    )
    done = deployment.fleet_view(alerted)
    assert (done["breached"], done["status"], done["pending_for"], done["lag"]) == (False, "fresh", None, 0.0), done
    assert len(deployment.sink.matching(stale_mails("alerted@example.com", committed))) == 1, "once per episode"
    assert len(deployment.sink.matching(stale_mails("idle@example.com"))) == 1, "once per episode"


def test_docs_and_schema_are_not_served_and_head_answers_like_get(deployment: Deployment) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        status, _, _ = deployment.http("GET", f"/matview-fleet{path}")
        assert status == 404, path
    for path, kind in (("/", "text/html"), ("/api/views", "application/json"), ("/static/fleet.js", "javascript")):
        get_status, get_headers, get_body = deployment.http("GET", f"/matview-fleet{path}")
        head_status, head_headers, head_body = deployment.http("HEAD", f"/matview-fleet{path}")
        assert (get_status, head_status, head_body) == (200, 200, b""), path
        assert kind in head_headers["Content-Type"] and len(get_body) > 0
        assert head_headers["Content-Security-Policy"] == get_headers["Content-Security-Policy"]
    _, headers, _ = deployment.http("GET", "/matview-fleet/api/views")
    assert headers["Cache-Control"] == "no-store", "per-user data"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_foreign_matview_assets_are_skipped_and_counted(deployment: Deployment) -> None:
    document = deployment.fleet()
    assert document["skipped"]["asset URI"] == 2, document["skipped"]  # the two outlets
    assert document["skipped_records"] == sum(document["skipped"].values())
    assert not {"team_b_exports", "team_b_four_parts"} & {view["dag_id"] for view in document["views"]}


def _post_hostile_event(deployment: Deployment) -> None:
    """What a user with the Op role may do through Airflow's REST API: post an asset event on a view's asset."""
    mallory = deployment.api._request("POST", "/auth/token", {"username": MALLORY, "password": deployment.op_password})[
        "access_token"
    ]
    assets = deployment.api.get("/assets?uri_pattern=matview&limit=100")["assets"]
    for asset in assets:
        if asset["uri"].endswith("%3E") or "%3Cimg" in asset["uri"]:
            request = urllib.request.Request(
                f"{deployment.stack.url}/api/v2/assets/events",
                data=json.dumps({"asset_id": asset["id"], "extra": EXTRA}).encode(),
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {mallory}"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                assert response.status == 200


def test_hostile_values_show_as_text_and_run_no_script(deployment: Deployment, browser: Any) -> None:
    _post_hostile_event(deployment)
    dialogs: list[str] = []
    tab = browser.new_page()
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    response = tab.goto(f"{deployment.stack.url}/matview-fleet/")
    tab.locator("body[data-loaded=true]").wait_for(timeout=30_000)
    assert errors == [], "the page's script failed"
    row = tab.locator("#rows tr").filter(has=tab.get_by_text(HOSTILE_VIEW, exact=True))
    row.locator("span.tag").filter(has_text="onmouseover").hover()
    assert tab.evaluate("window.pwned") is None and dialogs == [], "a value from the database ran as script"

    assert row.locator("td.view b").inner_text() == HOSTILE_VIEW
    assert sorted(row.locator("span.tag").all_inner_texts()) == sorted([TAG, QUOTES_TAG])
    assert row.locator("td").nth(6).inner_text() == "-", "the posted mode was dropped"
    assert row.locator("td").nth(7).inner_text() == "-", "the posted rows were dropped"
    other = tab.locator("#rows tr").filter(has=tab.get_by_text(CONN_ID, exact=True))
    assert other.locator("td").nth(1).inner_text() == CONN_ID
    assert other.locator("td").nth(3).inner_text() == SCHEDULE
    follower = tab.locator('tr[data-view="public.follower"]')
    assert follower.locator("td").nth(3).inner_text() == f"after {HOSTILE_VIEW}"
    assert tab.locator("#rows img, #rows svg[onload], #rows script").count() == 0, "no element made from data"
    assert "skipped" in tab.locator("#skipped").inner_text() and tab.locator("#skipped").is_visible()

    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "object-src 'none'" in csp and "base-uri 'none'" in csp
    assert "frame-ancestors 'self'" in csp and "unsafe-inline" not in csp
    tab.locator("button[data-sort=rows]").click()  # the page works under its CSP: sorting, filtering
    tab.locator("#tag").select_option(TAG)
    assert tab.locator("#rows tr").count() == 2
    assert tab.evaluate("window.violations") == [], "the page needs nothing its CSP forbids"

    # Inside the Airflow UI's frame too (frame-ancestors 'self').
    tab.goto(f"{deployment.stack.url}/plugin/matview-fleet")
    frame = tab.frame_locator("iframe").first
    frame.locator("body[data-loaded=true]").wait_for(timeout=30_000)
    assert frame.get_by_text(HOSTILE_VIEW, exact=True).count() == 1
    assert tab.evaluate("window.pwned") is None and dialogs == []

    document = deployment.fleet()
    views = {view["dag_id"]: view for view in document["views"]}
    hostile, connection = views[HOSTILE_DAG], views["hostile_connection"]
    assert (hostile["rows"], hostile["mode"], hostile["refresh_seconds"]) == (None, None, None), "dropped"
    assert {"rows", "mode", "seconds"} <= set(document["skipped"])
    assert connection["schedule"] == SCHEDULE and connection["conn_id"] == CONN_ID, "text, kept as it is"

    # The links to the view's metrics ([matview] metrics_url): the name percent-encoded; the javascript: template of
    # lineage_url makes no link.
    metrics = METRICS_URL.format(view=quote(hostile["view"], safe=""), conn_id=quote(hostile["conn_id"], safe=""))
    assert hostile["links"] == {"metrics": metrics}
    tab.goto(f"{deployment.stack.url}/matview-fleet/")
    tab.locator("body[data-loaded=true]").wait_for(timeout=30_000)
    row = tab.locator("#rows tr").filter(has=tab.get_by_text(HOSTILE_VIEW, exact=True))
    link = row.locator("a[data-link=metrics]")
    assert (link.get_attribute("href"), link.get_attribute("target"), link.inner_text()) == (
        metrics,
        "_blank",
        "metrics",
    )
    assert tab.locator("a[data-link=lineage]").count() == 0
    assert tab.evaluate("window.pwned") is None and tab.evaluate("window.violations") == []


def test_a_locked_metadata_table_gives_503_and_the_page_says_so(deployment: Deployment, browser: Any) -> None:
    tab = browser.new_page()
    aborted: list[str] = []
    tab.on("requestfailed", lambda request: "api/views" in request.url and aborted.append(request.failure or ""))
    tab.goto(f"{deployment.stack.url}/matview-fleet/")
    tab.locator("body[data-loaded=true]").wait_for(timeout=30_000)
    shown = tab.locator("#rows tr").count()

    with deployment.metadata() as locker:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE dag_tag IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        status, headers, body = deployment.http("GET", "/matview-fleet/api/views", timeout=QUERY_TIMEOUT + 20)
        took = time.monotonic() - started
        assert status == 503, body
        detail = json.loads(body)["detail"]
        assert "fleet_query_timeout" in detail and "\n" not in detail
        assert took < QUERY_TIMEOUT + 5 and headers["Cache-Control"] == "no-store"

        tab.locator("#reload").click()
        tab.locator("#loading").wait_for(state="visible", timeout=5_000)
        tab.locator("#reload").click()  # the first request is abandoned, not stacked
        error = tab.locator("#error")
        error.filter(has_text="HTTP 503").wait_for(timeout=(QUERY_TIMEOUT + 20) * 1000)
        assert error.inner_text() == f"Could not load the views (HTTP 503): {detail}"
        assert aborted and set(aborted) == {"net::ERR_ABORTED"}, aborted
        assert tab.locator("#loading").is_hidden()
        assert tab.locator("#rows tr").count() == shown, "the last good document stays"
        locker.execute("ROLLBACK")

    tab.locator("#reload").click()
    tab.locator("#error:empty").wait_for(state="attached", timeout=30_000)
    assert tab.locator("#rows tr").count() == shown


def _store_hostile_lag_state(deployment: Deployment) -> None:
    """A measurement of the hostile view in the lag monitor's state store, with HTML in its series and its reason,
    as anyone who may write the store (its REST API, the metadata database) may leave it."""
    from airflow_matview.lag_history import BUCKET_SECONDS, bucket_of

    now = time.time()
    bucket = bucket_of(now)
    record = {"measured_at": now, "refreshed_at": now - 30, "unwatchable": LAG_REASON}
    state = {"view": HOSTILE_VIEW, "target": 60.0, "stale_after": 3600.0, "after": [], "record": record}
    history = [
        ["<img src=x onerror=window.pwned=11>", 1, 0],
        [bucket - 2 * BUCKET_SECONDS, "<svg onload=window.pwned=12>", 1],
        [bucket - BUCKET_SECONDS, 42.0, 0],
        [bucket, 75.0, 1],
    ]
    with deployment.metadata() as db:
        (asset_id,) = db.execute(
            "SELECT id FROM asset WHERE uri LIKE 'matview-freshness://postgres_default%'"
        ).fetchone()
        db.execute(
            "INSERT INTO asset_state_store (asset_id, key, value, updated_at) VALUES (%s, %s, %s, now())",
            (asset_id, f"lag:{HOSTILE_VIEW}", json.dumps({**state, "history": history})),
        )


def test_the_lag_chart_shows_the_monitors_24_hours_and_no_stored_value_as_html(
    deployment: Deployment, browser: Any
) -> None:
    deadline = time.monotonic() + 120
    while not (deployment.fleet_view(LAGGED_DAG)["lag_history"] or [[0, None]])[-1][1]:
        assert time.monotonic() < deadline, deployment.fleet_view(LAGGED_DAG)
        time.sleep(2)
    lagged = deployment.fleet_view(LAGGED_DAG)
    latest = lagged["lag_history"][-1]
    assert latest[1] >= lagged["lag"] and latest[2] == (lagged["lag_state"] != "within"), "the lag column's value"
    _store_hostile_lag_state(deployment)

    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(f"{deployment.stack.url}/matview-fleet/")
    tab.locator("body[data-loaded=true]").wait_for(timeout=30_000)
    assert errors == [], "the page's script failed"
    chart = tab.locator('tr[data-view="public.lagged"] td[data-col=lag] svg.lagchart')
    label = chart.get_attribute("aria-label") or ""
    assert label.startswith("Lag over the last 24 h: max ") and "; target 1m; over target in " in label, label
    assert (chart.get_attribute("role"), chart.locator("title").text_content()) == ("img", label)
    assert chart.locator("path.target").count() == 1 and chart.locator("path.within, path.over").count() >= 1
    assert tab.locator('tr[data-view="public.follower"] svg.lagchart').count() == 0, "not measured: no chart"

    hostile = tab.locator("#rows tr").filter(has=tab.get_by_text(HOSTILE_VIEW, exact=True))
    hostile_chart = hostile.locator("svg.lagchart")
    assert "max 1m15s" in (hostile_chart.get_attribute("aria-label") or ""), "the two points that are points"
    assert LAG_REASON in (hostile.locator("td[data-col=lag]").get_attribute("title") or ""), "as text"
    hostile_chart.hover()
    assert tab.locator("#rows img, #rows svg[onload], #rows script").count() == 0, "no element made from data"
    assert tab.evaluate("window.pwned") is None and tab.evaluate("window.violations") == []
    assert "lag history \u00d72" in tab.locator("#skipped").inner_text()
