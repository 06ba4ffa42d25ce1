"""The fleet overview's records as Airflow's metadata database may hold them: foreign ``matview://`` assets,
asset events posted with any ``extra``, and serialized DAGs, states and summaries of unexpected shapes.

Airflow's own DAG-processor code writes the DAGs (``devtools/fleet_seed.py``) into the test session's metadata
database; what the REST API or a DAG author could store is then written as they would leave it. Each record that
cannot be read is skipped and counted, each value of the wrong type or range is left out, and the document is
always valid JSON.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

NOW = datetime.now(timezone.utc).replace(microsecond=0)
PREFIX = "fleetcheck"
VIEWS = ["events_list", "events_text", "extra_types", "extra_infinite", "state", "timetable", "timezone", "summary"]
VIEWS += ["deadline", "mixed", "queued_late", "queued_recently", "failed_then_ok", "plain"]
VIEWS += ["result_text", "result_hostile", "result_older"]
FOREIGN_URIS = [
    "matview://team-b/exports",  # two parts
    "matview://team-b/a/b/c",  # four parts
    "matview://conn//view",  # an empty part
    "matview://conn/public/%zz",  # not percent-encoding
    "matview://conn/public/%ff",  # not UTF-8
    "matview://conn/public/caf%c3%a9",  # lower-case percent-encoding, which matview_asset_uri never writes
]
BUDGET = timedelta(minutes=5)


def _dag_id(view: str) -> str:
    return f"matview.{PREFIX}.{view}"


def _config() -> dict[str, Any]:
    views: list[dict[str, Any]] = [
        {"name": f"{PREFIX}.{view}", "conn_id": "warehouse", "schedule": "@hourly", "tags": ["checked"]}
        for view in VIEWS
    ]
    for view in views:
        view |= {
            "max_staleness": "5m",
            "on_stale": [
                {"notifier": "airflow.providers.smtp.notifications.smtp.SmtpNotifier", "to": "oncall@example.com"}
            ],
        }
    return {"views": views}


def _foreign_dags() -> list[Any]:
    """DAGs of another team with ``matview://`` assets that are not ours, and one of ours also scheduled on one."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Asset

    dags = []
    for number, uri in enumerate(FOREIGN_URIS):
        with DAG(f"{PREFIX}_foreign_{number}", schedule=None) as dag:
            EmptyOperator(task_id="refresh", outlets=[Asset(uri)])
        dags.append(dag)
    from airflow_matview.assets import matview_asset
    from airflow_matview.database.identifiers import QualifiedName

    with DAG(
        _dag_id("mixed"), schedule=[Asset("matview://team-b/exports"), Asset("s3://bucket/key")], tags=["checked"]
    ) as mixed:
        EmptyOperator(task_id="refresh", outlets=[matview_asset("warehouse", QualifiedName(PREFIX, "mixed"))])
    return [*dags, mixed]


def _add_event(session: Any, dag_id: str, extra: Any) -> None:
    """The latest asset event of ``dag_id``'s view, as anyone allowed to post one may leave it."""
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import insert, select

    uri = f"matview://warehouse/{PREFIX}/{dag_id.rsplit('.', 1)[1]}"
    asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == uri))
    session.execute(insert(AssetEvent.__table__).values(asset_id=asset_id, extra=extra, timestamp=NOW))


