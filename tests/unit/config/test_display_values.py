"""Values refused with a message that says what is allowed: a blank description, and whole numbers past the
32-bit range Airflow stores them in (the range is said)."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_matview.config import InvalidConfigFileError, load_config


def _problems(view: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config({"views": [{"name": "public.a", **view}]})
    return raised.value.problems


@pytest.mark.parametrize("description", ["", " ", "   ", "\n", "\t \n", "\u00a0", "\u3000"])
def test_a_blank_description_is_refused(description: str) -> None:
    assert _problems({"description": description}) == [
        "views[0] (public.a): description: is blank; write a description, or leave the key out"
    ]


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, "2147483648", "-2147483649", 10**12, "high", 1.5, True])
def test_priority_weight_out_of_range_says_the_range(value: object) -> None:
    assert _problems({"priority_weight": value}) == [
        f"views[0] (public.a): priority_weight: {value!r} is not allowed; use a whole number from -2147483648 to "
        "2147483647 (higher runs first when slots are short)"
    ]


@pytest.mark.parametrize("value", [0, -1, 2**31, "2147483648", True])
def test_pool_slots_out_of_range_says_the_range(value: object) -> None:
    assert _problems({"pool_slots": value}) == [
        f"views[0] (public.a): pool_slots: {value!r} is not allowed; use a whole number of slots from 1 to "
        "2147483647 (default 1)"
    ]


@pytest.mark.parametrize(("key", "value"), [("priority_weight", -(2**31)), ("priority_weight", 2**31 - 1)])
def test_the_ends_of_the_range_are_accepted(key: str, value: int) -> None:
    assert getattr(load_config({"views": [{"name": "public.a", key: value}]}).views[0], key) == value
