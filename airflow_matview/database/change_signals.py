"""Whether a materialized view's sources changed: one query and one fingerprint, for one view or thousands.

``skip_if_unchanged`` (one view, inside its refresh) and ``on_change`` (every watched view of a connection, from the
triggerer) read the same signals with the same statement, :func:`read_change_signals`:

- per source that holds rows, with its inheritance children and partitions: ``relfilenode`` (changes on TRUNCATE,
  VACUUM FULL, CLUSTER, a plain REFRESH) and three counters of the statistics system (see :func:`source_changed`);
- the versions of the plain views in between (``xmin`` of their rules changes on CREATE OR REPLACE VIEW);
- row-level security: the sources include the tables that the policies filtering the view's reads read (see
  :data:`~airflow_matview.database.catalog.READS`), and the fingerprint has those policies' versions and which
  sources have row-level security on (or forced); a change of the roles' memberships or attributes that makes a
  policy apply or not is not seen;
- when the counters last started from zero (server start, ``pg_stat_reset``);
- what makes the signals blind: sources that hold no counters (foreign tables, sequences), user-defined functions,
  operators and casts in the rules or in the policies that apply (they may read anything), ``track_counts`` off;
- on request, the other sessions writing to a source now (what they commit reaches the counters when they go idle).

:func:`describe_changes` compares two readings of a view's signals: it names the sources whose committed rows may
have changed in between. A write that rolled back (a ``ROLLBACK``, a failed statement such as a duplicate key, a
savepoint rolled back inside a committed transaction, an aborted ``COPY``, ``TRUNCATE`` or ``REFRESH ...
CONCURRENTLY`` of an upstream view) changes nothing, except in one case told apart too late: a rolled-back write and
an ``ANALYZE`` of the same table (manual, or autovacuum's after committed changes) between the two readings count as
a change. A committed change is never missed; a few things count as changes that are none (VACUUM FULL, CLUSTER, an
``UPDATE`` that sets a column to its own value, a row inserted and deleted in one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_matview.database.catalog import READS
from airflow_matview.database.identifiers import QualifiedName
from airflow_matview.database.steps import fetchall, step_function

if TYPE_CHECKING:
    from airflow_matview.database.steps import Steps

#: Bumped when the fingerprint's content changes: a fingerprint of another version never equals a new one.
FINGERPRINT_VERSION = 3

# PostgreSQL's PGSTAT_IDLE_INTERVAL (15 to 18): the longest a session that went idle keeps its counters to itself,
# plus a margin for the report itself.
STATS_IDLE_INTERVAL = 10.0
_STATS_MARGIN = 0.5

_CHANGE_SIGNALS = (
    READS
    + """,
