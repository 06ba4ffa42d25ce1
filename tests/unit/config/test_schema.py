"""The config's JSON Schema (``airflow-matview schema``) against the config's own validation.

The schema must never refuse what ``airflow-matview validate`` accepts (an editor would flag a good file), and should
refuse what validate refuses as far as JSON Schema can say. Each value below is judged by both; the values only
validate can judge (a cron that never fires, a time zone that does not exist...) are listed as such.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from airflow_matview.cli.main import main as cli_main
from airflow_matview.config import field_schemas as schemas
from airflow_matview.config import load_config
from airflow_matview.config.schema import config_schema, duration_text, schema_text
from airflow_matview.config.yaml_reader import read_config_file
from airflow_matview.exceptions import InvalidConfigFileError


def _repo() -> Path:
    """The repository's root: the nearest folder above this file holding pyproject.toml."""
    return next(folder for folder in Path(__file__).resolve().parents if (folder / "pyproject.toml").is_file())


REPO = _repo()
SHIPPED = REPO / "docs" / "matviews.schema.json"
SMTP = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
NOTIFIER = {"notifier": SMTP, "to": "ops@example.com"}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(config_schema())


def schema_accepts(validator: jsonschema.Draft202012Validator, data: object) -> bool:
    return validator.is_valid(data)


def validate_accepts(data: dict[str, Any]) -> bool:
    try:
        load_config(data)
    except InvalidConfigFileError:
        return False
    return True


def test_shipped_schema_is_the_generated_one() -> None:
    assert SHIPPED.read_text(encoding="utf-8") == schema_text(), "docs/matviews.schema.json is stale: run make schema"


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(config_schema())


def test_the_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["schema"]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == (schema_text(), "")


def test_every_key_has_a_title_a_description_and_its_default() -> None:
    definitions = config_schema()["$defs"]
    for model in ("ViewSettings", "ViewConfig"):
        for key, schema in definitions[model]["properties"].items():
            assert schema.get("title") and schema.get("description"), (model, key)
            assert key in definitions[model].get("required", []) or "default" in schema, (model, key)
    settings = definitions["ViewSettings"]["properties"]
    assert settings["retry_delay"]["default"] == "5m"
    assert settings["execution_timeout"]["default"] == "1h"
    assert settings["tags"]["default"] == ["matview"]
    assert settings["on_failure"]["default"] == []


def test_the_defaults_in_the_schema_are_accepted_by_both(validator: jsonschema.Draft202012Validator) -> None:
    settings = config_schema()["$defs"]["ViewSettings"]["properties"]
    defaults = {key: schema["default"] for key, schema in settings.items()}
    # poll_interval and min_interval are refused where no view watches its sources.
    config = {"defaults": defaults, "views": [{"name": "public.v", "on_change": True}]}
    assert validate_accepts(config)
    assert schema_accepts(validator, config)


