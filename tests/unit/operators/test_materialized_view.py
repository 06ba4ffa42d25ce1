"""The operator's arguments, read as the config file reads them, and a connection it cannot reach (no server)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.exceptions import MatviewRefreshError, MatviewSetupError

SECRET_URI = "postgresql://admin:hunter2-secret@db.example:5432/shop"


def operator(**kwargs: Any) -> RefreshMaterializedViewOperator:
    return RefreshMaterializedViewOperator(task_id="refresh", **{"view": "public.polls_user_matt_view", **kwargs})


def test_text_durations_and_flags_read_as_in_the_config() -> None:
    assert operator(lock_timeout="5m").lock_timeout == timedelta(minutes=5)
    assert operator(lock_timeout="90").lock_timeout == timedelta(seconds=90)
    assert operator(lock_timeout=None).lock_timeout is None
    for key, value, expected in [
        ("lock_timeout", "soon", "lock_timeout: 'soon' is not a duration; use 500ms, 30s, 5m, 1h, 1d or a number"),
        ("lock_timeout", 0, "lock_timeout: 0 is less than a millisecond"),
        ("with_data", "no", "with_data: 'no' is not allowed; use true or false."),
        ("with_data", 1, "with_data: 1 is not allowed; use true or false."),
        ("analyze", "yes", "analyze: 'yes' is not allowed; use true or false."),
    ]:
        with pytest.raises(MatviewSetupError) as raised:
            operator(**{key: value})
        assert str(raised.value).startswith(
            f"Cannot refresh public.polls_user_matt_view (connection 'postgres_default'): {expected}"
        ), str(raised.value)
        assert "\n" not in str(raised.value)


def test_a_connection_uri_is_refused_and_never_repeated() -> None:
    for conn_id in (SECRET_URI, "host=db.example password=hunter2-secret", "admin:hunter2-secret@db.example"):
        with pytest.raises(MatviewSetupError) as raised:
            operator(postgres_conn_id=conn_id)
        assert "hunter2" not in str(raised.value)
        assert "looks like a connection URI or DSN (not repeated here, as it may hold a password)" in str(raised.value)


def refresh(view: str = "polls_user_matt_view", **kwargs: Any) -> dict[str, Any]:
    return RefreshMaterializedViewOperator(task_id="refresh", view=view, **kwargs).execute({})  # type: ignore[arg-type]


def test_unreachable_server_is_a_retryable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", f"postgresql://postgres@127.0.0.1:{port}/postgres")
    with pytest.raises(
        MatviewRefreshError, match=f"Cannot connect to PostgreSQL at 127.0.0.1:{port} to refresh polls_"
    ):
        refresh()
