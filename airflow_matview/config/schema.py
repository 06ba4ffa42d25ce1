"""The config file's JSON Schema, generated from its model: ``airflow-matview schema`` prints it.

Editors that read JSON Schema (through a ``# yaml-language-server: $schema=...`` line, or their settings) then
complete the keys, show each key's description and flag a bad value as it is typed. The schema says what each key
accepts as far as JSON Schema can (see :mod:`.field_schemas`); ``airflow-matview validate`` checks the rest (crons
that never fire, time zones, ``after:`` naming views of the file, notifiers that can be imported...).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic.json_schema import GenerateJsonSchema

from airflow_matview.config.model import MatviewConfig, ViewConfig, ViewSettings

if TYPE_CHECKING:
    from pydantic_core import CoreSchema

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TITLE = "airflow-matview config"

_DESCRIPTIONS = {
    "ViewSettings": "Settings any view may have; `defaults:` sets them for every view.",
    "ViewConfig": "One materialized view to keep fresh: one DAG.",
}


class _Generator(GenerateJsonSchema):
    """Pydantic's generator, without the titles it makes of key names: each key's ``title`` is the kind of its
    value (a duration, a flag...), set by :mod:`.field_schemas`."""

    def field_title_should_be_set(self, schema: CoreSchema) -> bool:
        return False


def config_value(value: object) -> object:
    """A default as the config file writes it: ``timedelta(minutes=5)`` -> ``"5m"``, a tuple as a list.

    :param value: a default of the model.
    """
    if isinstance(value, timedelta):
        return duration_text(value)
    if isinstance(value, list | tuple):
        return [config_value(item) for item in value]
    return value


def duration_text(value: timedelta) -> str:
    """``value`` in the largest unit that holds it whole: ``1h``, ``5m``, ``10s``, ``500ms``."""
    milliseconds = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds and milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config file."""
    schema = MatviewConfig.model_json_schema(schema_generator=_Generator)
    for model in (ViewSettings, ViewConfig):
        definition = schema["$defs"][model.__name__]
        definition["description"] = _DESCRIPTIONS[model.__name__]
        for name, field in model.model_fields.items():
            if not field.is_required():
                definition["properties"][name]["default"] = config_value(field.get_default(call_default_factory=True))
    defaults = schema["properties"]["defaults"]
    defaults["anyOf"] = [{"$ref": defaults.pop("$ref")}, {"type": "null"}]  # `defaults:` with every line commented
    return {
        "$schema": DIALECT,
        "title": TITLE,
        "description": "The config file of airflow-matview's DAG file: the materialized views to keep fresh, one "
        "DAG each. `airflow-matview validate` checks what a schema cannot (crons that never fire, time zones, "
        "after: naming views of the file, notifiers that can be imported).",
        **{key: value for key, value in schema.items() if key not in ("title", "description")},
    }


def schema_text() -> str:
    """:func:`config_schema` as the JSON text ``airflow-matview schema`` prints (and the docs ship)."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
