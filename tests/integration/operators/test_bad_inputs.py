"""Every bad input a user can give the operator or the config, and the message they see (real server, real
Airflow connections)."""

from __future__ import annotations

import socket
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.config import InvalidConfigFileError, load_config
from airflow_matview.exceptions import MatviewQueryError, MatviewRefreshError, MatviewSetupError
from devtools.harness.scenario import add_new_users, create_reference_scenario

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from devtools.harness.databases import Database


def refresh(view: str = "polls_user_matt_view", **kwargs: Any) -> dict[str, Any]:
    return RefreshMaterializedViewOperator(task_id="refresh", view=view, **kwargs).execute({})  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def setup(pg: psycopg.Connection, postgres_default: Database, monkeypatch: pytest.MonkeyPatch) -> psycopg.Connection:
    create_reference_scenario(pg)
    add_new_users(pg)
    pg.execute("CREATE VIEW plain_view AS SELECT * FROM polls_user")
    pg.execute("CREATE SEQUENCE a_sequence")
    pg.execute("CREATE MATERIALIZED VIEW no_index AS SELECT * FROM polls_user")
    pg.execute("CREATE MATERIALIZED VIEW unpopulated AS SELECT * FROM polls_user WITH NO DATA")
    pg.execute("CREATE UNIQUE INDEX ON unpopulated (id)")
    pg.execute("CREATE TABLE ratios (id int PRIMARY KEY, d int)")
    pg.execute("INSERT INTO ratios VALUES (1, 1)")
    pg.execute("CREATE MATERIALIZED VIEW inverse AS SELECT id, 1 / d AS q FROM ratios")
    pg.execute("INSERT INTO ratios VALUES (2, 0)")
    monkeypatch.setenv("AIRFLOW_CONN_NOWHERE", f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres")
    monkeypatch.setenv("AIRFLOW_CONN_UNREADABLE", "postgresql://app:Sup3r/Secret@127.0.0.1:5432/postgres")
    monkeypatch.setenv(
        "AIRFLOW_CONN_BAD_EXTRAS", '{"conn_type": "postgres", "host": "127.0.0.1", "extra": "sslmode=x"}'
    )
    return pg


@pytest.fixture
def stranger(pg: psycopg.Connection, database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A login role that does not own the view, as connection ``stranger``."""
    role = f"stranger_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE ROLE {role} LOGIN")
    monkeypatch.setenv("AIRFLOW_CONN_STRANGER", database.uri.replace("postgres@", f"{role}@", 1))
    yield role
    pg.execute(f"DROP OWNED BY {role}")
    pg.execute(f"DROP ROLE {role}")


def config_error(config: dict[str, Any]) -> Callable[[], Any]:
    return lambda: load_config(config)


CASES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("digit first", lambda: refresh("1bad"), MatviewSetupError, "'1bad' is not a valid view name"),
    ("injection", lambda: refresh("x; DROP TABLE polls_user"), MatviewSetupError, "unexpected ';'"),
    ("three parts", lambda: refresh("a.b.c"), MatviewSetupError, "it has 3 dotted parts"),
    ("unclosed quote", lambda: refresh('"abc'), MatviewSetupError, "a double quote is never closed"),
    ("too long", lambda: refresh("v" * 70), MatviewSetupError, "63-byte identifier limit"),
    ("missing view", lambda: refresh("public.nope"), MatviewSetupError, "public.nope does not exist"),
    ("a table", lambda: refresh("polls_user"), MatviewSetupError, "is a table, not a materialized view"),
    ("a view", lambda: refresh("plain_view"), MatviewSetupError, "is a plain view, not a materialized"),
    ("a sequence", lambda: refresh("a_sequence"), MatviewSetupError, "is a sequence, not a materialized"),
    (
        "unknown connection",
        lambda: refresh(postgres_conn_id="warehouse"),
        MatviewSetupError,
        "Airflow connection 'warehouse' is not defined",
    ),
    (
        "unreadable connection",
        lambda: refresh(postgres_conn_id="unreadable"),
        MatviewSetupError,
        "Cannot refresh polls_user_matt_view: Airflow connection 'unreadable' exists (environment variable "
        "AIRFLOW_CONN_UNREADABLE) but cannot be read: its port is not a number (or its password holds an unencoded "
        "/ or @, which cuts the URI short). Fix AIRFLOW_CONN_UNREADABLE: a URI such as "
        "postgresql://USER:PASSWORD@HOST:5432/DB",
    ),
    (
        "extras not JSON",
        lambda: refresh(postgres_conn_id="bad_extras"),
        MatviewSetupError,
        "Cannot refresh polls_user_matt_view: the extras of Airflow connection 'bad_extras' are not valid JSON "
        "(Expecting value at line 1 column 1), and Airflow would ignore them all (sslmode, options, ...).",
    ),
    (
        "server down",
        lambda: refresh(postgres_conn_id="nowhere"),
        MatviewRefreshError,
        "to refresh polls_user_matt_view (connection 'nowhere'): connection to server at \"127.0.0.1\", port ",
    ),
    (
        "concurrently value",
        lambda: refresh(concurrently="maybe"),
        MatviewSetupError,
        "concurrently: 'maybe' is not allowed; use auto, true or false.",
    ),
    (
        "analyze value",
        lambda: refresh(analyze="perhaps"),
        MatviewSetupError,
        "Cannot refresh polls_user_matt_view (connection 'postgres_default'): analyze: 'perhaps' is not allowed; "
        "use true or false.",
    ),
    (
        "skip_if_unchanged value",
        lambda: refresh(skip_if_unchanged="sometimes"),
        MatviewSetupError,
        "Cannot refresh polls_user_matt_view (connection 'postgres_default'): skip_if_unchanged: 'sometimes' is "
        "not allowed; use true or false.",
    ),
    (
        "negative lock_timeout",
        lambda: refresh(lock_timeout=-1),
        MatviewSetupError,
        "lock_timeout: -1 is negative",
    ),
    ("on_overlap value", lambda: refresh(on_overlap="queue"), MatviewSetupError, "on_overlap must be 'wait'"),
    (
        "no unique index",
        lambda: refresh("no_index", concurrently=True),
        MatviewSetupError,
        "CREATE UNIQUE INDEX ON public.no_index (<key columns>)",
    ),
    (
        "unpopulated view",
        lambda: refresh("unpopulated", concurrently=True),
        MatviewSetupError,
        "it is not populated (it was created or last refreshed WITH NO DATA)",
    ),
    (
        "no data + concurrently",
        lambda: refresh(with_data=False, concurrently=True),
        MatviewSetupError,
        "CONCURRENTLY WITH NO DATA: PostgreSQL does not allow the two together",
    ),
    (
        "query fails",
        lambda: refresh("inverse"),
        MatviewQueryError,
        "inverse failed (connection 'postgres_default'): division by zero. The view keeps its previous contents.",
    ),
    (
        "config: bad cron",
        config_error({"views": [{"name": "public.v", "schedule": "*/5 * *"}]}),
        InvalidConfigFileError,
        "views[0] (public.v): schedule: '*/5 * *' is not a cron expression or preset",
    ),
    (
        "config: URI as conn_id",
        config_error({"views": [{"name": "public.v", "conn_id": "postgresql://u:pw@h/db"}]}),
        InvalidConfigFileError,
        "looks like a connection URI",
    ),
    (
        "config: bad on_overlap",
        config_error({"views": [{"name": "public.v", "on_overlap": "queue"}]}),
        InvalidConfigFileError,
        "views[0] (public.v): on_overlap: Input should be 'wait', 'skip' or 'fail'",
    ),
]


@pytest.mark.parametrize(("case", "action", "error", "message"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_gets_a_clear_error(
    setup: psycopg.Connection, case: str, action: Callable[[], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        action()
    assert message in str(raised.value)
    assert "Sup3r" not in str(raised.value) and "Secret" not in str(raised.value)
    assert setup.execute("SELECT count(*) FROM polls_user").fetchone() == (7,)
    assert setup.execute("SELECT count(*) FROM polls_user_matt_view").fetchone() == (5,)


def test_a_role_that_may_not_refresh_is_told_which_privilege_is_missing(
    setup: psycopg.Connection, stranger: str
) -> None:
    setup.execute(f"GRANT SELECT ON polls_user_matt_view TO {stranger}")
    with pytest.raises(MatviewSetupError) as raised:
        refresh(postgres_conn_id="stranger")
    major = setup.info.server_version // 10000
    missing = (
        f"GRANT MAINTAIN ON public.polls_user_matt_view TO {stranger}, or GRANT pg_maintain"
        if major >= 17
        else "or, on PostgreSQL 17+, the MAINTAIN privilege"
    )
    assert str(raised.value) == (
        f"Role {stranger} (connection 'stranger') may not refresh public.polls_user_matt_view: only its owner "
        f"(postgres) may. Make the role a member of the owner (GRANT postgres TO {stranger}) {missing}."
    )


def test_least_privilege_setup_from_the_readme(
    pg: psycopg.Connection, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: an owner role that cannot log in owns the views; the Airflow role only inherits it."""
    suffix = uuid.uuid4().hex[:8]
    owner, airflow_role = f"matview_owner_{suffix}", f"airflow_refresher_{suffix}"
    create_reference_scenario(pg)
    try:
        pg.execute(f"CREATE ROLE {owner} NOLOGIN")
        pg.execute(f"GRANT SELECT ON polls_user TO {owner}")
        pg.execute(f"ALTER MATERIALIZED VIEW polls_user_matt_view OWNER TO {owner}")
        pg.execute(f"CREATE ROLE {airflow_role} LOGIN IN ROLE {owner}")
        monkeypatch.setenv("AIRFLOW_CONN_REFRESHER", database.uri.replace("postgres@", f"{airflow_role}@", 1))
        add_new_users(pg)

        assert refresh(postgres_conn_id="refresher")["mode"] == "concurrently"
        assert pg.execute("SELECT count(*) FROM polls_user_matt_view").fetchone() == (7,)
        as_airflow = psycopg.connect(database.dsn.replace("user=postgres", f"user={airflow_role}"))
        with as_airflow, pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_airflow.execute("DELETE FROM polls_user")  # it may refresh the view, not change the data
    finally:
        pg.execute(f"DROP OWNED BY {owner}, {airflow_role} CASCADE")
        pg.execute(f"DROP ROLE IF EXISTS {airflow_role}")
        pg.execute(f"DROP ROLE IF EXISTS {owner}")
