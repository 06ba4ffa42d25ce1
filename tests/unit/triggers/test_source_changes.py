"""The on_change watcher's connection: a connection Airflow cannot read is named, with why (no server)."""

from __future__ import annotations

import pytest

from airflow_matview.exceptions import MatviewSetupError


def test_the_change_watcher_says_a_connection_airflow_cannot_read_exists_and_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The triggerer's watcher (on_change) logs this reason, not "The conn_id isn't defined"."""
    import asyncio

    from airflow_matview.triggers.source_changes import _connect

    monkeypatch.setenv("AIRFLOW_CONN_WATCHED", "postgresql://app:Sup3rSecret@127.0.0.1:notaport/db")
    with pytest.raises(MatviewSetupError) as raised:
        asyncio.run(_connect("watched"))
    assert str(raised.value).startswith(
        "Cannot watch the sources of materialized views: Airflow connection 'watched' exists (environment variable "
        "AIRFLOW_CONN_WATCHED) but cannot be read: its port is not a number"
    )
    assert "Sup3r" not in str(raised.value)
