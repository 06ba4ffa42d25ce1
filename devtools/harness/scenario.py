"""The reference scenario: ``polls_user`` and the materialized view ``polls_user_matt_view``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

VIEW = "public.polls_user_matt_view"
FIRST_USERS = [(1, "alice", 25), (2, "bob", 31), (3, "carol", 42), (4, "dave", 27), (5, "erin", 58)]
NEW_USERS = [(6, "frank", 25), (7, "grace", 36)]


def create_reference_scenario(conn: psycopg.Connection) -> None:
    """Five users, all aged 25 or more, and the view that selects them."""
    conn.execute("CREATE TABLE polls_user (id integer PRIMARY KEY, name text NOT NULL, age integer NOT NULL)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO polls_user (id, name, age) VALUES (%s, %s, %s)", FIRST_USERS)
    conn.execute("CREATE MATERIALIZED VIEW polls_user_matt_view AS SELECT * FROM polls_user WHERE age >= 25")
    conn.execute("CREATE UNIQUE INDEX polls_user_matt_view_id ON polls_user_matt_view (id)")


def add_new_users(conn: psycopg.Connection) -> None:
    """Two new users aged 25 or more: the view shows them only after a refresh."""
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO polls_user (id, name, age) VALUES (%s, %s, %s)", NEW_USERS)


def view_rows(conn: psycopg.Connection) -> list[tuple[int, str, int]]:
    return conn.execute("SELECT id, name, age FROM polls_user_matt_view ORDER BY id").fetchall()
