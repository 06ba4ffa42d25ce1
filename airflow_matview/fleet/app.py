"""The fleet overview: one page in the Airflow UI, and its JSON, showing every view this provider refreshes.

A FastAPI app mounted by Airflow's api-server under :data:`URL_PREFIX`, plus a nav entry (an external view the UI
shows in a frame). Both routes authenticate like Airflow's own API (the ``Authorization: Bearer`` header, or the
UI's ``_token`` cookie) and list only the views whose DAG the user may read. Data comes from Airflow's metadata
database only (see :mod:`airflow_matview.fleet.overview`).
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser  # noqa: TC002 (FastAPI reads the annotation)
from airflow.api_fastapi.common.db.common import SessionDep  # noqa: TC002 (FastAPI reads the annotation)
from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from airflow_matview.fleet.overview import as_json, load_fleet

URL_PREFIX = "/matview-fleet"
JSON_PATH = "/api/views"
PAGE = resources.files("airflow_matview.fleet").joinpath("static", "fleet.html")

app = FastAPI(
    title="airflow-matview fleet overview",
    description="Every materialized view refreshed by airflow-matview, from Airflow's own records.",
)


def readable_views(user: BaseUser, session: Any) -> dict[str, Any]:
    """The fleet document, restricted to the DAGs ``user`` may read."""
    dag_ids = get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session)
    return as_json(load_fleet(session, dag_ids))


@app.get(JSON_PATH, summary="Every view's freshness, as JSON")
def views_json(user: Annotated[BaseUser, Depends(get_user)], session: SessionDep) -> Response:
    started = time.perf_counter()
    document = readable_views(user, session)
    queried = time.perf_counter()
    # Encoded here: FastAPI's generic encoder walks every value and takes longer than the queries.
    body = json.dumps(document, separators=(",", ":"))
    timing = f"query;dur={(queried - started) * 1000:.1f}, encode;dur={(time.perf_counter() - queried) * 1000:.1f}"
    return Response(body, media_type="application/json", headers={"Server-Timing": timing})


@app.get("/", response_class=HTMLResponse, summary="The fleet overview page")
async def page(request: Request) -> Response:
    try:
        await get_user(request, None, None)
    except HTTPException:
        login = get_auth_manager().get_url_login(next_url=str(request.url))
        return RedirectResponse(login, status_code=303)
    return HTMLResponse(PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})


class MatviewFleetPlugin(AirflowPlugin):
    """Adds *Materialized views* to the UI's navigation: the fleet overview at ``/matview-fleet/``."""

    name = "airflow_matview_fleet"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Materialized views fleet overview"}]
    external_views = [
        {
            "name": "Materialized views",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "matview-fleet",
        }
    ]
