"""Read what PostgreSQL's catalog knows about a materialized view. Every query here only reads.

Each reader is a :func:`~airflow_matview.database.steps.step_function`: ``find_relation(conn, name)`` on a synchronous
connection, or ``yield from find_relation.steps(name)`` inside other steps (the refresh, on either kind of connection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_matview.database.identifiers import QualifiedName, quote_if_needed
from airflow_matview.database.steps import fetchall, fetchone, step_function

if TYPE_CHECKING:
    from airflow_matview.database.steps import Steps

RELKIND_NAMES = {
    "r": "a table",
    "p": "a partitioned table",
    "v": "a plain view",
    "f": "a foreign table",
    "i": "an index",
    "I": "a partitioned index",
    "S": "a sequence",
    "c": "a composite type",
    "t": "a TOAST table",
}

FIND_RELATION = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispopulated
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %(name)s
  AND n.nspname = ANY(CASE WHEN %(schema)s::text IS NULL THEN pg_catalog.current_schemas(false)
                           ELSE ARRAY[%(schema)s::name] END)
ORDER BY pg_catalog.array_position(pg_catalog.current_schemas(false), n.nspname)
LIMIT 1
"""

# The conditions PostgreSQL itself checks before REFRESH ... CONCURRENTLY (matview.c, is_usable_unique_index):
# a valid, immediate, unique index on plain columns (no expressions) without a WHERE clause.
_USABLE_UNIQUE_INDEXES = """
SELECT i.indexrelid::regclass::text
FROM pg_catalog.pg_index i
WHERE i.indrelid = %(oid)s
  AND i.indisunique AND i.indisvalid AND i.indimmediate
  AND i.indpred IS NULL AND i.indexprs IS NULL
ORDER BY 1
"""

_ROW_ESTIMATE = "SELECT c.reltuples::bigint FROM pg_catalog.pg_class c WHERE c.oid = %(oid)s"

_ROW_COUNTERS = """
SELECT c.reltuples::bigint,
       pg_catalog.pg_stat_get_xact_tuples_inserted(c.oid),
       pg_catalog.pg_stat_get_xact_tuples_deleted(c.oid)
FROM pg_catalog.pg_class c WHERE c.oid = %(oid)s
"""


@dataclass(frozen=True)
class Relation:
    """A relation found in the catalog.

    :param oid: its ``pg_class`` oid.
    :param name: its schema-qualified name.
    :param relkind: ``pg_class.relkind`` (``m`` for a materialized view).
    :param populated: ``pg_class.relispopulated``: false after ``WITH NO DATA``.
    """

    oid: int
    name: QualifiedName
    relkind: str
    populated: bool

    @property
    def kind_description(self) -> str:
        return "a materialized view" if self.relkind == "m" else RELKIND_NAMES.get(self.relkind, "not a view")


@step_function
def find_relation(name: QualifiedName) -> Steps[Relation | None]:
    """Look ``name`` up like PostgreSQL would: in its schema, or else along the ``search_path``."""
    row = yield from fetchone(FIND_RELATION, {"name": name.name, "schema": name.schema})
    return None if row is None else relation_from_row(*row)


def relation_from_row(oid: int, schema: str, relname: str, relkind: str, populated: bool) -> Relation:
    """A :class:`Relation` from the columns of :data:`FIND_RELATION`."""
    return Relation(oid=oid, name=QualifiedName(schema, relname), relkind=relkind, populated=populated)


# The relations named, by schema and name (a view dropped and recreated gets a new oid: each caller looks again).
_FIND_RELATIONS = """
SELECT w.schema, w.relname, c.oid, c.relkind
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS w(schema, relname)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.relname
"""


@step_function
def find_relations(names: list[QualifiedName]) -> Steps[dict[QualifiedName, Relation]]:
    """The relations among the schema-qualified ``names`` that exist, in one query."""
    params = {"schemas": [name.schema for name in names], "names": [name.name for name in names]}
    rows = yield from fetchall(_FIND_RELATIONS, params)
    return {
        QualifiedName(schema, relname): Relation(int(oid), QualifiedName(schema, relname), relkind, True)
        for schema, relname, oid, relkind in rows
    }


