"""The fleet overview: one page in the Airflow UI, and its JSON, showing every view this provider refreshes.

A FastAPI app mounted by Airflow's api-server under :data:`URL_PREFIX`, plus a nav entry (an external view the UI
shows in a frame). The page and the JSON authenticate like Airflow's own API (the ``Authorization: Bearer`` header,
or the UI's ``_token`` cookie) and list only the views whose DAG the user may read; the page's script and style are
files of their own (``static/``), so that its Content-Security-Policy allows no inline script or style. Data comes
from Airflow's metadata database only (see :mod:`airflow_matview.fleet.overview`), read within
``[matview] fleet_query_timeout`` seconds. The app serves no OpenAPI schema or docs pages.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser  # noqa: TC002 (FastAPI reads the annotation)
from airflow.api_fastapi.common.db.common import SessionDep  # noqa: TC002 (FastAPI reads the annotation)
from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from airflow_matview.fleet.overview import as_json, load_fleet
from airflow_matview.text import format_seconds

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

URL_PREFIX = "/matview-fleet"
JSON_PATH = "/api/views"
STATIC = resources.files("airflow_matview.fleet").joinpath("static")
PAGE = STATIC.joinpath("fleet.html")
ASSETS = {"fleet.js": "text/javascript", "fleet.css": "text/css"}
GET_OR_HEAD = ["GET", "HEAD"]
DEFAULT_QUERY_TIMEOUT = 10.0
# PostgreSQL's query_canceled (statement_timeout) and lock_not_available (lock_timeout).
TIMED_OUT = frozenset({"57014", "55P03"})
# Everything from this origin's own files; no inline script or style, no plugin, no other site; strings are never
# turned into HTML (Trusted Types); the page may be framed by the Airflow UI only.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

app = FastAPI(
    title="airflow-matview fleet overview",
    description="Every materialized view refreshed by airflow-matview, from Airflow's own records.",
    openapi_url=None,
    docs_url=None,
    redoc_url=None,
)


def query_timeout() -> float:
    """``[matview] fleet_query_timeout``: seconds the fleet's queries may take on the metadata database."""
    from airflow.configuration import conf

    return conf.getfloat("matview", "fleet_query_timeout", fallback=DEFAULT_QUERY_TIMEOUT)


def bound_queries(session: Any, seconds: float) -> bool:
    """Stop each statement of the session's transaction after ``seconds`` where the database can (PostgreSQL's
    ``statement_timeout``, which also bounds a wait for a locked table); whether it could."""
    if session.get_bind().dialect.name != "postgresql" or seconds <= 0:
        return False
    session.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(seconds * 1000))})
    return True


def readable_views(user: BaseUser, session: Any) -> dict[str, Any]:
    """The fleet document, restricted to the DAGs ``user`` may read."""
    dag_ids = get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session)
    return as_json(load_fleet(session, dag_ids))


class HeadersAndHead:
    """ASGI middleware: every response gets :data:`SECURITY_HEADERS`, and a ``HEAD`` request the response to
    ``GET`` without its body (its headers, ``Content-Length`` included, stay).

    :param app: the app it wraps.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"

        async def send_answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_ENCODED_HEADERS]}
            elif message["type"] == "http.response.body" and head:
                message = {**message, "body": b""}
            await send(message)

        await self.app(scope, receive, send_answer)


_ENCODED_HEADERS = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
app.add_middleware(HeadersAndHead)


def _timed_out(error: DBAPIError) -> bool:
    original = error.orig
    return (getattr(original, "pgcode", None) or getattr(original, "sqlstate", None)) in TIMED_OUT


@app.api_route(JSON_PATH, methods=GET_OR_HEAD, summary="Every view's freshness, as JSON")
def views_json(user: Annotated[BaseUser, Depends(get_user)], session: SessionDep) -> Response:
    started = time.perf_counter()
    timeout = query_timeout()
    try:
        bound_queries(session, timeout)
        document = readable_views(user, session)
    except DBAPIError as error:
        if not _timed_out(error):
            raise
        session.rollback()
        raise HTTPException(
            503,
            detail=(
                f"Airflow's metadata database did not answer the fleet's queries within {format_seconds(timeout)} "
                "([matview] fleet_query_timeout), as a table they read is locked or the database is overloaded; "
                "the page asks again every minute"
            ),
            headers={"Cache-Control": "no-store", "Retry-After": "60"},
        ) from None
    queried = time.perf_counter()
    # Encoded here: FastAPI's generic encoder walks every value and takes longer than the queries.
    body = json.dumps(document, separators=(",", ":"), allow_nan=False)
    timing = f"query;dur={(queried - started) * 1000:.1f}, encode;dur={(time.perf_counter() - queried) * 1000:.1f}"
    headers = {"Server-Timing": timing, "Cache-Control": "no-store"}
    return Response(body, media_type="application/json", headers=headers)


@app.api_route("/", methods=GET_OR_HEAD, summary="The fleet overview page")
async def page(request: Request) -> Response:
    try:
        await get_user(request, None, None)
    except HTTPException:
        login = get_auth_manager().get_url_login(next_url=str(request.url))
        return RedirectResponse(login, status_code=303)
    html = PAGE.read_text(encoding="utf-8")
    return Response(html, media_type="text/html", headers={"Cache-Control": "no-store"})


@app.api_route("/static/{name}", methods=GET_OR_HEAD, summary="The page's script and style")
def static_file(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(404, detail="Not Found")
    content = STATIC.joinpath(name).read_text(encoding="utf-8")
    return Response(content, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


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
