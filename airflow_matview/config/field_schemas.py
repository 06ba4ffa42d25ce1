"""The JSON Schema of each config key: what its parser in :mod:`.fields` accepts, as far as JSON Schema can say.

A schema here may accept a value its parser refuses (a cron that never fires, a time zone that does not exist, a
count past 2**31 - 1) but never refuses one its parser accepts, so an editor checking the file against the schema
(``airflow-matview schema``) never flags a config that ``airflow-matview validate`` passes. Each schema's
``title`` names the kind of value; the config reference shows it as the key's type.

Patterns are written for both regex dialects that read them: ECMA 262 (editors) and Python's ``re`` (the
``jsonschema`` package), so no flags: a case-insensitive word is spelt with a class per letter.
"""

from __future__ import annotations

from typing import Any

from airflow_matview.config.fields import MAX_RETRIES, OWNER_MAX_LEN, SCHEDULE_PRESETS, TAG_MAX_LEN
from airflow_matview.config.notifier_specs import _DOTTED_PATH

JsonSchema = dict[str, Any]

# What fields.parse_duration refuses: more than ten years (3650 days).
_MAX_SECONDS = 10 * 365 * 86400
_INT32 = 2**31 - 1
# The characters airflow_matview.database.identifiers.control_character refuses, as the inside of a class: C0 and
# C1 controls, DEL, and the line separators and bidirectional marks above them.
_C0 = r"\x00-\x1f"
_C1_AND_ABOVE = r"\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_CONTROL = _C0 + _C1_AND_ABOVE


def any_case(pattern: str) -> str:
    """``pattern`` with each ASCII letter matching either case (``ms`` -> ``[mM][sS]``), for regex dialects without a
    case flag.

    :param pattern: a regex whose letters are all literal (no escapes such as ``\\s``).
    """
    return "".join(f"[{char.lower()}{char.upper()}]" if char.isascii() and char.isalpha() else char for char in pattern)


def _words(*words: str) -> str:
    """A pattern matching one of ``words`` in any case, with white space around it (the parsers strip it)."""
    return r"^\s*(" + any_case("|".join(words)) + r")\s*$"


def _text(title: str, pattern: str, **extra: Any) -> JsonSchema:
    return {"title": title, "type": "string", "pattern": pattern, **extra}


def nullable(schema: JsonSchema) -> JsonSchema:
    """``schema`` or ``null``, titled ``<title> or null``.

    :param schema: a schema with a ``title``.
    """
    inner = {key: value for key, value in schema.items() if key != "title"}
    choices = inner["anyOf"] if list(inner) == ["anyOf"] else [inner]
    return {"title": f"{schema['title']} or null", "anyOf": [*choices, {"type": "null"}]}


FLAG: JsonSchema = {
    "title": "flag",
    "anyOf": [{"type": "boolean"}, {"type": "string", "pattern": _words("true", "false")}],
}

CONCURRENTLY: JsonSchema = {
    "title": "auto or flag",
    "anyOf": [{"type": "boolean"}, {"type": "string", "pattern": _words("auto", "true", "false")}],
}

# A number with an optional unit, as fields.parse_duration reads it after strip() and lower().
_DURATION_TEXT = r"^\s*[0-9]+(\.[0-9]+)?\s*(" + any_case("ms|s|m|h|d") + r")?\s*$"


def duration(*, minimum: float = 0) -> JsonSchema:
    """A duration: a number of seconds, or text such as ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, ``90``.

    :param minimum: the least number of seconds allowed (text is not bounded: JSON Schema cannot read units).
    """
    return {
        "title": "duration",
        "anyOf": [
            {"type": "number", "minimum": minimum, "maximum": _MAX_SECONDS},
            {"type": "string", "pattern": _DURATION_TEXT},
        ],
    }


def _digits(pattern: str) -> str:
    """A whole number written as text: at most 12 ASCII digits (fields.whole_number), further bound by ``pattern``
    (applied after the white space)."""
    return r"^\s*(?=[-+]?[0-9]{1,12}\s*$)(" + pattern + r")\s*$"


