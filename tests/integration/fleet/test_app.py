"""The fleet overview plugin against a real Airflow metadata database and Airflow's own auth code.

The plugin's FastAPI app is mounted as the api-server mounts it and called through HTTP (Starlette's test client);
the fleet is written by Airflow's DAG-processor code (``devtools/harness/fleet_seed.py``). Per-DAG permissions are
tested with an auth manager derived from the simple auth manager (which itself has no per-DAG rules): the user
``sales`` may read only the DAGs of views in the schema ``sales``. The browser test is in
``tests/system/test_end_to_end.py``.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from fastapi.testclient import TestClient


NOW = datetime.now(timezone.utc).replace(microsecond=0)


OUTCOMES = {
    "matview.sales.orders": ["success", "success", "success"],
    "matview.sales.refunds": ["success", "failed"],
    "matview.ops.tickets": ["success", "skipped", "skipped"],
}


def _auth_manager_class() -> type[SimpleAuthManager]:
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    class SalesOnlyAuthManager(SimpleAuthManager):
        """The simple auth manager, except that user ``sales`` may read only ``matview.sales.*`` DAGs."""

        def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
            if user.username == "sales" and not (details and details.id and details.id.startswith("matview.sales.")):
                return False
            return bool(
                super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
            )

    return SalesOnlyAuthManager


@pytest.fixture(scope="module")
def fleet(airflow_db: Path) -> Iterator[tuple[TestClient, SimpleAuthManager]]:
    from airflow.api_fastapi import app as api_app
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from airflow_matview.fleet.app import URL_PREFIX, app
    from devtools.harness.fleet_seed import seed_fleet

    config = {
        "views": [
            {
                "name": "sales.orders",
                "conn_id": "warehouse",
                "schedule": "*/5 * * * *",
                "tags": ["sales"],
                "max_staleness": "1h",
                "on_stale": [
                    {"notifier": "airflow.providers.smtp.notifications.smtp.SmtpNotifier", "to": "oncall@example.com"}
                ],
                "timezone": "Europe/Paris",
            },
            {"name": "sales.refunds", "conn_id": "warehouse", "after": ["sales.orders"], "schedule": None},
            {
                "name": "ops.tickets",
                "conn_id": "ops_db",
                "schedule": "@hourly",
                "skip_if_unchanged": True,
                "max_staleness": "5m",
                "on_stale": [
                    {"notifier": "airflow.providers.smtp.notifications.smtp.SmtpNotifier", "to": "oncall@example.com"}
                ],
            },
        ]
    }
    seed_fleet(config, bundle="fleet-test", now=NOW, outcomes=OUTCOMES)
    users = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS")
    os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin,sales:viewer"
    manager = _auth_manager_class()()
    manager.init()
    # Where Airflow's API app keeps its auth manager: a state object since 3.2, a module global in 3.1.
    holder, attribute = (
        (api_app._AuthManagerState, "instance") if hasattr(api_app, "_AuthManagerState") else (api_app, "auth_manager")
    )
    previous = getattr(holder, attribute)
    setattr(holder, attribute, manager)
    root = FastAPI()
    root.mount(URL_PREFIX, app)
    try:
        with TestClient(root) as client:
            yield client, manager
    finally:
        setattr(holder, attribute, previous)
        if users is None:
            os.environ.pop("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", None)
        else:
            os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = users


def _token(manager: SimpleAuthManager, username: str, role: str) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role))


def _ours(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {view["dag_id"]: view for view in document["views"] if view["dag_id"] in OUTCOMES}


def test_json_lists_each_view_with_its_state_from_airflow_records(fleet: tuple[TestClient, Any]) -> None:
    client, manager = fleet
    response = client.get(
        "/matview-fleet/api/views", headers={"Authorization": f"Bearer {_token(manager, 'admin', 'admin')}"}
    )
    assert response.status_code == 200, response.text
    views = _ours(response.json())
    assert sorted(views) == sorted(OUTCOMES)

    orders, refunds, tickets = (views[f"matview.{name}"] for name in ("sales.orders", "sales.refunds", "ops.tickets"))
    assert (orders["view"], orders["conn_id"], orders["last_state"], orders["status"]) == (
        "sales.orders",
        "warehouse",
        "success",
        "fresh",
    )
    assert (orders["schedule"], orders["timezone"], orders["after"]) == ("*/5 * * * *", "Europe/Paris", [])
    assert orders["tags"] == ["matview", "sales"]
    assert orders["mode"] == "concurrently" and orders["rows"] is not None
    assert orders["recent_states"] == ["success"] * 3 and len(orders["recent_seconds"]) == 3
    assert (refunds["last_state"], refunds["status"], refunds["failed_runs"]) == ("failed", "failing", 1)
    assert (refunds["schedule"], refunds["after"]) == ("", ["sales.orders"])
    assert refunds["last_success"] is not None, "the success before the failure"
    assert (refunds["max_staleness"], refunds["breached"]) == (None, False)
    assert refunds["pending_for"] > 0 and orders["pending_for"] is None, "refunds' last run has not succeeded"
    assert (tickets["last_state"], tickets["skipped_runs"]) == ("skipped", 2)
    assert tickets["staleness"] < tickets["last_success_age"], "a run skipped as unchanged confirms freshness"
    # max_staleness is a lag, which only the lag monitor measures (tests/integration/fleet/test_fleet_records.py
    # stores its measurement): with nothing stored, no budget is shown and nothing is called stale.
    assert (orders["max_staleness"], tickets["max_staleness"], tickets["breached"]) == (None, None, False)
    assert (tickets["status"], orders["lag_state"]) == ("fresh", None)
    counts = response.json()["counts"]
    assert sum(counts.values()) == response.json()["total"]


def test_signed_out_users_get_401_for_json_and_the_login_page_for_html(fleet: tuple[TestClient, Any]) -> None:
    client, manager = fleet
    assert client.get("/matview-fleet/api/views").status_code == 401
    page = client.get("/matview-fleet/", follow_redirects=False)
    assert page.status_code == 303
    # The auth manager's login page, asked to come back here (Airflow 3.3's simple auth manager keeps next=).
    assert page.headers["location"] == manager.get_url_login(next_url="http://testserver/matview-fleet/")
    assert page.headers["location"].startswith("/auth/login")
    forged = client.get("/matview-fleet/api/views", headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code in (401, 403)


def test_the_ui_cookie_opens_the_page(fleet: tuple[TestClient, Any]) -> None:
    client, manager = fleet
    client.cookies.set("_token", _token(manager, "admin", "admin"))
    try:
        page = client.get("/matview-fleet/", follow_redirects=False)
        assert page.status_code == 200
        assert "<title>Materialized views" in page.text
        assert client.get("/matview-fleet/api/views").status_code == 200
    finally:
        client.cookies.clear()


def test_a_user_sees_only_the_views_of_dags_they_may_read(fleet: tuple[TestClient, Any]) -> None:
    client, manager = fleet
    response = client.get(
        "/matview-fleet/api/views", headers={"Authorization": f"Bearer {_token(manager, 'sales', 'viewer')}"}
    )
    assert response.status_code == 200
    assert sorted(view["dag_id"] for view in response.json()["views"]) == [
        "matview.sales.orders",
        "matview.sales.refunds",
    ]
    assert response.json()["total"] == 2


def test_each_view_links_to_its_metrics_and_lineage_where_configured(
    fleet: tuple[TestClient, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, manager = fleet
    monkeypatch.setenv("AIRFLOW__MATVIEW__METRICS_URL", "https://grafana.example/d/m?var-view={view_metric}")
    monkeypatch.setenv("AIRFLOW__MATVIEW__LINEAGE_URL", "javascript:alert({view})")  # refused: no such link
    response = client.get(
        "/matview-fleet/api/views", headers={"Authorization": f"Bearer {_token(manager, 'admin', 'admin')}"}
    )
    orders = _ours(response.json())["matview.sales.orders"]
    assert orders["links"] == {"metrics": "https://grafana.example/d/m?var-view=sales__orders"}