sources AS (
    SELECT DISTINCT reads.matview, c.oid
    FROM reads JOIN pg_catalog.pg_class c ON c.oid = reads.relation AND c.relkind NOT IN ('v', 'i', 'I')
),
tree(matview, oid) AS (
    SELECT sources.matview, sources.oid FROM sources
  UNION
    SELECT tree.matview, i.inhrelid FROM tree JOIN pg_catalog.pg_inherits i ON i.inhparent = tree.oid
),
rules AS (
    SELECT ruled.matview, r.oid, r.ev_class, r.xmin::text::bigint AS version
    FROM (SELECT m.oid AS matview, m.oid AS relation FROM pg_catalog.unnest(%(oids)s::oid[]) AS m(oid)
          UNION
          SELECT reads.matview, reads.relation FROM reads
          JOIN pg_catalog.pg_class c ON c.oid = reads.relation AND c.relkind = 'v') AS ruled
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = ruled.relation
),
policies AS (
    SELECT DISTINCT walk.matview, walk.policy AS oid FROM walk WHERE walk.policy <> 0
),
calls(matview, name) AS (
    SELECT DISTINCT users.matview, pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0) || users.place
    FROM (SELECT rules.matview, 'pg_catalog.pg_rewrite'::regclass AS classid, rules.oid, '' AS place FROM rules
          UNION ALL
          SELECT policies.matview, 'pg_catalog.pg_policy'::regclass, policies.oid,
                 ' in ' || pg_catalog.pg_describe_object('pg_catalog.pg_policy'::regclass, policies.oid, 0)
          FROM policies) AS users
    JOIN pg_catalog.pg_depend d ON d.classid = users.classid AND d.objid = users.oid
    WHERE d.refclassid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_operator'::regclass,
                           'pg_catalog.pg_cast'::regclass)
      AND d.refobjid >= 16384
),
security(matview, kind, oid, version) AS (
    SELECT policies.matview, 'policy', p.oid, p.xmin::text::bigint
    FROM policies JOIN pg_catalog.pg_policy p ON p.oid = policies.oid
  UNION
    SELECT reads.matview, CASE WHEN c.relforcerowsecurity THEN 'forced' ELSE 'enabled' END, c.oid, 0
    FROM reads JOIN pg_catalog.pg_class c ON c.oid = reads.relation AND c.relrowsecurity
)
SELECT m.oid,
       signals.sources,
       COALESCE(signals.untrackable, '{}'),
       definitions.versions,
       COALESCE(functions.names, '{}'),
       COALESCE(row_security.entries, '[]'),
       pg_catalog.json_build_array(pg_catalog.pg_postmaster_start_time()::text,
                                   (SELECT pg_catalog.pg_stat_get_db_stat_reset_time(d.oid)::text
                                    FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())),
       pg_catalog.current_setting('track_counts')::boolean,
       ARRAY(SELECT DISTINCT pg_catalog.format('pid %%s (%%L) on %%s', l.pid, a.application_name,
                                               l.relation::regclass)
             FROM pg_catalog.pg_locks l
             JOIN tree ON tree.oid = l.relation AND tree.matview = m.oid
             JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
             WHERE %(writers)s AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
               AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'))
FROM pg_catalog.unnest(%(oids)s::oid[]) AS m(oid)
LEFT JOIN (
    SELECT tree.matview,
           pg_catalog.json_agg(pg_catalog.json_build_array(c.oid, n.nspname, c.relname, c.relfilenode,
                                                           pg_catalog.pg_stat_get_mod_since_analyze(c.oid),
                                                           pg_catalog.pg_stat_get_analyze_count(c.oid)
                                                             + pg_catalog.pg_stat_get_autoanalyze_count(c.oid),
                                                           pg_catalog.pg_stat_get_tuples_inserted(c.oid)
                                                             + pg_catalog.pg_stat_get_tuples_updated(c.oid)
                                                             + pg_catalog.pg_stat_get_tuples_deleted(c.oid))
                               ORDER BY c.oid) AS sources,
           pg_catalog.array_agg(c.oid::regclass::text ORDER BY c.oid)
               FILTER (WHERE c.relkind NOT IN ('r', 'p', 'm')) AS untrackable
    FROM tree
    JOIN pg_catalog.pg_class c ON c.oid = tree.oid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    GROUP BY tree.matview
) AS signals ON signals.matview = m.oid
LEFT JOIN (
    SELECT rules.matview,
           pg_catalog.json_agg(pg_catalog.json_build_array(rules.ev_class, rules.version) ORDER BY rules.ev_class)
               FILTER (WHERE rules.ev_class <> rules.matview) AS versions
    FROM rules GROUP BY rules.matview
) AS definitions ON definitions.matview = m.oid
LEFT JOIN (
    SELECT calls.matview, pg_catalog.array_agg(calls.name ORDER BY calls.name) AS names
    FROM calls GROUP BY calls.matview
) AS functions ON functions.matview = m.oid
LEFT JOIN (
    SELECT security.matview,
           pg_catalog.json_agg(pg_catalog.json_build_array(security.kind, security.oid, security.version)
                               ORDER BY security.kind, security.oid) AS entries
    FROM security GROUP BY security.matview
) AS row_security ON row_security.matview = m.oid
"""
)

_UNPUBLISHED_STATISTICS = """
SELECT a.pid, a.application_name,
       EXTRACT(epoch FROM a.state_change - pg_catalog.clock_timestamp())::float8
FROM pg_catalog.pg_stat_activity a
WHERE a.datname = pg_catalog.current_database() AND a.backend_type = 'client backend'
  AND a.pid <> pg_catalog.pg_backend_pid() AND a.state = 'idle'
  AND a.state_change > pg_catalog.clock_timestamp() - %(window)s * interval '1 second'
ORDER BY a.state_change
"""


@dataclass(frozen=True)
class ChangeSignals:
    """What tells whether one view's sources changed.

    :param fingerprint: a JSON-ready reading of the signals, to compare with a later one (:func:`describe_changes`);
        ``None`` when changes cannot be seen (see ``untracked_because``), so that nobody relies on it.
    :param untracked_because: why the fingerprint cannot be trusted, or ``None``.
    :param writers: other sessions holding a write lock on a source now, e.g. ``pid 42 ('etl') on public.t``
        (read only when asked for).
    :param source_names: the display names of the sources by oid (as text), to say which ones changed.
    """

    fingerprint: dict[str, Any] | None
    untracked_because: str | None
    writers: list[str] = field(default_factory=list)
    source_names: dict[str, str] = field(default_factory=dict)


@step_function
def read_change_signals(oids: list[int], *, writers: bool = False) -> Steps[dict[int, ChangeSignals]]:
    """The change signals of the materialized views ``oids``, in one statement.

    :param oids: the views' ``pg_class`` oids.
    :param writers: also list the sessions writing to a source now (the refresh asks; the watcher does not).
    """
    rows = yield from fetchall(_CHANGE_SIGNALS, {"oids": list(oids), "writers": writers})
    return {int(row[0]): _signals(*row) for row in rows}


def _signals(
    oid: int,
    sources: list[list[Any]] | None,
    untrackable: list[str],
    definitions: list[Any] | None,
    functions: list[str],
    row_security: list[Any],
    statistics_since: list[Any],
    track_counts: bool,
    writers: list[str],
) -> ChangeSignals:
    names = {str(source[0]): _display_name(source[1], source[2]) for source in sources or []}
    why = untracked_because(bool(sources), list(untrackable), list(functions), bool(track_counts))
    fingerprint = None
    if why is None:
        fingerprint = {
            "version": FINGERPRINT_VERSION,
            "view": int(oid),
            "sources": {str(source[0]): [int(value) for value in source[3:]] for source in sources or []},
            "definitions": definitions or [],
            "row_security": row_security,
            "statistics_since": statistics_since,
        }
    return ChangeSignals(fingerprint, why, list(writers), names)


def _display_name(schema: str, name: str) -> str:
    return str(QualifiedName(schema, name))


def untracked_because(
    has_sources: bool, untrackable: list[str], functions: list[str], track_counts: bool
) -> str | None:
    """Why a view's change signals cannot be trusted, or ``None`` when they can."""
    if not track_counts:
        return "track_counts is off, so the server counts no row changes"
    if untrackable:
        return f"{', '.join(untrackable)} cannot be tracked (a foreign table or a sequence)"
    if functions:
        return f"it uses {', '.join(functions)}, which may read tables the catalog does not show"
    if not has_sources:
        return "it reads no table whose changes could be seen"
    return None


def describe_changes(
    baseline: dict[str, Any], current: dict[str, Any], source_names: dict[str, str] | None = None
) -> list[str]:
    """What differs between a recorded fingerprint and the current one: the changed sources by name, or why all
    count as changed; empty when nothing did.

    :param baseline: a fingerprint recorded earlier.
    :param current: :attr:`ChangeSignals.fingerprint` now.
    :param source_names: the sources' names by oid: :attr:`ChangeSignals.source_names`, and those of earlier
        polls, to name a source that is no longer read (a partition detached or dropped).
    """
    names = source_names or {}
    if baseline.get("version") != current["version"]:
        return ["the change signals were recorded by another version of airflow-matview"]
    if baseline.get("view") != current["view"]:
        return ["the view was dropped and created again"]
    before, after = baseline.get("sources", {}), current["sources"]
    changes = [
        change for oid in sorted(set(before) | set(after)) if (change := _changed_source(oid, names, before, after))
    ]
    if baseline.get("definitions") != current["definitions"]:
        changes.append("a plain view in between was redefined")
    if baseline.get("row_security") != current["row_security"]:
        changes.append("a row-level security policy or setting of a source changed")
    if baseline.get("statistics_since") != current["statistics_since"]:
        changes.append("the server's statistics restarted (server restart or pg_stat_reset)")
    return changes


def _changed_source(oid: str, names: dict[str, str], before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """How a source changed, by name: ``public.t``, ``public.p1 (no longer read)``, ``public.p3 (newly read)``;
    ``None`` when it did not."""
    if not source_changed(before.get(oid), after.get(oid)):
        return None
    name = names.get(oid) or f"the relation with oid {oid}"
    if oid not in after:
        return f"{name} (no longer read)"
    return f"{name} (newly read)" if oid not in before else name


def unchanged(baseline: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """Whether nothing a view reads changed between two fingerprints (``False`` when either is missing)."""
    return baseline is not None and current is not None and not describe_changes(baseline, current)


def source_changed(before: list[int] | None, after: list[int] | None) -> bool:
    """Whether a source's committed rows may have changed between two readings of its signals.

    A reading is ``[relfilenode, committed, analyses, attempted]``: ``n_mod_since_analyze`` (the rows committed
    transactions inserted, updated or deleted; ANALYZE sets it back to zero), the number of ANALYZEs (manual and
    autovacuum's), and ``n_tup_ins + n_tup_upd + n_tup_del`` (every row change tried, rolled back or not; it never
    goes back). With no ANALYZE in between, ``committed`` moves if and only if a transaction that changed rows
    committed. After an ANALYZE, only ``attempted`` tells, and it cannot tell a rolled-back write from a committed one.
    A new ``relfilenode`` (TRUNCATE, VACUUM FULL, CLUSTER, a plain REFRESH) counts as a change. The counters start
    again from zero only with the statistics themselves, which the fingerprint's ``statistics_since`` covers.

    :param before: the earlier reading, ``None`` when the source was not one then.
    :param after: the later reading, ``None`` when the source is no longer one.
    """
    if before is None or after is None or len(before) != len(after):
        return before != after
    file_before, committed_before, analyses_before, attempted_before = before
    file_after, committed_after, analyses_after, attempted_after = after
    if file_before != file_after:
        return True
    if analyses_before == analyses_after:
        return bool(committed_before != committed_after)
    return bool(attempted_before != attempted_after)


@step_function
def unpublished_statistics() -> Steps[tuple[float, list[str]]]:
    """How long to wait until every session of this database that went idle recently has published its counters,
    and those sessions (e.g. ``pid 42 ('etl')``); ``(0, [])`` when none did."""
    window = STATS_IDLE_INTERVAL + _STATS_MARGIN
    rows = yield from fetchall(_UNPUBLISHED_STATISTICS, {"window": window})
    if not rows:
        return 0.0, []
    wait = max(0.0, window + max(float(age) for _, _, age in rows))
    return min(wait, window), [f"pid {pid} ({application or ''!r})" for pid, application, _ in rows]
