"""Change-signal fingerprints for tests, in the shape :mod:`airflow_matview.database.change_signals` reads them."""

from __future__ import annotations

from typing import Any

from airflow_matview.database.change_signals import FINGERPRINT_VERSION


def signals(count: int) -> dict[str, Any]:
    """A fingerprint of a view with one source (oid 10) that has seen ``count`` committed row changes."""
    return {
        "version": FINGERPRINT_VERSION,
        "view": 1,
        "sources": {"10": [5, count, 0, count]},
        "definitions": [],
        "row_security": [],
        "statistics_since": ["t0", None],
    }