def count(title: str, *, minimum: int, maximum: int, text: str) -> JsonSchema:
    """A whole number, written ``3`` or ``"3"``.

    :param title: what the number counts.
    :param minimum: the least value.
    :param maximum: the greatest value.
    :param text: the pattern of its digits as text (see :func:`_digits`).
    """
    return {
        "title": title,
        "anyOf": [
            {"type": "integer", "minimum": minimum, "maximum": maximum},
            {"type": "string", "pattern": _digits(text)},
        ],
    }


RETRIES = count("count", minimum=0, maximum=MAX_RETRIES, text=r"\+?0*([0-9]{1,3}|" + str(MAX_RETRIES) + r")|-0+")
POOL_SLOTS = count("count", minimum=1, maximum=_INT32, text=r"\+?0*[1-9][0-9]{0,9}")
PRIORITY_WEIGHT = count("whole number", minimum=-_INT32 - 1, maximum=_INT32, text=r"[-+]?0*[0-9]{1,10}")

_AIRFLOW_ID = r"^[A-Za-z0-9_.-]{1,250}$"
CONN_ID = _text("connection id", _AIRFLOW_ID)
DAG_ID = _text("DAG id", _AIRFLOW_ID)
POOL_OR_QUEUE = _text("name", r"^[A-Za-z0-9_.-]{1,256}$")

_BLANK = rf"[^\S{_CONTROL}]+"
_CRON_FIELD = rf"[^\s{_CONTROL}]+"
SCHEDULE: JsonSchema = {
    "title": "schedule",
    "anyOf": [
        {"type": "string", "enum": [*SCHEDULE_PRESETS, "@annually"]},
        # Five cron fields apart by white space other than a control character (a tab, a line break); whether they
        # fire at predictable times only the config's validation can tell.
        {"type": "string", "pattern": rf"^({_BLANK})?{_CRON_FIELD}({_BLANK}{_CRON_FIELD}){{4}}({_BLANK})?$"},
        {"type": "null"},
    ],
}

ON_OVERLAP: JsonSchema = {"title": "wait, skip or fail", "type": "string", "enum": ["wait", "skip", "fail"]}


def one_line_text(title: str, max_length: int) -> JsonSchema:
    """Text that is not blank, holds no control character and has at most ``max_length`` characters."""
    return _text(title, rf"^[^{_CONTROL}]*[^\s{_CONTROL}][^{_CONTROL}]*$", maxLength=max_length)


TAGS: JsonSchema = {"title": "list of tags", "type": "array", "items": one_line_text("tag", TAG_MAX_LEN)}
OWNER = one_line_text("text", OWNER_MAX_LEN)

# Line breaks and tabs are allowed in a description; other control characters are not.
DESCRIPTION = _text("text", rf"^[^\x00-\x08\x0b\x0c\x0e-\x1f{_C1_AND_ABOVE}]*$", maxLength=1000)

# The names of the IANA database start with a letter and hold letters, digits, _ + - and /.
TIMEZONE = _text("time zone", r"^\s*[A-Za-z][A-Za-z0-9_+/-]*\s*$")

NOTIFIERS: JsonSchema = {
    "title": "list of notifiers",
    "type": "array",
    "items": {
        "type": "object",
        "required": ["notifier"],
        "properties": {
            "notifier": {
                "type": "string",
                "description": "Dotted path of an Airflow BaseNotifier subclass, or of a function called with the "
                "task context and the other keys.",
                "pattern": rf"^\s*({_DOTTED_PATH.pattern})\s*$",
            }
        },
        "additionalProperties": True,
    },
}

# One part of a view name as SQL writes it: unquoted (lower case: capitals fold, and the config refuses them
# outside quotes) or double-quoted ("" is one quote inside); no control character either way.
_NON_ASCII = rf"[^\x00-\x7f{_C1_AND_ABOVE}]"
_UNQUOTED_PART = rf"([a-z_]|{_NON_ASCII})([a-z0-9_$]|{_NON_ASCII})*"
_QUOTED_PART = rf'"([^"{_CONTROL}]|"")+"'
_PART = f"({_UNQUOTED_PART}|{_QUOTED_PART})"
VIEW_NAME = _text("view name", rf"^{_PART}\.{_PART}$")
HISTORY_TABLE = _text("table name", rf"^{_PART}\.{_PART}$")
VIEW_NAMES: JsonSchema = {"title": "list of view names", "type": "array", "items": VIEW_NAME}