def _add_result(session: Any, dag_id: str, value: Any, made: datetime) -> None:
    """The return value of the latest refresh task of ``dag_id``, as a refresh that ended in the triggerer leaves it
    (no asset event), or as a custom XCom backend or a hand-written task may leave it."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from sqlalchemy import delete, insert, select

    ti = session.execute(
        select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id, TaskInstance.dag_version_id)
        .where(TaskInstance.dag_id == dag_id)
        .order_by(TaskInstance.start_date.desc())
        .limit(1)
    ).one()
    from airflow.models.dagrun import DagRun

    run_id = session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == ti.run_id))
    session.execute(delete(XComModel).where(XComModel.dag_id == dag_id))
    session.execute(
        insert(XComModel.__table__).values(
            dag_run_id=run_id,
            task_id=ti.task_id,
            map_index=-1,
            key="return_value",
            dag_id=dag_id,
            run_id=ti.run_id,
            value=value,
            timestamp=made,
        )
    )


def _add_run(session: Any, dag_id: str, state: str, queued_at: datetime) -> None:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import insert

    session.execute(
        insert(DagRun.__table__).values(
            dag_id=dag_id,
            run_id=f"manual__{queued_at.isoformat()}",
            run_type="manual",
            run_after=queued_at,
            logical_date=None,
            queued_at=queued_at,
            state=state,
        )
    )


def _set_timetable(session: Any, dag_id: str, timetable: Any) -> None:
    """Give the serialized versions of ``dag_id`` the ``timetable`` (SQLite's ``json_set``: the test session's
    metadata database is SQLite)."""
    from airflow.models.serialized_dag import SerializedDagModel
    from sqlalchemy import func, update

    column = SerializedDagModel.__table__.c.data
    session.execute(
        update(SerializedDagModel.__table__)
        .where(SerializedDagModel.dag_id == dag_id)
        .values({column: func.json_set(column, "$.dag.timetable", func.json(json.dumps(timetable)))})
    )


def _spoil(session: Any) -> None:
    """What DAG authors, Op users and other writers may leave in the metadata database."""
    from airflow.models.dag import DagModel, DagTag
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import insert, select, update

    _add_event(session, _dag_id("events_list"), [1, 2, 3])
    _add_event(session, _dag_id("events_text"), "<img src=x onerror=alert(1)>")
    _add_event(session, _dag_id("extra_types"), {"rows": "12", "seconds": -1, "mode": "<b>fast</b>"})
    # 1e400 is valid JSON, which Python reads as infinity (and would write back as Infinity, which is not JSON).
    _add_event(session, _dag_id("extra_infinite"), {"rows": float("inf"), "seconds": float("inf"), "mode": "blocking"})
    # Airflow stores a value pushed through XComModel.set as JSON text inside its JSON column.
    later = NOW + timedelta(seconds=1)
    _add_result(session, _dag_id("result_text"), json.dumps({"rows": 77, "seconds": 0.25, "mode": "blocking"}), later)
    _add_result(session, _dag_id("result_hostile"), {"rows": -5, "seconds": "1", "mode": "<img src=x>"}, later)
    _add_event(session, _dag_id("result_older"), {"rows": 3, "seconds": 1.5, "mode": "blocking"})
    _add_result(session, _dag_id("result_older"), {"rows": 99, "seconds": 9.0, "mode": "concurrently"}, NOW - BUDGET)
    latest = (
        select(TaskInstance.id)
        .where(TaskInstance.dag_id == _dag_id("state"))
        .order_by(TaskInstance.start_date.desc())
        .limit(1)
        .scalar_subquery()
    )
    session.execute(update(TaskInstance).where(TaskInstance.id == latest).values(state="<img src=x>"))
    _set_timetable(session, _dag_id("timetable"), ["not", "a", "timetable"])
    _set_timetable(session, _dag_id("timezone"), {"__type": "x", "__var": {"timezone": "<img src=x onerror=alert(1)>"}})
    session.execute(
        update(DagModel).where(DagModel.dag_id == _dag_id("summary")).values(timetable_summary="0 6 * * *\u202e")
    )
    session.execute(insert(DagTag.__table__).values(dag_id=_dag_id("summary"), name="line\nbreak"))
    _add_lag_state(session, "deadline", NOW - timedelta(minutes=10), "inf")  # not a number of seconds
    _add_lag_state(session, "queued_late", NOW - timedelta(minutes=10), BUDGET.total_seconds())
    # Not a key's name (as another writer of the state store may leave): no max_staleness, counted.
    _add_lag_state(session, "queued_recently", NOW - timedelta(minutes=2), BUDGET.total_seconds(), ["max_staleness"])
    _add_lag_state(session, "plain", None, BUDGET.total_seconds())
    _add_run(session, _dag_id("queued_late"), "queued", NOW - timedelta(minutes=10))
    _add_run(session, _dag_id("queued_recently"), "queued", NOW - timedelta(minutes=2))
    _add_run(session, _dag_id("failed_then_ok"), "failed", NOW - timedelta(minutes=12))
    _add_run(session, _dag_id("failed_then_ok"), "success", NOW - timedelta(minutes=11))


def _add_lag_state(
    session: Any, view: str, pending_since: datetime | None, alert_after: Any, alert_key: Any = "max_staleness"
) -> None:
    """What the lag monitor of connection ``warehouse`` stores for ``view``: measured now, a change not reflected
    since ``pending_since`` (none when ``None``), alerting at ``alert_after`` seconds (``alert_key``)."""
    from airflow.models.asset import AssetModel
    from airflow.models.asset_state_store import AssetStateStoreModel
    from sqlalchemy import insert, select

    from airflow_matview.assets import freshness_asset_uri

    uri = freshness_asset_uri("warehouse")
    asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri.in_([uri, f"{uri}/"])))  # Airflow adds "/"
    pending = [] if pending_since is None else [[pending_since.timestamp(), NOW.timestamp(), {"t": 1}]]
    state = {
        "view": f"{PREFIX}.{view}",
        "target": None,
        "alert_after": alert_after,
        "alert_key": alert_key,
        "stale_after": 120.0,
        "after": [],
        "record": {"pending": pending, "measured_at": NOW.timestamp(), "refreshed_at": NOW.timestamp() - 3600},
    }
    session.execute(
        insert(AssetStateStoreModel.__table__).values(
            asset_id=asset_id, key=f"lag:{PREFIX}.{view}", value=json.dumps(state), updated_at=NOW
        )
    )


@pytest.fixture(scope="module")
def document(airflow_db: Path) -> Iterator[dict[str, Any]]:
    from airflow.utils.session import create_session

    from airflow_matview.fleet.overview import as_json, load_fleet
    from devtools.harness.fleet_seed import seed_fleet, write_dags

    outcomes = {_dag_id(view): ["success", "success"] for view in VIEWS}
    seed_fleet(_config(), bundle="fleet-records-test", now=NOW, outcomes=outcomes)
    write_dags(_foreign_dags(), "fleet-records-foreign")
    with create_session() as session:
        _spoil(session)
    with create_session() as session:
        dag_ids = [
            *(_dag_id(view) for view in VIEWS),
            *(f"{PREFIX}_foreign_{number}" for number in range(len(FOREIGN_URIS))),
        ]
        found = as_json(load_fleet(session, dag_ids, now=NOW))
    yield dict(json.loads(json.dumps(found, allow_nan=False)))  # valid JSON, as a browser reads it
    # The metadata database is the test worker's: other tests read every DAG in it (`airflow dags list`), and a
    # spoiled serialized DAG fails them.
    from airflow.api.common.delete_dag import delete_dag

    for dag_id in dag_ids:
        delete_dag(dag_id)


def _views(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {view["dag_id"].removeprefix(f"matview.{PREFIX}."): view for view in document["views"]}


def test_foreign_matview_assets_are_skipped_and_counted_never_fatal(document: dict[str, Any]) -> None:
    views = _views(document)
    assert sorted(views) == sorted(VIEWS), "no foreign DAG listed, every view of ours listed"
    assert document["skipped"]["asset URI"] == len(FOREIGN_URIS) + 1, "six outlets and mixed's schedule asset"
    assert document["skipped_records"] == sum(document["skipped"].values())
    mixed = views["mixed"]
    assert (mixed["after"], mixed["other_assets"]) == ([], 1), "the s3:// asset is another kind, not an error"


def test_asset_event_extras_of_any_shape_give_no_value_of_the_wrong_type(document: dict[str, Any]) -> None:
    views = _views(document)
    for name in ("events_list", "events_text"):
        assert (views[name]["rows"], views[name]["mode"], views[name]["refresh_seconds"]) == (None, None, None)
    assert document["skipped"]["asset event extra"] == 2
    wrong = views["extra_types"]
    assert (wrong["rows"], wrong["refresh_seconds"], wrong["mode"]) == (None, None, None), "'12', -1, '<b>fast</b>'"
    infinite = views["extra_infinite"]
    assert (infinite["rows"], infinite["refresh_seconds"], infinite["mode"]) == (None, None, "blocking")
    # and result_hostile's three (test_a_return_value_newer_than_the_asset_event_gives_the_figures_and_is_checked)
    assert document["skipped"]["rows"] == 3 and document["skipped"]["seconds"] == 3 and document["skipped"]["mode"] == 2
    plain = views["plain"]
    assert isinstance(plain["rows"], int) and plain["mode"] == "concurrently", "a refresh's own event is kept"


def test_a_return_value_newer_than_the_asset_event_gives_the_figures_and_is_checked(document: dict[str, Any]) -> None:
    views = _views(document)
    shown = {name: (views[name]["rows"], views[name]["refresh_seconds"], views[name]["mode"]) for name in views}
    assert shown["result_text"] == (77, 0.25, "blocking"), "a value stored as JSON text is read"
    assert shown["result_hostile"] == (None, None, None), "-5, '1', '<img src=x>' are left out"
    assert shown["result_older"] == (3, 1.5, "blocking"), "the newer asset event wins over an older return value"


def test_states_timetables_summaries_and_tags_of_unexpected_shapes_are_left_out(document: dict[str, Any]) -> None:
    views = _views(document)
    assert views["state"]["last_state"] is None and views["state"]["recent_states"][-1] is None
    assert document["skipped"]["run state"] == 1
    assert (views["timetable"]["timezone"], document["skipped"]["timetable"]) == (None, 1)
    assert (views["timezone"]["timezone"], document["skipped"]["timezone"]) == (None, 1)
    assert views["summary"]["schedule"] == "" and document["skipped"]["schedule"] == 1
    assert views["summary"]["tags"] == ["checked", "matview"] and document["skipped"]["tag"] == 1
    assert views["plain"]["schedule"] == "@hourly" and views["plain"]["timezone"] == "UTC"


def test_over_budget_means_a_lag_over_max_staleness_as_the_monitor_stored_it(document: dict[str, Any]) -> None:
    views = _views(document)
    assert (views["deadline"]["max_staleness"], document["skipped"]["max_staleness"]) == (None, 1)
    late, recent = views["queued_late"], views["queued_recently"]
    assert (late["breached"], late["status"], late["lag_state"], late["lag"]) == (True, "stale", "over", 600.0)
    assert (recent["breached"], recent["status"], recent["lag_state"]) == (False, "fresh", "within")
    assert (recent["max_staleness"], document["skipped"]["alert key"]) == (None, 1)
    assert (late["pending_for"], recent["pending_for"]) == (600.0, 120.0), "runs waiting are still shown"
    assert views["failed_then_ok"]["pending_for"] is None, "a later run succeeded"
    plain = views["plain"]
    assert (plain["max_staleness"], plain["breached"], plain["status"], plain["lag"]) == (300.0, False, "fresh", 0.0)
    assert plain["staleness"] > 300, "its last refresh is older than max_staleness, and it reflects every change"
    assert views["summary"]["max_staleness"] is None, "a view the monitor stored nothing for: not measured"