# The columns of the relations named, in their order, with their types as SQL writes them.
_COLUMNS = """
SELECT w.schema, w.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM ROWS FROM (pg_catalog.unnest(%(schemas)s::text[]), pg_catalog.unnest(%(names)s::text[])) AS w(schema, relname)
JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.relname
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY w.schema, w.relname, a.attnum
"""


@step_function
def relation_columns(names: list[QualifiedName]) -> Steps[dict[QualifiedName, list[tuple[str, str]]]]:
    """The columns (name, type) of the schema-qualified ``names`` that exist, in one query (for lineage)."""
    params = {"schemas": [name.schema for name in names], "names": [name.name for name in names]}
    rows = yield from fetchall(_COLUMNS, params)
    columns: dict[QualifiedName, list[tuple[str, str]]] = {}
    for schema, relname, column, type_name in rows:
        columns.setdefault(QualifiedName(schema, relname), []).append((column, type_name))
    return columns


@step_function
def existing_schemas(names: list[str]) -> Steps[set[str]]:
    """Those of the schemas ``names`` that exist."""
    rows = yield from fetchall("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(%s)", [names])
    return {row[0] for row in rows}


@step_function
def search_path() -> Steps[list[str]]:
    """The schemas an unqualified name is looked up in, in order."""
    row = yield from fetchone("SELECT pg_catalog.current_schemas(false)")
    return list(row[0]) if row else []


@step_function
def usable_unique_indexes(oid: int) -> Steps[list[str]]:
    """Names of the indexes that allow ``REFRESH MATERIALIZED VIEW CONCURRENTLY``."""
    rows = yield from fetchall(_USABLE_UNIQUE_INDEXES, {"oid": oid})
    return [row[0] for row in rows]


@step_function
def row_estimate(oid: int) -> Steps[int | None]:
    """The planner's row count (``pg_class.reltuples``), or ``None`` when PostgreSQL has none yet."""
    row = yield from fetchone(_ROW_ESTIMATE, {"oid": oid})
    return None if row is None or row[0] < 0 else int(row[0])


@dataclass(frozen=True)
class RowCounters:
    """The catalog's row estimate, and the rows this transaction inserted and deleted so far."""

    estimate: int
    inserted: int
    deleted: int


@step_function
def row_counters(oid: int) -> Steps[RowCounters]:
    """Counters that track ``REFRESH ... CONCURRENTLY``, which applies its changes as row inserts and deletes."""
    estimate, inserted, deleted = yield from _the_row(_ROW_COUNTERS, {"oid": oid})
    return RowCounters(estimate=int(estimate), inserted=int(inserted), deleted=int(deleted))


def _the_row(statement: str, params: dict[str, Any]) -> Steps[tuple[Any, ...]]:
    """The one row ``statement`` returns for a relation that exists (the caller holds a lock on it)."""
    row = yield from fetchone(statement, params)
    assert row is not None
    return row


# Whether the plain view ``v`` reads with its reader's privileges (security_invoker) rather than its owner's: the
# option as written (``security_invoker=t`` is as true as ``=true``), anything but one of PostgreSQL's false values.
_SECURITY_INVOKER = """EXISTS (
    SELECT FROM pg_catalog.pg_options_to_table({view}.reloptions) AS o
    WHERE o.option_name = 'security_invoker'
      AND pg_catalog.lower(o.option_value) NOT IN ('0', 'f', 'fa', 'fal', 'fals', 'false', 'n', 'no', 'of', 'off'))"""

# Whether row-level security filters what ``walk.checker`` (the role PostgreSQL checks a table's reads as) reads of
# table ``t`` through policy ``p`` of it: it is on for the table and not bypassed (superuser, BYPASSRLS, the table's
# owner unless FORCE), and the policy applies to SELECT and to the role (PUBLIC, or a role whose privileges it has).
_POLICY_APPLIES = """t.relrowsecurity AND p.polcmd IN ('r', '*')
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles a
                          WHERE a.oid = walk.checker AND (a.rolsuper OR a.rolbypassrls))
          AND (t.relforcerowsecurity OR NOT pg_catalog.pg_has_role(walk.checker, t.relowner, 'USAGE'))
          AND EXISTS (SELECT FROM pg_catalog.unnest(p.polroles) AS r(oid)
                      WHERE CASE WHEN r.oid = 0 THEN true
                                 ELSE pg_catalog.pg_has_role(walk.checker, r.oid, 'USAGE') END)"""