@pytest.mark.parametrize(
    ("seconds", "text"), [(300, "5m"), (3600, "1h"), (10, "10s"), (0.5, "500ms"), (86400, "1d"), (90, "90s")]
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(timedelta(seconds=seconds)) == text


def test_every_time_zone_matches_the_pattern() -> None:
    pattern = schemas.TIMEZONE["pattern"]
    zones = zoneinfo.available_timezones() - {"localtime", "posixrules", "Factory"}
    assert zones
    assert [zone for zone in zones if not re.search(pattern, zone)] == []


# --- one key, many values: (key, value, verdict). verdict: True both accept, False both refuse, "validate" the schema
# accepts and only validate refuses (JSON Schema cannot say).
ONLY_VALIDATE = "validate"
VALUES: list[tuple[str, object, bool | str]] = [
    # flags
    *[("analyze", value, True) for value in (True, False, "true", "FALSE", " True ", "tRuE")],
    *[("analyze", value, False) for value in ("yes", "on", 1, 0, None, "", "truthy", [True])],
    *[("skip_if_unchanged", value, True) for value in (True, "false")],
    *[("deferrable", value, False) for value in ("no", 1.0)],
    # concurrently
    *[("concurrently", value, True) for value in ("auto", "AUTO", " Auto ", True, "false", "True")],
    *[("concurrently", value, False) for value in ("maybe", 1, None, "", "auto-ish")],
    # counts
    *[("retries", value, True) for value in (0, 2, 1000, "3", " 3 ", "+3", "-0", "01000", "000000000003")],
    *[("retries", value, False) for value in (1001, -1, "1001", "-1", 2.5, True, "three", "1e3", None, "١٢")],
    ("retries", "0000000000001", False),  # 13 digits: refused before being read as a number
    ("retries", 2.0, ONLY_VALIDATE),  # JSON has one number type: 2.0 is the integer 2
    *[("pool_slots", value, True) for value in (1, "2", 2**31 - 1, "0002")],
    *[("pool_slots", value, False) for value in (0, -1, "0", 2**31, True, None, "two")],
    ("pool_slots", "2147483648", ONLY_VALIDATE),
    *[("priority_weight", value, True) for value in (-5, "-5", 10, "+7", -(2**31))],
    *[("priority_weight", value, False) for value in (2**31, "x", None, 1.5)],
    ("priority_weight", "-2147483649", ONLY_VALIDATE),
    # durations
    *[
        ("retry_delay", value, True)
        for value in (0, 90, 1.5, "90", "500ms", "5M", " 5 m ", "1.5h", "3650d", "2D", 315360000, "0")
    ]
    + [
        ("retry_delay", value, False)
        for value in (315360001, -1, "-1s", "5 minutes", None, True, "1:30", "", ".5", "5.", "1e3", "5mm")
    ],
    ("retry_delay", "3651d", ONLY_VALIDATE),
    *[("lock_timeout", value, True) for value in (None, "30s", 0.001, 1, "1ms")],
    *[("lock_timeout", value, False) for value in (0, 0.0005, -1, "never")],
    ("lock_timeout", "0", ONLY_VALIDATE),
    ("lock_timeout", "0.1ms", ONLY_VALIDATE),
    *[("execution_timeout", value, True) for value in (None, "1h", 3600)],
    ("execution_timeout", 0, False),
    *[("poll_interval", value, True) for value in ("1s", 1.5)],
    *[("poll_interval", value, False) for value in (0, 0.5, None)],
    ("poll_interval", "500ms", ONLY_VALIDATE),  # at least 1s: JSON Schema cannot read the unit
    *[("min_interval", value, True) for value in (0, "0", "1m")],
    ("min_interval", None, False),
    # names and text
    *[("pool", value, True) for value in (None, "pg_main", "a" * 256, "a.b-c_1")],
    *[("pool", value, False) for value in ("a" * 257, "bad name", "", 5, ["pg_main"])],
    *[("queue", value, True) for value in (None, "refreshes")],
    ("queue", "a/b", False),
    *[("description", value, True) for value in (None, "text", "a\nb", "a\tb\r\n", "x" * 1000, "café ü")],
    *[("description", value, False) for value in ("x" * 1001, "bell\x07", "evil\u202e", "nul\x00", 5, ["a"])],
    *[("owner", value, True) for value in ("team", "x" * 500, "Data Platform")],
    *[("owner", value, False) for value in ("", " ", "x" * 501, "a\tb", "a\nb", 5, None)],
    *[("tags", value, True) for value in (["a"], [], ["x" * 100], ["two words"])],
    *[("tags", value, False) for value in ([""], [" "], ["x" * 101], ["a\nb"], "matview", [5], None)],
    *[("conn_id", value, True) for value in ("postgres_default", "my.conn-1", "x" * 250)],
    *[
        ("conn_id", value, False)
        for value in ("postgresql://u:p@h/db", "host=h password=p", "", "x" * 251, 5, None, "a b", "u@h")
    ],
    *[("timezone", value, True) for value in ("UTC", "Europe/Berlin", " Europe/Berlin ", "Etc/GMT+5")],
    *[("timezone", value, False) for value in ("", " ", 5, None, "Europe/Berlin!")],
    *[("timezone", value, ONLY_VALIDATE) for value in ("Europe/Berln", "EST", "PST", "localtime")],
    # schedules
    *[
        ("schedule", value, True)
        for value in ("@daily", "@annually", None, "*/5 * * * *", "0 3 * * 1-5", "30 2 * * MON", " 0 3 * * * ")
    ],
    *[("schedule", value, False) for value in ("@DAILY", "every day", "* * * *", "0\t3 * * *", 5, "", "@every 5m")],
    *[("schedule", value, ONLY_VALIDATE) for value in ("0 0 31 2 *", "0 3-3 * * *", "R 3 * * *", "61 * * * *")],
    # choices
    *[("on_overlap", value, True) for value in ("wait", "skip", "fail")],
    *[("on_overlap", value, False) for value in ("WAIT", None, "queue", True)],
    # notifiers
    *[("on_failure", value, True) for value in ([], None, [NOTIFIER], [{**NOTIFIER, "notifier": f" {SMTP} "}])],
    *[
        ("on_success", value, False)
        for value in (
            [{"to": "ops@example.com"}],
            [{"notifier": "not a path"}],
            [{"notifier": "https://hooks.example.com/x"}],
            "ops@example.com",
            [5],
            NOTIFIER,
        )
    ],
    *[
        ("on_retry", value, ONLY_VALIDATE)
        for value in (
            [{"notifier": "no_such_package.notifiers.Thing"}],
            [{**NOTIFIER, "unknown_argument": 1}],
            [{**NOTIFIER, "to": "https://user:secret@example.com/"}],
            # Where a credential may sit is a rule of words and shapes (config/notifier_secrets.py), not a pattern.
            [{**NOTIFIER, "password": "hunter2"}],
            [{**NOTIFIER, "smtp_api_key": "k"}],
            [{**NOTIFIER, "Authorization": "Bearer x"}],
        )
    ],
    # keys of one view
    *[("name", value, True) for value in ("public.v", 'public."MixedCase"', '"Sales Report"."Q1 Totals"', "s.café")],
    *[("name", value, True) for value in ("public.v$1", 'public."a""b"', "_s._v")],
    *[
        ("name", value, False)
        for value in ("public.MixedCase", "v", "a.b.c", 'public."a\nb"', "public.1v", "public.", 'public.""', 5)
    ],
    ("name", '"Sales Report.Q1 Totals"', False),
    ("name", "public." + "a" * 64, ONLY_VALIDATE),  # longer than PostgreSQL's 63 bytes
    *[("dag_id", value, True) for value in (None, "rollup", "x" * 250)],
    *[("dag_id", value, False) for value in ("bad id", "", "x" * 251, 5)],
    *[("after", value, True) for value in ([], ["public.base"])],
    *[("after", value, False) for value in (["public.MixedCase"], "public.base", None, [5])],
    ("after", ["public.not_in_the_file"], ONLY_VALIDATE),
    # keys that do not exist
    ("bogus", 1, False),
    ("schedule_interval", "@daily", False),
]
ON_A_VIEW_ONLY = {"name", "after", "dag_id"}


def _config(key: str, value: object) -> dict[str, Any]:
    view: dict[str, Any] = {"name": "public.v", key: value}
    views = [view, {"name": "public.base"}]
    return {"views": views}


@pytest.mark.parametrize(("key", "value", "verdict"), VALUES, ids=[f"{k}={v!r}"[:60] for k, v, _ in VALUES])
def test_schema_and_validate_agree_on_each_value(
    validator: jsonschema.Draft202012Validator, key: str, value: object, verdict: bool | str
) -> None:
    config = _config(key, value)
    if key == "name":
        config["views"][0]["name"] = value
    watched = {"on_change": True} if key in ("poll_interval", "min_interval") else {}  # refused without on_change
    config["views"][0].update(watched)
    judged = (schema_accepts(validator, config), validate_accepts(config))
    expected = (True, False) if verdict == ONLY_VALIDATE else (verdict, verdict)
    assert judged == expected, "(schema, validate)"
    if key not in ON_A_VIEW_ONLY and verdict is not ONLY_VALIDATE:  # the same in defaults:
        in_defaults = {"defaults": {key: value}, "views": [{"name": "public.v", **watched}]}
        assert (schema_accepts(validator, in_defaults), validate_accepts(in_defaults)) == expected


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        *[(value, True) for value in (None, 1, "20s", "2h")],
        *[(value, False) for value in (0.5, -1, "soon")],
        *[(value, ONLY_VALIDATE) for value in ("500ms", "0s")],
    ],
)
def test_schema_and_validate_agree_on_max_staleness(
    validator: jsonschema.Draft202012Validator, value: object, verdict: bool | str
) -> None:
    config = {"views": [{"name": "public.v", "on_failure": [NOTIFIER], "max_staleness": value}]}
    expected = (True, False) if verdict == ONLY_VALIDATE else (verdict, verdict)
    assert (schema_accepts(validator, config), validate_accepts(config)) == expected


