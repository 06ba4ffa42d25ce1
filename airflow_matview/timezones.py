"""The ``timezone:`` key: an IANA zone name, checked without touching the network, with a suggestion when unknown."""

from __future__ import annotations

import difflib
import functools
import zoneinfo

# Abbreviations people write for a zone: none is the zone they mean (PST is not an IANA name; EST and MST are, but
# as fixed offsets that never change for daylight saving time).
_ABBREVIATIONS = {
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "EST": "America/New_York",
    "EDT": "America/New_York",
    "CST": "America/Chicago",
    "CDT": "America/Chicago",
    "MST": "America/Denver",
    "MDT": "America/Denver",
    "BST": "Europe/London",
    "CEST": "Europe/Berlin",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "AEST": "Australia/Sydney",
    "AEDT": "Australia/Sydney",
}
_FIXED_OFFSET_LOOKALIKES = {"EST": "Etc/GMT+5", "MST": "Etc/GMT+7"}


def parse_timezone(value: object) -> str:
    """The IANA name of a zone that ``zoneinfo`` (and so pendulum and Airflow's timetables) knows on every machine.

    :param value: the value given, e.g. ``Europe/Berlin``.
    :raises ValueError: naming the closest valid zone when there is one.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a time zone; use an IANA name such as Europe/Berlin or UTC")
    name = value.strip()
    if name.upper() in _FIXED_OFFSET_LOOKALIKES:
        raise ValueError(
            f"{name!r} is a fixed offset that ignores daylight saving time, not the local time it usually means; "
            f"use {_ABBREVIATIONS[name.upper()]} (or {_FIXED_OFFSET_LOOKALIKES[name.upper()]} for a fixed offset)"
        )
    if name in _portable_zones():
        return name
    suggestion = closest_timezone(name)
    hint = f"did you mean {suggestion}?" if suggestion else "use an IANA name such as Europe/Berlin or UTC"
    raise ValueError(f"{name!r} is not an IANA time zone; {hint}")


@functools.lru_cache(maxsize=1)
def _portable_zones() -> frozenset[str]:
    """The zones of the IANA database (the ``tzdata`` package Airflow installs, or the system's copy): not
    ``localtime`` or another file of this machine's zoneinfo directory, whose meaning differs between machines."""
    return frozenset(zoneinfo.available_timezones() - {"localtime", "posixrules", "Factory"})


def closest_timezone(name: str) -> str | None:
    """The known zone name closest to ``name`` (case-insensitive), if any is close enough."""
    if name.upper() in _ABBREVIATIONS:
        return _ABBREVIATIONS[name.upper()]
    zones = {zone.lower(): zone for zone in _portable_zones()}
    wanted = name.lower().replace(" ", "_")
    if wanted in zones:
        return zones[wanted]
    matches = difflib.get_close_matches(wanted, zones, n=1, cutoff=0.6)
    return zones[matches[0]] if matches else None