# Why a transaction of this session would be read-only: a standby (hot standby: recovery), or the setting
# default_transaction_read_only, and where that comes from (pg_settings.source).
_READ_ONLY = """
SELECT pg_catalog.pg_is_in_recovery(),
       s.setting = 'on', s.source,
       pg_catalog.format('%%I', current_user), pg_catalog.format('%%I', pg_catalog.current_database())
FROM pg_catalog.pg_settings s WHERE s.name = 'default_transaction_read_only'
"""


@dataclass(frozen=True)
class ReadOnly:
    """Why a refresh's transaction is read-only.

    :param standby: the server is a standby (``pg_is_in_recovery()``).
    :param source: where ``default_transaction_read_only = on`` comes from (``pg_settings.source``).
    :param role: the connecting role, quoted as in SQL.
    :param database: the database, quoted as in SQL.
    """

    standby: bool
    source: str
    role: str
    database: str

    def describe(self) -> str:
        if self.standby:
            return (
                "the server is a read-only standby (pg_is_in_recovery() is true): point the connection at the primary "
                "(or use target_session_attrs=read-write with every host)"
            )
        off = "SET default_transaction_read_only = off"
        fix = {
            "user": f"ALTER ROLE {self.role} {off}",
            "database": f"ALTER DATABASE {self.database} {off}",
            "database user": f"ALTER ROLE {self.role} IN DATABASE {self.database} {off}",
            "client": "remove default_transaction_read_only from the connection's options",
        }.get(self.source, f"{off} in the server's configuration, or ALTER ROLE {self.role} {off}")
        return (
            f"default_transaction_read_only is on (set for the {self.source}), so every transaction is read-only: {fix}"
        )


@step_function
def read_only() -> Steps[ReadOnly | None]:
    """Why this session's transactions are read-only (a standby, ``default_transaction_read_only``), or ``None``."""
    standby, default_read_only, source, role, database = yield from _the_row(_READ_ONLY, {})
    if not standby and not default_read_only:
        return None
    return ReadOnly(bool(standby), str(source), str(role), str(database))


# Relations materialized views read: what their query names, what plain views in between read (as their owner,
# or as their reader with security_invoker), and what the row-level security policies that filter any of these
# read (a policy's subqueries are checked as the role its table is read as; the policies of a partition or an
# inheritance child do not apply to a query of its parent). ``walk`` also has a row, with a null relation, for each
# policy that applies (``policy`` is 0 on the rows not reached through a policy).
READS = (
    """
WITH RECURSIVE walk(matview, policy, relation, checker) AS (
    SELECT r.ev_class, 0::oid, d.refobjid, m.relowner
    FROM pg_catalog.pg_rewrite r
    JOIN pg_catalog.pg_class m ON m.oid = r.ev_class
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.ev_class
    WHERE r.ev_class = ANY(%(oids)s)
  UNION
    SELECT walk.matview, step.policy, step.relation, step.checker
    FROM walk
    JOIN pg_catalog.pg_class t ON t.oid = walk.relation
    CROSS JOIN LATERAL (
        SELECT 0::oid, d.refobjid, CASE WHEN """
    + _SECURITY_INVOKER.format(view="t")
    + """ THEN walk.checker ELSE t.relowner END
        FROM pg_catalog.pg_rewrite r
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
            AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> t.oid
        WHERE t.relkind = 'v' AND r.ev_class = t.oid
      UNION ALL
        SELECT p.oid, d.refobjid, walk.checker
        FROM pg_catalog.pg_policy p
        LEFT JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_policy'::regclass AND d.objid = p.oid
            AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> t.oid
        WHERE p.polrelid = t.oid AND """
    + _POLICY_APPLIES
    + """
    ) AS step(policy, relation, checker)
),
reads(matview, relation) AS (
    SELECT DISTINCT walk.matview, walk.relation FROM walk WHERE walk.relation IS NOT NULL
)"""
)

_RELATIONS_READ = (
    READS
    + """
SELECT DISTINCT reads.matview, c.oid, n.nspname, c.relname, c.relkind
FROM reads
JOIN pg_catalog.pg_class c ON c.oid = reads.relation
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
ORDER BY 1, 3, 4
"""
)

