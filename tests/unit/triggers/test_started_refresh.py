"""start_from_trigger as the config, the factory and the operator set it up: what the scheduler starts the task with,
and the one-line refusals where it cannot work (no server, no Airflow run)."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_matview import RefreshMaterializedViewOperator
from airflow_matview.config import InvalidConfigFileError, load_config
from airflow_matview.exceptions import MatviewSetupError
from airflow_matview.factory import build_dags
from airflow_matview.triggers.started_refresh import CLASSPATH, StartedRefreshTrigger
from airflow_matview.version_compat import require

OLD_AIRFLOW = require("start_from_trigger", "3.3", "3.2.2")
NOTIFIER = {"notifier": "devtools.harness.recording_notifier.record", "label": "ok"}


def config(**defaults: Any) -> dict[str, Any]:
    return {
        "defaults": {"start_from_trigger": True, **defaults},
        "views": [
            {"name": "public.upstream"},
            {"name": "public.follower", "after": ["public.upstream"]},
            {"name": "public.lone", "on_success": [NOTIFIER]},
            {"name": "public.on_worker", "start_from_trigger": False},
        ],
    }


def trigger_kwargs(dags: dict[str, Any], view: str) -> dict[str, Any]:
    task = dags[f"matview.public.{view}"].get_task("refresh")
    assert task.start_from_trigger is True
    assert task.start_trigger_args.trigger_cls == CLASSPATH
    assert task.start_trigger_args.next_method == "execute_complete"
    return dict(task.start_trigger_args.trigger_kwargs)


def test_the_factory_starts_the_task_in_the_triggerer_with_the_operators_arguments() -> None:
    dags = build_dags(config())
    kwargs = trigger_kwargs(dags, "lone")
    assert kwargs["view"] == "public.lone"
    assert kwargs["concurrently"] == "{{ params.concurrently }}", "templated: the triggerer renders it"
    assert kwargs["analyze"] == "{{ params.analyze }}"
    assert kwargs["execution_timeout"] == 3600.0 and kwargs["lock_timeout"] == 60.0
    assert kwargs["notifiers"] == [NOTIFIER]
    assert kwargs["finish_on_worker"] is False
    assert StartedRefreshTrigger(**kwargs).serialize() == (CLASSPATH, kwargs), "the triggerer rebuilds it as it was"
    assert not dags["matview.public.on_worker"].get_task("refresh").start_from_trigger


def test_a_view_another_view_follows_is_finished_on_a_worker_for_its_asset_event() -> None:
    dags = build_dags(config())
    assert trigger_kwargs(dags, "upstream")["finish_on_worker"] is True
    assert trigger_kwargs(dags, "follower")["finish_on_worker"] is False
    assert trigger_kwargs(build_dags(config(finish_on_worker=True)), "lone")["finish_on_worker"] is True


def test_start_trigger_args_survive_serialization() -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    dag = build_dags(config())["matview.public.lone"]
    task = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("refresh")
    assert task.start_from_trigger is True
    assert task.start_trigger_args.trigger_cls == CLASSPATH


def test_a_callback_of_its_own_makes_a_worker_finish_and_a_skipped_callback_a_worker_skip() -> None:
    def mine(context: Any) -> None:
        pass

    kwargs = RefreshMaterializedViewOperator(
        task_id="refresh", view="public.v", start_from_trigger=True, on_success_callback=mine
    ).start_trigger_args.trigger_kwargs
    assert (kwargs["finish_on_worker"], kwargs["skip_on_worker"], kwargs["notifiers"]) == (True, False, [])
    kwargs = RefreshMaterializedViewOperator(
        task_id="refresh", view="public.v", start_from_trigger=True, on_skipped_callback=mine
    ).start_trigger_args.trigger_kwargs
    assert (kwargs["finish_on_worker"], kwargs["skip_on_worker"]) == (False, True)


def test_a_pool_is_refused_with_start_from_trigger_in_one_line() -> None:
    with pytest.raises(InvalidConfigFileError) as error:
        load_config(config(pool="matview_main"))
    lines = str(error.value).splitlines()[1:]
    assert len(lines) == 3, "one line per view that starts in the triggerer (the fourth does not)"
    assert lines[0] == (
        "  - views[0] (public.upstream): pool: matview_main cannot be combined with start_from_trigger: Airflow "
        "applies no pool to a task that starts in the triggerer (the scheduler defers it before it checks pools); "
        "remove pool (the triggerer opens at most [matview] triggerer_max_connections connections per conn_id) or "
        "start_from_trigger"
    )
    refused = r"start_from_trigger: Airflow applies no pool .* pool 'matview_main'"
    with pytest.raises(MatviewSetupError, match=refused):
        RefreshMaterializedViewOperator(task_id="r", view="public.v", start_from_trigger=True, pool="matview_main")


def test_an_older_airflow_is_refused_in_one_line_naming_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow_matview.config.model as model
    import airflow_matview.operators.materialized_view as operator_module

    monkeypatch.setattr(model, "START_FROM_TRIGGER_MISSING", OLD_AIRFLOW)
    monkeypatch.setattr(operator_module, "START_FROM_TRIGGER_MISSING", OLD_AIRFLOW)
    with pytest.raises(InvalidConfigFileError) as error:
        load_config({"views": [{"name": "public.v", "start_from_trigger": True}]})
    assert str(error.value).splitlines()[1:] == [
        "  - views[0] (public.v): start_from_trigger needs Apache Airflow 3.3 or newer, and this is Airflow 3.2.2: "
        "upgrade Airflow (with its constraints file) or remove the setting"
    ]
    with pytest.raises(MatviewSetupError, match=r"start_from_trigger: start_from_trigger needs Apache Airflow 3\.3"):
        RefreshMaterializedViewOperator(task_id="refresh", view="public.v", start_from_trigger=True)
    load_config({"views": [{"name": "public.v", "start_from_trigger": False}]})  # off: nothing to refuse


def test_openlineage_in_the_triggerer_makes_a_worker_finish_the_success(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a worker's task runner emits OpenLineage events: with a transport set, successes go to a worker."""
    kwargs = trigger_kwargs(build_dags(config()), "follower")
    trigger = StartedRefreshTrigger(**kwargs)
    monkeypatch.delenv("AIRFLOW__OPENLINEAGE__TRANSPORT", raising=False)
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "False")
    assert trigger._why_worker() is None
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", '{"type": "console"}')
    assert trigger._why_worker() == "OpenLineage reports its lineage"
    monkeypatch.setenv(
        "AIRFLOW__OPENLINEAGE__DISABLED_FOR_OPERATORS",
        "airflow_matview.operators.materialized_view.RefreshMaterializedViewOperator",
    )
    assert trigger._why_worker() is None
