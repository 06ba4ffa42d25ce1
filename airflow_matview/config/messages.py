"""The wording of config errors: each of pydantic's errors as one line naming the file's place, the key and the fix
(with a "did you mean" for an unknown key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_matview.database.identifiers import printable

if TYPE_CHECKING:
    from pydantic import BaseModel

_LIST_EXAMPLES = {"views": "- name: schema.view", "after": "after: [public.a]", "tags": "tags: [reporting]"}


def describe_error(error: Mapping[str, Any], data: object, levels: Mapping[str, type[BaseModel]]) -> str:
    """One line for one of pydantic's errors, e.g. ``views[0] (public.a): retries: 'x' is not a whole number ...``.

    :param error: the error, as ``ValidationError.errors()`` lists it.
    :param data: the file's data, to name the view by its ``name:``.
    :param levels: the models of each level, by place (``file``, ``defaults``, ``views``), for unknown keys.
    """
    where, location = _place(list(error["loc"]), data)
    key = ".".join(str(part) for part in location)
    message = _message(error, where, location, key, levels)
    return f"{where}: {key}: {message}" if key else f"{where}: {message}"


def _place(location: list[Any], data: object) -> tuple[str, list[Any]]:
    """Where in the file: ``file``, ``defaults`` or ``views[i] (name)``, and the key's path below it."""
    if location[:1] == ["views"] and len(location) > 1 and isinstance(location[1], int):
        index = location[1]
        views = data.get("views") if isinstance(data, Mapping) else None
        raw = views[index] if isinstance(views, list) and index < len(views) else None
        name = raw.get("name") if isinstance(raw, Mapping) else None
        return f"views[{index}]" + (f" ({printable(str(name))})" if name else ""), location[2:]
    if location[:1] == ["defaults"]:
        return "defaults", location[1:]
    return "file", location


def _message(
    error: Mapping[str, Any], where: str, location: list[Any], key: str, levels: Mapping[str, type[BaseModel]]
) -> str:
    kind, given = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(where, location, levels)
    if kind == "too_short" and key == "views":
        return "no views configured; list at least one under 'views:'"
    if kind == "missing":
        return "required key is missing"
    if kind in ("model_type", "dict_type"):
        if where.startswith("views["):
            return (
                f"{repr(given)[:60]} is not a mapping; write each view as '- name: schema.view' with its keys below it"
            )
        return f"{repr(given)[:60]} is not a mapping; write one 'key: value' per line under it"
    if kind == "string_type" and isinstance(given, bool | int | float):
        what = "a boolean" if isinstance(given, bool) else "a number"
        return f"YAML reads this value unquoted as {what}, {given!r}; quote it to keep it as text"
    if kind == "time_delta_type" and given is None:
        return "is empty (null); write a duration such as 5m, or leave the key out for its default"
    if kind == "string_type" and given is None:
        item = location and isinstance(location[-1], int)
        return "is empty (null); write a value, " + (
            "or remove the item" if item else "or leave the key out for its default"
        )
    if kind == "string_type":
        return f"{repr(given)[:60]} is not text; write one value, e.g. {key.split('.')[0]}: text"
    if kind == "list_type":
        example = _LIST_EXAMPLES.get(key, key + ": [...]")
        tail = " for each view, one per line under 'views:'" if key == "views" else ""
        return f"{repr(given)[:60]} is not a list; write e.g. {example!r}{tail}"
    return str(error["msg"]).removeprefix("Value error, ")


def _unknown_key(where: str, location: list[Any], levels: Mapping[str, type[BaseModel]]) -> str:
    level = levels.get(where, levels["views"])
    import difflib  # only to suggest a key: not imported at parse time

    close = difflib.get_close_matches(str(location[-1]), list(level.model_fields), n=1) if location else []
    message = "unknown key; " + (f"did you mean {close[0]}? " if close else "")
    message += f"allowed keys {'at the top level ' if where == 'file' else ''}are "
    return message + ", ".join(sorted(level.model_fields))