_MATVIEWS = """
SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispopulated
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
ORDER BY n.nspname, c.relname
"""

# Whether the current role may refresh the relation {oid} (an SQL expression): the columns of RefreshPermission.
MAY_REFRESH = """
SELECT pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') AS is_owner,
       pg_catalog.pg_get_userbyid(c.relowner) AS owner,
       current_user AS role,
       CASE WHEN pg_catalog.current_setting('server_version_num')::int >= 170000
            THEN pg_catalog.has_table_privilege(c.oid, 'MAINTAIN') ELSE false END AS maintain,
       (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS superuser
FROM pg_catalog.pg_class c WHERE c.oid = {oid}
"""


@step_function
def materialized_views(schemas: list[str] | None = None) -> Steps[list[Relation]]:
    """Every materialized view in the database (or in ``schemas``), by schema and name."""
    rows = yield from fetchall(_MATVIEWS, {"schemas": schemas})
    return [Relation(oid, QualifiedName(schema, name), kind, populated) for oid, schema, name, kind, populated in rows]


@step_function
def relations_read(oids: list[int]) -> Steps[dict[int, list[Relation]]]:
    """For each materialized view, the relations its query reads, directly or through plain views."""
    found: dict[int, list[Relation]] = {oid: [] for oid in oids}
    rows = yield from fetchall(_RELATIONS_READ, {"oids": oids})
    for matview, oid, schema, name, kind in rows:
        found[matview].append(Relation(oid, QualifiedName(schema, name), kind, True))
    return found


@dataclass(frozen=True)
class RefreshPermission:
    """Whether the current role may refresh a view: only its owner (a member of the owning role) may, or,
    on PostgreSQL 17+, a role holding MAINTAIN on it."""

    allowed: bool
    owner: str
    role: str
    by_maintain: bool
    superuser: bool = False

    @property
    def reason(self) -> str:
        """Why the role may refresh the view, e.g. ``is a superuser (the view's owner is app)``."""
        if self.by_maintain:
            return "holds MAINTAIN on the view"
        if self.role == self.owner:
            return "owns the view"
        if self.superuser:
            return f"is a superuser (the view's owner is {self.owner})"
        return f"is a member of the view's owner, {self.owner}"


@step_function
def refresh_permission(oid: int) -> Steps[RefreshPermission]:
    row = yield from _the_row(MAY_REFRESH.format(oid="%(oid)s"), {"oid": oid})
    return permission_from_row(*row)


def permission_from_row(is_owner: bool, owner: str, role: str, maintain: bool, superuser: bool) -> RefreshPermission:
    """A :class:`RefreshPermission` from the columns of :data:`MAY_REFRESH`."""
    # PostgreSQL 17+ grants MAINTAIN to the owner too: it is the reason only for a role that does not own the view.
    by_maintain = bool(maintain) and not is_owner
    return RefreshPermission(
        allowed=bool(is_owner or maintain), owner=owner, role=role, by_maintain=by_maintain, superuser=bool(superuser)
    )


# The relations that hold rows among those read (views are walked through, indexes are not read).
_SOURCES = """,
sources AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind
    FROM reads
    JOIN pg_catalog.pg_class c ON c.oid = reads.relation AND c.relkind NOT IN ('v', 'i', 'I')
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
)"""

# Everything every refresh reads once it holds the view's refresh lock, in one round trip (on the fresh connection
# each task opens, round trips and first catalog reads cost more than the reads themselves): the view's sources,
# the unique indexes that allow CONCURRENTLY, whether it is populated, and its row counters.
_REFRESH_FACTS = (
    READS
    + _SOURCES
    + """
SELECT
    (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(s.oid, s.nspname, s.relname, s.relkind)
                                ORDER BY s.nspname, s.relname)
     FROM sources s),
    ARRAY("""
    + _USABLE_UNIQUE_INDEXES
    + """),
    v.relispopulated,
    CASE WHEN NOT pg_catalog.has_database_privilege(v.relowner, pg_catalog.current_database(), 'TEMPORARY')
         THEN pg_catalog.format('GRANT TEMPORARY ON DATABASE %%I TO %%I', pg_catalog.current_database(),
                                pg_catalog.pg_get_userbyid(v.relowner)) END,
    counters.*
FROM pg_catalog.pg_class v, ("""
    + _ROW_COUNTERS
    + """) AS counters
WHERE v.oid = %(oid)s::oid
"""
)


