"""Parse and display PostgreSQL object names such as ``public.sales`` or ``"Sales Report"."Q1 Totals"``."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from airflow_matview.exceptions import InvalidIdentifierError

MAX_IDENTIFIER_BYTES = 63
# PostgreSQL's scanner takes any non-ASCII character as an identifier character. Written as [^\x00-\x7f] rather
# than a \x80-\uffff range, which costs 8 ms to compile on every import (every DAG-file parse).
_UNQUOTED = re.compile(r"(?:[A-Za-z_]|[^\x00-\x7f])(?:[A-Za-z0-9_$]|[^\x00-\x7f])*")
_BARE_SAFE = re.compile(r"[a-z_][a-z0-9_$]*")
# What would break a line of output or reorder what a terminal shows: C0 and C1 controls, DEL, the line and
# paragraph separators and the bidirectional marks and overrides. PostgreSQL accepts all of them in quoted names.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class QualifiedName:
    """A relation name as PostgreSQL stores it (unquoted parts folded to lower case).

    :param schema: the schema, or ``None`` to search the connection's ``search_path``.
    :param name: the relation's name.
    """

    schema: str | None
    name: str

    def __str__(self) -> str:
        return _display(self.schema, self.name)


@functools.lru_cache(maxsize=65536)
def _display(schema: str | None, name: str) -> str:
    """``schema.name`` as SQL reads it back (cached: a DAG file shows each view's name several times)."""
    return quote_if_needed(name) if schema is None else f"{quote_if_needed(schema)}.{quote_if_needed(name)}"


def quote_if_needed(identifier: str) -> str:
    """Display ``identifier`` the way ``psql`` would: bare when that reads back the same, else quoted."""
    if _BARE_SAFE.fullmatch(identifier):
        return identifier
    return '"' + identifier.replace('"', '""') + '"'


def control_character(text: str) -> str | None:
    """The first character of ``text`` that would break a line of output or reorder it, if any."""
    match = _CONTROL.search(text)
    return match.group() if match else None


def printable(text: str) -> str:
    """``text`` with each such character written as its escape (``\\n``, ``\\x07``, ``\\u202e``), for messages."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def parse_qualified_name(text: str) -> QualifiedName:
    """Split ``name`` or ``schema.name`` following PostgreSQL's rules for identifiers.

    Unquoted parts are folded to lower case; double-quoted parts keep their case, spaces and dots,
    and ``""`` inside them stands for one double quote.

    :param text: the name as a user writes it in SQL.
    :raises InvalidIdentifierError: when ``text`` is not one or two valid identifiers.
    """
    if not isinstance(text, str):
        raise InvalidIdentifierError(f"expected a view name as text, got {type(text).__name__}: {text!r}")
    parts: list[str] = []
    position = 0
    while True:
        part, position = _read_identifier(text, position)
        parts.append(part)
        if position == len(text):
            break
        if text[position] != ".":
            raise InvalidIdentifierError(
                f"{text!r} is not a valid view name: unexpected {text[position]!r} at position {position + 1}. "
                'Write name or schema.name; quote parts with spaces or capitals, e.g. "Sales Report"."Q1 Totals".'
            )
        position += 1
    if len(parts) > 2:
        raise InvalidIdentifierError(
            f"{text!r} is not a valid view name: it has {len(parts)} dotted parts; write name or schema.name."
        )
    return QualifiedName(schema=parts[0], name=parts[1]) if len(parts) == 2 else QualifiedName(None, parts[0])


def _read_identifier(text: str, position: int) -> tuple[str, int]:
    if position < len(text) and text[position] == '"':
        chars: list[str] = []
        position += 1
        while position < len(text):
            char = text[position]
            if char == '"':
                if text[position + 1 : position + 2] == '"':
                    chars.append('"')
                    position += 2
                    continue
                identifier = "".join(chars)
                if not identifier:
                    raise InvalidIdentifierError(f'{text!r} is not a valid view name: "" is an empty identifier.')
                return _checked_length(text, identifier), position + 1
            chars.append(char)
            position += 1
        raise InvalidIdentifierError(f"{text!r} is not a valid view name: a double quote is never closed.")
    match = _UNQUOTED.match(text, position)
    if match is None:
        shown = text[position] if position < len(text) else "end of text"
        raise InvalidIdentifierError(
            f"{text!r} is not a valid view name: expected an identifier at position {position + 1}, found {shown!r}. "
            "Unquoted names start with a letter or underscore and hold only letters, digits, _ and $; "
            'quote anything else, e.g. "Sales Report"."Q1 Totals".'
        )
    return _checked_length(text, _fold_case(match.group())), match.end()


def _fold_case(identifier: str) -> str:
    """PostgreSQL folds only ASCII letters of unquoted identifiers to lower case."""
    return "".join(char.lower() if char.isascii() else char for char in identifier)


def _checked_length(text: str, identifier: str) -> str:
    if len(identifier.encode()) > MAX_IDENTIFIER_BYTES:
        raise InvalidIdentifierError(
            f"{text!r} is not a valid view name: {identifier[:20]!r}... is longer than PostgreSQL's "
            f"{MAX_IDENTIFIER_BYTES}-byte identifier limit, so PostgreSQL would truncate it."
        )
    return identifier
