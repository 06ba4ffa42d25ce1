"""Reading the config file: duplicate keys, alias bombs, encodings and YAML errors, each one line naming the place."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config

if TYPE_CHECKING:
    from pathlib import Path


def problems_in(tmp_path: Path, text: str | bytes) -> list[str]:
    path = tmp_path / "matviews.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidConfigFileError) as error:
        load_config(path)
    assert str(error.value).startswith(f"Invalid matview config {path}: ")
    return error.value.problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "views:\n  - name: public.a\nviews:\n  - name: public.b\n",
            ["line 3: key 'views' is repeated (first at line 1)"],
        ),
        (
            "defaults:\n  schedule: '@hourly'\n  retries: 1\n  schedule: null\nviews:\n  - name: public.a\n",
            ["line 4: key 'schedule' is repeated (first at line 2)"],
        ),
        (
            "views:\n  - name: public.a\n    schedule: '*/5 * * * *'\n    schedule: null\n",
            ["line 4: key 'schedule' is repeated (first at line 3)"],
        ),
        (
            "views:\n  - name: public.a\n    tags: [x]\n  - name: public.b\n"
            "    extra: {k: 1, k: 2}\n    name: public.c\n",
            ["line 5: key 'k' is repeated (first at line 5)", "line 6: key 'name' is repeated (first at line 4)"],
        ),
        ("defaults: {}\ndefaults: {}\nviews: [{name: public.a}]\n", ["line 2: key 'defaults' is repeated"]),
    ],
    ids=["top-level", "defaults", "view", "nested-and-second-view", "flow"],
)
def test_a_repeated_key_at_any_level_names_the_key_and_both_lines(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    problems = problems_in(tmp_path, text)
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), problem
        assert problem.endswith("YAML would keep only the last one: write each key once")


def test_merge_keys_may_be_overridden_without_a_duplicate_error(tmp_path: Path) -> None:
    path = tmp_path / "matviews.yaml"
    path.write_text(
        "common: &common {retries: 1, schedule: '@hourly'}\n"
        "views:\n  - <<: *common\n    name: public.a\n    retries: 4\n  - <<: *common\n    name: public.b\n"
    )
    with pytest.raises(InvalidConfigFileError) as error:  # 'common' is not a config key, but nothing is a duplicate
        load_config(path)
    assert error.value.problems[0].startswith("file: common: unknown key; allowed keys at the top level are")
    path.write_text(
        "defaults: &common {retries: 1, schedule: '@hourly'}\n"
        "views:\n  - <<: *common\n    name: public.a\n    retries: 4\n  - name: public.b\n"
    )
    a, b = load_config(path).views
    assert (a.retries, a.schedule, b.retries) == (4, "@hourly", 1)


BOMB = "".join(
    [
        "bomb0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
        *(
            f"bomb{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]\n"
            for level in range(1, 9)  # 10**9 strings once expanded
        ),
    ]
)


@pytest.mark.parametrize(
    "view",
    ["    concurrently: *l8\n", "    retry_delay: *l8\n", "    tags: *l8\n", "    *l8 : x\n"],
    ids=["concurrently", "duration", "tags", "key"],
)
def test_an_alias_bomb_is_refused_in_milliseconds(tmp_path: Path, view: str) -> None:
    text = BOMB + "views:\n  - name: public.a\n" + view
    started = time.perf_counter()
    problems = problems_in(tmp_path, text)
    elapsed = time.perf_counter() - started
    assert problems == [
        "aliases (*name) expand the document to 2,111,111,142 nodes; they may add at most 100,000: write the "
        "values out, or use fewer nested aliases"
    ] or problems[0].startswith("aliases (*name) expand the document to "), problems
    assert elapsed < 0.25, f"took {elapsed:.3f} s"


def test_an_alias_inside_its_own_value_is_refused(tmp_path: Path) -> None:
    assert problems_in(tmp_path, "views: &v [*v]\n") == [
        "line 1: an alias (*name) refers to a value that contains it; remove it"
    ]


def test_a_file_that_is_not_utf8_is_named_with_the_line_of_the_first_bad_byte(tmp_path: Path) -> None:
    latin1 = "views:\n  - name: public.caf\u00e9\n".encode("latin-1")
    assert problems_in(tmp_path, latin1) == [
        "line 2, column 21: byte 0xe9 is not UTF-8; the file must be UTF-8 text (e.g. `iconv -f latin1 -t utf-8`, "
        "or save it as UTF-8 in your editor)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "views:\n  - name: public.a\n   schedule: x\n",
            "line 3, column 4: not valid YAML: did not find expected '-' indicator "
            "(while parsing a block collection at line 2)",
        ),
        (
            "views: [\n",
            "line 2, column 1: not valid YAML: did not find expected node content "
            "(while parsing a flow node at line 2)",
        ),
    ],
)
def test_yaml_errors_name_the_line_and_never_unicode_string(tmp_path: Path, text: str, expected: str) -> None:
    (problem,) = problems_in(tmp_path, text)
    assert "<unicode string>" not in problem
    assert problem == expected


@pytest.mark.parametrize(
    ("line", "spelling"),
    [
        ('  - name: "Sales Report"."Q1 Totals"\n', '\'"Sales Report"."Q1 Totals"\''),
        ('  - name: "Sales Report".totals\n', "'\"Sales Report\".totals'"),
        ('  - name: public.a\n    after: ["Sales Report"."Q1 Totals", public.b]\n', '\'"Sales Report"."Q1 Totals"\''),
        ('  - name: public.a\n    after:\n      - "Sales".x\n', "'\"Sales\".x'"),
    ],
    ids=["name", "quoted-schema-only", "after-flow", "after-block"],
)
def test_a_sql_quoted_name_that_breaks_the_yaml_gets_the_single_quoted_spelling(
    tmp_path: Path, line: str, spelling: str
) -> None:
    (problem,) = problems_in(tmp_path, "views:\n" + line)
    assert "not valid YAML" in problem
    assert problem.endswith(f"wrap the whole SQL name in single quotes to keep its double quotes: {spelling}"), problem


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        ("    schedule: @daily\n", "A value that starts with @ must be quoted in YAML: schedule: '@daily'"),
        ("    schedule: */5 * * * *\n", "A value that starts with * must be quoted in YAML: schedule: '*/5 * * * *'"),
        ("    schedule: * * * * *  # every minute\n", "must be quoted in YAML: schedule: '* * * * *'"),
    ],
)
def test_a_value_yaml_reserves_gets_the_quoted_spelling(tmp_path: Path, line: str, hint: str) -> None:
    (problem,) = problems_in(tmp_path, "views:\n  - name: public.a\n" + line)
    assert problem.endswith(hint), problem


def test_words_yaml_reads_as_booleans_are_named(tmp_path: Path) -> None:
    problems = problems_in(tmp_path, "views:\n  - name: public.a\n    owner: false\n    tags: [TRUE, reporting]\n")
    assert problems == [
        "views[0] (public.a): tags.0: YAML reads this value unquoted as a boolean, True; quote it to keep it as text",
        "views[0] (public.a): owner: YAML reads this value unquoted as a boolean, False; quote it to keep it as text",
    ]


def test_plain_values_are_typed_as_yaml_1_2_reads_them_never_silently_converted(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML's default) reads yes/on as true, 1:30 as 90, 010 as 8 and 1_0 as 10.
    path = tmp_path / "matviews.yaml"
    path.write_text("views:\n  - name: public.a\n    owner: no\n    tags: [yes, on]\n    retries: 010\n")
    (view,) = load_config(path).views
    assert (view.owner, view.tags, view.retries) == ("no", ["yes", "on"], 10)
    problems = problems_in(
        tmp_path,
        "views:\n  - name: public.a\n    analyze: yes\n    skip_if_unchanged: on\n    retries: 1:30\n"
        "    lock_timeout: 1:30\n  - name: public.b\n    retries: 1_0\n    owner: 2024-01-01\n    tags: [=]\n",
    )
    assert problems == [
        "views[0] (public.a): retries: '1:30' is not a whole number; use 0, 1, 2, ...",
        "views[0] (public.a): lock_timeout: '1:30' is not a duration; use 500ms, 30s, 5m, 1h, 1d or a number of "
        "seconds",
        "views[0] (public.a): analyze: 'yes' is not allowed; use true or false",
        "views[0] (public.a): skip_if_unchanged: 'on' is not allowed; use true or false",
        "views[1] (public.b): retries: '1_0' is not a whole number; use 0, 1, 2, ...",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("!!int abc", "line 3, column 14: not valid YAML: 'abc' cannot be read as the type its tag !!int names"),
        ("!!bool maybe", "line 3, column 14: not valid YAML: 'maybe' cannot be read as the type its tag !!bool names"),
        (
            "!!timestamp x",
            "line 3, column 14: not valid YAML: 'x' cannot be read as the type its tag !!timestamp names",
        ),
    ],
)
def test_a_value_its_explicit_tag_cannot_read_is_one_problem(tmp_path: Path, value: str, expected: str) -> None:
    assert problems_in(tmp_path, f"views:\n  - name: public.a\n    retries: {value}\n") == [expected]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            "views: []\n".encode("utf-16"),
            "the file is UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8",
        ),
        (
            "views: []\n".encode("utf-32"),
            "the file is UTF-32 text (it starts with a UTF-32 byte-order mark); save it as UTF-8",
        ),
        (
            "views: []\n".encode("utf-16-be"),
            "line 1, column 1: not valid YAML: the control character U+0000 is not allowed; a file with NUL characters "
            "is often UTF-16 text: save it as UTF-8",
        ),
        (
            b"views:\n  - name: public.a\x07\n",
            "line 2, column 19: not valid YAML: the control character U+0007 is not allowed; remove it",
        ),
    ],
    ids=["utf-16-bom", "utf-32-bom", "utf-16-without-bom", "control-character"],
)
def test_other_encodings_and_control_characters_are_named_by_line(tmp_path: Path, data: bytes, expected: str) -> None:
    assert problems_in(tmp_path, data) == [expected]