@dataclass(frozen=True)
class RefreshFacts:
    """What the catalog says about a view just before it is refreshed.

    :param sources: the relations it reads (through plain views) that hold rows: tables, partitioned tables,
        materialized views, foreign tables, sequences; by schema and name.
    :param unique_indexes: the indexes that allow ``REFRESH MATERIALIZED VIEW CONCURRENTLY``.
    :param populated: whether the view is populated (read after the refresh lock was taken).
    :param counters: the view's row estimate and this transaction's inserted/deleted rows so far.
    :param temp_grant: when the view's owner may not create temporary tables, which CONCURRENTLY needs, the
        ``GRANT TEMPORARY`` that allows it; else ``None``.
    """

    sources: list[Relation]
    unique_indexes: list[str]
    populated: bool
    counters: RowCounters
    temp_grant: str | None = None


@step_function
def refresh_facts(oid: int) -> Steps[RefreshFacts | None]:
    """What every refresh needs to know of the view ``oid``; ``None`` when it no longer exists."""
    row = yield from fetchone(_REFRESH_FACTS, {"oid": oid, "oids": [oid]})
    if row is None:
        return None
    sources_json, indexes, populated, temp_grant, estimate, inserted, deleted = row
    return RefreshFacts(
        sources=[
            Relation(int(source_oid), QualifiedName(schema, name), kind, True)
            for source_oid, schema, name, kind in sources_json or []
        ],
        unique_indexes=list(indexes),
        populated=bool(populated),
        counters=RowCounters(estimate=int(estimate), inserted=int(inserted), deleted=int(deleted)),
        temp_grant=temp_grant,
    )


