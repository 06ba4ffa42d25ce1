"""The operator that refreshes one PostgreSQL materialized view."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_matview.connection import connect
from airflow_matview.exceptions import MatviewConfigurationError
from airflow_matview.identifiers import InvalidIdentifierError, QualifiedName, parse_qualified_name
from airflow_matview.refresh import (
    Concurrently,
    parse_bool,
    parse_concurrently,
    refresh_materialized_view,
    to_milliseconds,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context


class RefreshMaterializedViewOperator(BaseOperator):
    """Refresh a PostgreSQL materialized view through the postgres provider's :class:`PostgresHook`.

    The view is looked up in the catalog first, so a missing view, a table, or a plain view fails with a
    clear error before anything runs. The refresh runs in one transaction: when it fails, the view keeps
    its previous contents.

    :param view: ``name`` or ``schema.name`` (templated); quote parts with capitals or spaces, as in SQL:
        ``"Sales Report"."Q1 Totals"``.
    :param postgres_conn_id: the Airflow connection to the database (templated).
    :param concurrently: ``"auto"`` (default) refreshes ``CONCURRENTLY`` when PostgreSQL allows it (the view is
        populated and has a unique index on plain columns without a WHERE clause) and with a plain refresh
        otherwise; ``True`` requires ``CONCURRENTLY`` and fails, saying why, when it cannot work; ``False``
        always runs a plain refresh, which blocks readers of the view (templated).
    :param with_data: ``False`` runs ``REFRESH ... WITH NO DATA``, which empties the view.
    :param analyze: run ``ANALYZE`` on the view after the refresh (templated).
    :param lock_timeout: the longest wait for the view's lock, as a timedelta or seconds; ``None`` waits forever.
    :return: a dict with ``view``, ``mode`` (``concurrently``, ``blocking`` or ``no_data``), ``reason``,
        ``seconds`` and ``rows`` (from ``pg_class.reltuples``; ``None`` when PostgreSQL has no estimate).
    """

    template_fields: Sequence[str] = ("view", "postgres_conn_id", "concurrently", "analyze")
    ui_color = "#c9e7f8"

    def __init__(
        self,
        *,
        view: str,
        postgres_conn_id: str = "postgres_default",
        concurrently: Concurrently | str = "auto",
        with_data: bool = True,
        analyze: bool | str = False,
        lock_timeout: timedelta | float | None = timedelta(minutes=1),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.view = view
        self.postgres_conn_id = postgres_conn_id
        self.concurrently = concurrently
        self.with_data = with_data
        self.analyze = analyze
        self.lock_timeout = lock_timeout
        to_milliseconds(lock_timeout, "lock_timeout")
        if "{{" not in str(concurrently):
            parse_concurrently(concurrently)

    @property
    def connection_label(self) -> str:
        return f"connection {self.postgres_conn_id!r}"

    def execute(self, context: Context) -> dict[str, Any]:
        view = self._parse_view()
        concurrently = parse_concurrently(self.concurrently)
        analyze = parse_bool(self.analyze, "analyze")
        conn = connect(self.postgres_conn_id, f"refresh {view}")
        try:
            result = refresh_materialized_view(
                conn,
                view,
                concurrently=concurrently,
                with_data=self.with_data,
                analyze=analyze,
                lock_timeout=self.lock_timeout,
                connection_label=self.connection_label,
            )
        finally:
            conn.close()
        self.log.info(
            "Refreshed %s (%s) in %.3fs; about %s rows.", result.view, result.mode, result.seconds, result.rows
        )
        return result.as_dict()

    def _parse_view(self) -> QualifiedName:
        try:
            return parse_qualified_name(self.view)
        except InvalidIdentifierError as exc:
            raise MatviewConfigurationError(f"{exc} ({self.connection_label})") from None
