"""The fleet overview's page, its files and headers, and the reading of its records, without a server.

The browser tests (``tests/system/fleet``) show the page under its Content-Security-Policy with hostile data; these
check the files and the rules that make that hold, each in a few milliseconds.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING

import pytest

from airflow_matview.assets import matview_asset_uri, parse_matview_uri
from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.fleet.app import CONTENT_SECURITY_POLICY, STATIC, app
from airflow_matview.fleet.overview import timezone_of

if TYPE_CHECKING:
    from fastapi.testclient import TestClient


class _Page(HTMLParser):
    """Every tag of the page, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_has_no_inline_script_style_or_handler() -> None:
    page = _Page()
    page.feed(STATIC.joinpath("fleet.html").read_text(encoding="utf-8"))
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"src": "static/fleet.js", "defer": None}]
    assert not [tag for tag, _ in page.tags if tag == "style"]
    inline = [(tag, name) for tag, attrs in page.tags for name in attrs if name == "style" or name.startswith("on")]
    assert inline == []


def test_the_script_builds_no_html_from_strings() -> None:
    script = STATIC.joinpath("fleet.js").read_text(encoding="utf-8")
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in code, sink
    assert 'setAttribute("on' not in code and not re.search(r"\.on\w+\s*=", code)


@pytest.fixture(scope="module")
def client() -> TestClient:
    from fastapi.testclient import TestClient

    return TestClient(app)


def test_no_schema_or_docs_are_served(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404, path


def test_static_files_are_served_with_the_policy_and_answer_head(client: TestClient) -> None:
    for name, kind in (("fleet.js", "text/javascript"), ("fleet.css", "text/css")):
        got = client.get(f"/static/{name}")
        head = client.head(f"/static/{name}")
        assert (got.status_code, head.status_code, head.content) == (200, 200, b"")
        assert got.headers["content-type"].startswith(kind) and head.headers["content-type"].startswith(kind)
        assert head.headers["content-length"] == str(len(got.content)), "the length of the body GET gives"
        assert (
            got.headers["content-security-policy"] == CONTENT_SECURITY_POLICY == head.headers["content-security-policy"]
        )
        assert got.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/fleet.html").status_code == 404, "only the page's two files"
    assert client.get("/static/..%2Fapp.py").status_code == 404


def test_the_policy_allows_only_this_origins_files() -> None:
    directives = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    assert (directives["script-src"], directives["style-src"], directives["connect-src"]) == ("'self'",) * 3
    assert (directives["object-src"], directives["base-uri"], directives["frame-ancestors"]) == (
        "'none'",
        "'none'",
        "'self'",
    )
    assert directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(
    "uri",
    [
        "matview://team-b/exports",  # two parts
        "matview://team-b/a/b/c",  # four parts
        "matview://conn//view",  # an empty part
        "matview:///public/view",
        "matview://conn/public/%zz",  # not percent-encoding
        "matview://conn/public/%ff",  # not UTF-8
        "matview://conn/public/caf%c3%a9",  # lower-case hex, which matview_asset_uri never writes
        "matview://conn/public/a b",  # a space matview_asset_uri would have encoded
        "matview-sources://conn/public/view",
        "s3://conn/public/view",
    ],
)
def test_uris_that_are_not_ours_do_not_parse(uri: str) -> None:
    assert parse_matview_uri(uri) is None


@pytest.mark.parametrize("name", ["orders", "Q1 Totals", "<img src=x onerror=alert(1)>", "a/b%c", "café"])
def test_every_uri_we_write_parses_back(name: str) -> None:
    view = QualifiedName("sales", name)
    assert parse_matview_uri(matview_asset_uri("warehouse", view)) == ("warehouse", view)


@pytest.mark.parametrize(
    "timetable",
    [None, "cron", ["list"], 5, {"__var": "x"}, {"__var": {"timetable": "x"}}, {"__var": {"timetable": None}}],
)
def test_a_timetable_of_any_shape_gives_no_timezone(timetable: object) -> None:
    assert timezone_of(timetable) is None