# The privileges a refresh needs beyond the right to refresh (see refresh_permission). PostgreSQL runs the view's
# query as the view's owner (a security-restricted operation), so it is the owner that needs SELECT on what the
# query reads, EXECUTE on the functions it calls and, for CONCURRENTLY, TEMPORARY on the database (the new data goes
# to a temporary table) and SELECT, INSERT and DELETE on the view (the changes are applied as row changes). A plain
# view in between reads with its own owner's privileges (or, with security_invoker, its reader's). The role that
# connects needs USAGE on the view's schema to name the view. USAGE on the source tables' schemas is not needed:
# the stored query refers to the tables themselves. Column-level grants are not analysed: a role holding SELECT on
# some columns of a table is not reported.
_MISSING_PRIVILEGES = """
WITH RECURSIVE reads(relation, checker) AS (
    SELECT d.refobjid, v.relowner
    FROM pg_catalog.pg_class v
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = v.oid
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> v.oid
    WHERE v.oid = %(oid)s::oid
  UNION
    SELECT d.refobjid,
           CASE WHEN {security_invoker} THEN reads.checker ELSE pv.relowner END
    FROM reads
    JOIN pg_catalog.pg_class pv ON pv.oid = reads.relation AND pv.relkind = 'v'
    JOIN pg_catalog.pg_rewrite r ON r.ev_class = pv.oid
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> pv.oid
),
rules AS (
    SELECT r.oid FROM pg_catalog.pg_rewrite r
    WHERE r.ev_class = %(oid)s::oid
       OR r.ev_class IN (SELECT reads.relation FROM reads JOIN pg_catalog.pg_class c ON c.oid = reads.relation
                         WHERE c.relkind = 'v')
),
view AS (
    SELECT v.oid, v.relowner, v.relnamespace, n.nspname, v.relname
    FROM pg_catalog.pg_class v JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace
    WHERE v.oid = %(oid)s::oid
),
missing(role, privilege, kind, target, grantee_is_owner, concurrently_only) AS (
    SELECT DISTINCT reads.checker, 'SELECT',
           CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table'
                          ELSE 'table' END,
           pg_catalog.format('%%I.%%I', n.nspname, c.relname), reads.checker = view.relowner, false
    FROM reads
    JOIN pg_catalog.pg_class c ON c.oid = reads.relation AND c.relkind IN ('r', 'p', 'm', 'v', 'f')
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, view
    WHERE NOT pg_catalog.has_table_privilege(reads.checker, c.oid, 'SELECT')
      AND NOT pg_catalog.has_any_column_privilege(reads.checker, c.oid, 'SELECT')
  UNION
    SELECT DISTINCT view.relowner, 'EXECUTE', 'function',
           pg_catalog.format('%%I.%%I(%%s)', n.nspname, p.proname,
                             pg_catalog.pg_get_function_identity_arguments(p.oid)),
           true, false
    FROM rules
    JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = rules.oid
        AND d.refclassid = 'pg_catalog.pg_proc'::regclass
    JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace, view
    WHERE NOT pg_catalog.has_function_privilege(view.relowner, p.oid, 'EXECUTE')
  UNION
    SELECT current_user::regrole::oid, 'USAGE', 'schema', pg_catalog.quote_ident(view.nspname),
           current_user::regrole::oid = view.relowner, false
    FROM view WHERE NOT pg_catalog.has_schema_privilege(current_user, view.relnamespace, 'USAGE')
  UNION
    SELECT view.relowner, 'USAGE', 'schema', pg_catalog.quote_ident(view.nspname), true, true
    FROM view WHERE NOT pg_catalog.has_schema_privilege(view.relowner, view.relnamespace, 'USAGE')
      AND current_user::regrole::oid <> view.relowner
  UNION
    SELECT view.relowner, 'TEMPORARY', 'database', pg_catalog.quote_ident(pg_catalog.current_database()), true, true
    FROM view WHERE NOT pg_catalog.has_database_privilege(view.relowner, pg_catalog.current_database(), 'TEMPORARY')
  UNION
    SELECT view.relowner, privilege, 'materialized view', pg_catalog.format('%%I.%%I', view.nspname, view.relname),
           true, true
    FROM view, unnest(ARRAY['SELECT', 'INSERT', 'DELETE']) AS privilege
    WHERE NOT pg_catalog.has_table_privilege(view.relowner, view.oid, privilege)
)
SELECT pg_catalog.pg_get_userbyid(m.role), m.privilege, m.kind || ' ' || m.target, m.grantee_is_owner,
       m.concurrently_only,
       pg_catalog.format('GRANT %%s ON %%s %%s TO %%I', m.privilege,
                         CASE WHEN m.kind IN ('schema', 'database', 'function') THEN pg_catalog.upper(m.kind)
                              ELSE 'TABLE' END,
                         m.target, pg_catalog.pg_get_userbyid(m.role))
FROM missing m
ORDER BY m.concurrently_only, m.privilege, m.kind, m.target
""".replace("{security_invoker}", _SECURITY_INVOKER.format(view="pv"))


@dataclass(frozen=True)
class MissingPrivilege:
    """A privilege a refresh needs and a role lacks.

    :param role: the role that lacks it.
    :param privilege: ``SELECT``, ``EXECUTE``, ``USAGE``, ``TEMPORARY``, ``INSERT`` or ``DELETE``.
    :param on: what it is needed on, e.g. ``table public.sales`` or ``database shop``.
    :param owner: whether the role is the view's owner (PostgreSQL runs the view's query as the owner).
    :param concurrently_only: only ``REFRESH ... CONCURRENTLY`` needs it; a plain refresh works without it.
    :param grant: the statement that gives it, with every name quoted, e.g. ``GRANT SELECT ON TABLE public.t TO o``.
    """

    role: str
    privilege: str
    on: str
    owner: bool
    concurrently_only: bool
    grant: str

    def describe(self) -> str:
        role = quote_if_needed(self.role)
        who = f"the view's owner {role}" if self.owner else f"role {role}"
        why = " (PostgreSQL runs the view's query as its owner)" if self.owner and not self.concurrently_only else ""
        return f"{who} lacks {self.privilege} on {self.on}{why}; fix: {self.grant}"


@step_function
def missing_privileges(oid: int) -> Steps[list[MissingPrivilege]]:
    """The privileges that refreshing the materialized view ``oid`` needs and its owner or the current role lacks."""
    rows = yield from fetchall(_MISSING_PRIVILEGES, {"oid": oid})
    return [
        MissingPrivilege(role, privilege, on, bool(owner), bool(concurrently_only), grant)
        for role, privilege, on, owner, concurrently_only, grant in rows
    ]
