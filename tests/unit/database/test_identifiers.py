from __future__ import annotations

import pytest

from airflow_matview.database.identifiers import QualifiedName, parse_qualified_name
from airflow_matview.exceptions import InvalidIdentifierError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("polls_user_matt_view", QualifiedName(None, "polls_user_matt_view")),
        ("public.polls_user_matt_view", QualifiedName("public", "polls_user_matt_view")),
        ("Public.Polls", QualifiedName("public", "polls")),
        ('"Sales Report"."Q1 Totals"', QualifiedName("Sales Report", "Q1 Totals")),
        ('"a.b"', QualifiedName(None, "a.b")),
        ('"say ""hi"""', QualifiedName(None, 'say "hi"')),
        ("_x$1", QualifiedName(None, "_x$1")),
        ("ÜberSicht", QualifiedName(None, "Übersicht")),
    ],
)
def test_valid_names_are_parsed_like_postgresql(text: str, expected: QualifiedName) -> None:
    assert parse_qualified_name(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x; DROP TABLE polls_user", "unexpected ';'"),
        ("", "expected an identifier at position 1"),
        ("a.b.c", "3 dotted parts"),
        ("a.", "expected an identifier at position 3"),
        ('"unclosed', "never closed"),
        ('""', "empty identifier"),
        ("1abc", "expected an identifier at position 1"),
        ("my view", "unexpected ' '"),
        ("x" * 64, "63-byte identifier limit"),
    ],
)
def test_invalid_names_are_rejected_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidIdentifierError, match="is not a valid view name") as error:
        parse_qualified_name(text)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (QualifiedName("public", "polls"), "public.polls"),
        (QualifiedName("Sales Report", "Q1 Totals"), '"Sales Report"."Q1 Totals"'),
        (QualifiedName(None, 'say "hi"'), '"say ""hi"""'),
    ],
)
def test_names_display_as_psql_would(name: QualifiedName, shown: str) -> None:
    assert str(name) == shown
    assert parse_qualified_name(shown) == name
