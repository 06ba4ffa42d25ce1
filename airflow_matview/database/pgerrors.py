"""What a psycopg error says, in one line for a task log, and whether a retry may cure it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from airflow_matview.text import one_line

if TYPE_CHECKING:
    import psycopg

# SQLSTATE classes a retry may cure: the connection (08), a transaction rolled back by the server (40:
# serialization failure, deadlock), resources (53: disk full, out of memory, too many connections), an object in
# use (55: lock not available), operator intervention (57: cancel, shutdown), system and internal errors (58, XX),
# foreign data wrappers (HV: the foreign server). Every other class is about the query, the data, the privileges
# or the definitions, and fails again until someone changes them.
TRANSIENT_CLASSES = ("08", "40", "53", "55", "57", "58", "XX", "HV")
# SQLSTATEs of other classes a retry may cure: a read-only transaction (25006: a standby may be promoted, or
# default_transaction_read_only turned off), and a session the server ended for one of its timeouts.
TRANSIENT_STATES = ("25006", "25P03", "25P04")
# The timeouts for which the server ends a session: what happened, and the setting that made it happen.
_SESSION_TIMEOUTS = {
    "25P03": ("it was idle in its transaction longer than", "idle_in_transaction_session_timeout"),
    "25P04": ("its transaction lasted longer than", "transaction_timeout"),
    "57P05": ("it was idle longer than", "idle_session_timeout"),
}
# A password this long is masked wherever it appears in a message; a shorter one only as a whole word.
_MASK_ANYWHERE = 5


def is_transient(exc: psycopg.Error) -> bool:
    """Whether ``exc`` may not happen again on a later try (no SQLSTATE: the connection itself failed)."""
    return exc.sqlstate is None or exc.sqlstate.startswith(TRANSIENT_CLASSES) or exc.sqlstate in TRANSIENT_STATES


def session_timeout(exc: psycopg.Error) -> tuple[str, str] | None:
    """When the server ended the session for one of its timeouts: what happened (e.g. ``PostgreSQL ended the
    session: its transaction lasted longer than transaction_timeout``) and the setting; else ``None``."""
    found = _SESSION_TIMEOUTS.get(exc.sqlstate or "")
    if found is None:
        return None
    happened, setting = found
    return f"PostgreSQL ended the session: {happened} {setting}", setting


def describe(exc: psycopg.Error) -> str:
    """The server's message with its DETAIL and HINT, on one line, without a trailing period.

    e.g. ``could not create unique index "v_id" (DETAIL: Key (id)=(1) is duplicated.)``.
    """
    diag = exc.diag
    primary = (diag.message_primary if diag else None) or str(exc).strip().splitlines()[0]
    parts = (("DETAIL", diag.message_detail), ("HINT", diag.message_hint)) if diag else ()
    extras = [f"{label}: {one_line(text)}" for label, text in parts if text]
    message = one_line(primary).rstrip(".")
    return f"{message} ({' '.join(extras)})" if extras else message


def describe_connect_failure(exc: BaseException, secret: str | None = None) -> str:
    """All of libpq's lines about a failed connection (host, port, and cause of each attempt), on one line.

    :param exc: the error from connecting.
    :param secret: the connection's password, masked should it ever appear in the text.
    """
    text = one_line(str(exc)).rstrip(".")
    text = re.sub(r"^connection failed:\s*", "", text)
    if secret and len(secret) >= _MASK_ANYWHERE:
        text = text.replace(secret, "***")
    elif secret:  # a short password only as a whole word: "p" must not turn "port" into "***ort"
        text = re.sub(rf"(?<![^\W_]){re.escape(secret)}(?![^\W_])", "***", text)
    return text


def sentence(text: str) -> str:
    """``text`` ending with a full stop, unless it already ends with one, a question or an exclamation mark."""
    return text if text.endswith((".", "?", "!")) else f"{text}."
