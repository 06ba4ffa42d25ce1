"""``airflow-matview check`` says why the connecting role may refresh a view: it owns it, it is a member of the
owning role, it holds MAINTAIN (PostgreSQL 17+), or it is a superuser (not "owns the view")."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import yaml
from psycopg import sql

from airflow_matview.cli.main import main

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import psycopg

    from devtools.harness.databases import Database


@pytest.fixture
def roles(pg: psycopg.Connection) -> Iterator[dict[str, str]]:
    """An owner of ``public.owned`` and a member of that owner, both able to log in (dropped afterwards)."""
    suffix = uuid.uuid4().hex[:8]
    names = {"owner": f"mv_owner_{suffix}", "member": f"mv_member_{suffix}"}
    for name in names.values():
        pg.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    owner, member = (sql.Identifier(names[key]) for key in ("owner", "member"))
    pg.execute(sql.SQL("GRANT {} TO {}").format(owner, member))
    pg.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(owner))
    pg.execute("CREATE TABLE public.source AS SELECT 1 AS id")
    pg.execute(sql.SQL("ALTER TABLE public.source OWNER TO {}").format(owner))
    pg.execute("CREATE MATERIALIZED VIEW public.owned AS SELECT id FROM public.source")
    pg.execute(sql.SQL("ALTER MATERIALIZED VIEW public.owned OWNER TO {}").format(owner))
    try:
        yield names
    finally:
        for name in names.values():
            pg.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            pg.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _check(tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "matviews.yaml"
    path.write_text(yaml.safe_dump({"views": [{"name": "public.owned", "concurrently": False}]}))
    assert main(["check", str(path), "--dsn", dsn]) == 0
    return next(line.strip() for line in capsys.readouterr().out.splitlines() if "permission:" in line)


def test_a_superuser_is_said_to_be_a_superuser_not_the_owner(
    database: Database, roles: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    superuser = str(database.connect().info.user)
    assert _check(tmp_path, database.dsn, capsys) == (
        f"permission: role {superuser} is a superuser (the view's owner is {roles['owner']})"
    )


@pytest.mark.parametrize(
    ("who", "line"),
    [
        ("owner", "permission: role {owner} owns the view"),
        ("member", "permission: role {member} is a member of the view's owner, {owner}"),
    ],
)
def test_the_owner_and_a_member_of_the_owner_are_told_apart(
    database: Database,
    roles: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    who: str,
    line: str,
) -> None:
    dsn = f"{database.dsn} user={roles[who]}"
    assert _check(tmp_path, dsn, capsys) == line.format(**roles)