# --- whole files, as YAML: each good one accepted by both, each bad one refused by both.
GOOD_FILES = {
    "minimal": "views:\n  - name: public.v\n",
    "commented-out defaults": "defaults:\n  # conn_id: other\nviews:\n  - name: public.v\n",
    "every kind of value": """
defaults:
  conn_id: warehouse
  schedule: "30 2 * * *"
  timezone: Europe/Berlin
  concurrently: "True"
  retries: "3"
  retry_delay: 90
  retry_exponential_backoff: true
  execution_timeout: null
  lock_timeout: 500ms
  analyze: FALSE
  on_overlap: skip
  tags: [reports, "2024"]
  owner: data-team
  pool: pg_main
  pool_slots: 2
  priority_weight: -1
  queue: refreshes
  on_failure:
    - notifier: airflow.providers.smtp.notifications.smtp.SmtpNotifier
      to: ops@example.com
      smtp_conn_id: smtp_default
      subject: "{{ matview.view }} failed"
views:
  - name: public.base
    description: |
      The base view.
      Two lines.
  - name: '"Sales Report"."Q1 Totals"'
    after: [public.base]
    dag_id: q1_totals
    skip_if_unchanged: true
    deferrable: "false"
  - name: public.watched
    on_change: true
    poll_interval: 2s
    min_interval: 0
""",
    "merge keys": """
defaults: &common
  retries: 1
views:
  - <<: *common
    name: public.v
    retries: 2
""",
}
BAD_FILES = {
    "an anchor's home as a key": "common: &common\n  retries: 1\nviews:\n  - <<: *common\n    name: public.v\n",
    "no views": "defaults:\n  retries: 1\n",
    "empty views": "views: []\n",
    "views is a mapping": "views:\n  name: public.v\n",
    "a list, not a mapping": "- name: public.v\n",
    "unknown key": "views:\n  - name: public.v\n    retry: 3\n",
    "unknown top-level key": "views:\n  - name: public.v\nview:\n  - name: public.w\n",
    "name in defaults": "defaults:\n  name: public.v\nviews:\n  - name: public.w\n",
    "YAML 1.1 boolean": "views:\n  - name: public.v\n    analyze: yes\n",
    "underscored number": "views:\n  - name: public.v\n    retries: 1_000\n",
    "sexagesimal": "views:\n  - name: public.v\n    retry_delay: 1:30\n",
    "bad duration unit": "views:\n  - name: public.v\n    lock_timeout: 5 minutes\n",
    "negative duration": "views:\n  - name: public.v\n    retry_delay: -5\n",
    "zero lock timeout": "views:\n  - name: public.v\n    lock_timeout: 0\n",
    "capitals outside quotes": "views:\n  - name: public.MixedCase\n",
    "no schema": "views:\n  - name: polls\n",
    "URI as conn_id": "defaults:\n  conn_id: postgresql://user:secret@db/app\nviews:\n  - name: public.v\n",
    "four cron fields": 'views:\n  - name: public.v\n    schedule: "0 3 * *"\n',
    "preset in capitals": 'views:\n  - name: public.v\n    schedule: "@Daily"\n',
    "tag too long": f"views:\n  - name: public.v\n    tags: [{'x' * 101}]\n",
    "blank owner": 'views:\n  - name: public.v\n    owner: " "\n',
    "bad on_overlap": "views:\n  - name: public.v\n    on_overlap: queue\n",
    "notifier without path": "views:\n  - name: public.v\n    on_failure:\n      - to: ops@example.com\n",
    "pool with a space": "views:\n  - name: public.v\n    pool: main pool\n",
    "no slots": "views:\n  - name: public.v\n    pool_slots: 0\n",
    "description with a bell": 'views:\n  - name: public.v\n    description: "ring\\a"\n',
}


def _judge_file(validator: jsonschema.Draft202012Validator, path: Path) -> tuple[bool, bool]:
    data = read_config_file(path)
    return schema_accepts(validator, data), cli_main(["validate", str(path)]) == 0


@pytest.mark.parametrize("name", list(GOOD_FILES))
def test_good_files_pass_both(
    validator: jsonschema.Draft202012Validator, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(GOOD_FILES[name], encoding="utf-8")
    assert _judge_file(validator, path) == (True, True), capsys.readouterr().err


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_files_fail_both(validator: jsonschema.Draft202012Validator, tmp_path: Path, name: str) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(BAD_FILES[name], encoding="utf-8")
    assert _judge_file(validator, path) == (False, False)


def test_the_shipped_config_passes_both_and_names_the_shipped_schema(
    validator: jsonschema.Draft202012Validator,
) -> None:
    path = REPO / "dags" / "matviews.yaml"
    assert (
        path.read_text(encoding="utf-8").splitlines()[0]
        == "# yaml-language-server: $schema=../docs/matviews.schema.json"
    )
    assert (path.parent / "../docs/matviews.schema.json").resolve() == SHIPPED
    assert _judge_file(validator, path) == (True, True)
