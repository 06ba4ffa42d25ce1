"""The ``timezone:`` key: an IANA zone name, checked without touching the network, with a suggestion when unknown."""

from __future__ import annotations

import difflib
import functools
import zoneinfo


def parse_timezone(value: object) -> str:
    """The IANA name of a zone that ``zoneinfo`` (and so pendulum and Airflow's timetables) knows.

    :param value: the value given, e.g. ``Europe/Berlin``.
    :raises ValueError: naming the closest valid zone when there is one.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a time zone; use an IANA name such as Europe/Berlin or UTC")
    name = value.strip()
    if _is_known(name):
        return name
    suggestion = closest_timezone(name)
    hint = f"did you mean {suggestion}?" if suggestion else "use an IANA name such as Europe/Berlin or UTC"
    raise ValueError(f"{name!r} is not an IANA time zone; {hint}")


@functools.lru_cache(maxsize=1024)
def _is_known(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def closest_timezone(name: str) -> str | None:
    """The known zone name closest to ``name`` (case-insensitive), if any is close enough."""
    zones = {zone.lower(): zone for zone in zoneinfo.available_timezones()}
    wanted = name.lower().replace(" ", "_")
    if wanted in zones:
        return zones[wanted]
    matches = difflib.get_close_matches(wanted, zones, n=1, cutoff=0.6)
    return zones[matches[0]] if matches else None
