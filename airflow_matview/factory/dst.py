"""What Airflow does with a view's local-time cron on the nights its time zone changes clocks, for the DAG's doc:
worked out with Airflow's own ``CronTriggerTimetable`` (the class the scheduler runs), not described in general.

For the first change of each kind in the year (clocks forward, clocks back), the runs Airflow computes around it are
compared with the wall-clock times the cron names: the note says which of those times do not exist or happen twice
that night, and when Airflow runs instead. Only the minute and hour fields decide that (the day fields say whether
that night is a run day), so the cron's time of day, ``m h * * *``, is what is computed.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

_LISTED = 4  # more times than this are written "the N times from 02:00 to 02:59"


@dataclass(frozen=True)
class ClockChange:
    """One change of a zone's clocks.

    :param at: the instant (UTC).
    :param before: the zone's UTC offset until then.
    :param after: its UTC offset from then on.
    """

    at: datetime
    before: timedelta
    after: timedelta

    @property
    def forward(self) -> bool:
        return self.after > self.before

    @property
    def wall_before(self) -> datetime:
        """The local wall-clock time the clocks show when they change (naive): 02:00 in Berlin in March."""
        return (self.at + self.before).replace(tzinfo=None)

    @property
    def wall_after(self) -> datetime:
        """The wall-clock time they show right after (naive): 03:00 in Berlin in March."""
        return (self.at + self.after).replace(tzinfo=None)


@functools.lru_cache(maxsize=64)
def clock_changes(zone: str, year: int) -> tuple[ClockChange, ...]:
    """The changes of ``zone``'s UTC offset during ``year``, found day by day, then to the minute."""
    tz = zoneinfo.ZoneInfo(zone)
    start = datetime(year, 1, 1, tzinfo=timezone.utc)

    def offset(minutes: int) -> timedelta:
        return (start + timedelta(minutes=minutes)).astimezone(tz).utcoffset() or timedelta(0)

    changes = []
    day = 24 * 60
    for first in range(0, 366 * day, day):
        if offset(first) == offset(first + day):
            continue
        low, high = first, first + day
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if offset(middle) == offset(first) else (low, middle)
        changes.append(ClockChange(start + timedelta(minutes=high), offset(low), offset(high)))
    return tuple(changes)


@functools.lru_cache(maxsize=256)
def dst_note(expression: str, zone: str, year: int) -> str | None:
    """One Markdown bullet on what the first clock changes of ``year`` in ``zone`` do to the cron's runs, or
    ``None`` when the zone does not change clocks that year.

    :param expression: the cron, as Airflow reads it (a preset is expanded here too).
    :param zone: the IANA zone the cron is read in.
    :param year: the year whose changes are described.
    """
    changes = clock_changes(zone, year)
    if not changes:
        return None
    time_of_day = " ".join([*_expanded(expression, zone).split()[:2], "*", "*", "*"])
    parts = [
        part
        for change in _first_of_each_kind(changes)
        if (part := (_forward if change.forward else _back)(time_of_day, zone, change))
    ]
    if not parts:
        hours = ", ".join(f"{_hhmm(c.wall_before)} -> {_hhmm(c.wall_after)}" for c in _first_of_each_kind(changes))
        return f"- clock changes in {zone} ({hours}) move none of its runs"
    return f"- clock changes in {zone}, as Airflow's timetable runs this cron: " + "; ".join(parts)


def _first_of_each_kind(changes: Sequence[ClockChange]) -> list[ClockChange]:
    firsts = [next((c for c in changes if c.forward), None), next((c for c in changes if not c.forward), None)]
    return sorted((c for c in firsts if c is not None), key=lambda c: c.at)


def _forward(time_of_day: str, zone: str, change: ClockChange) -> str | None:
    jump = change.after - change.before
    named = _named_times(time_of_day, change.wall_before, change.wall_after + jump)
    missing = [wall for wall in named if wall < change.wall_after]
    if not missing:
        return None
    runs = {wall for wall, _ in _local_runs(time_of_day, zone, change.wall_before, change.at + jump)}
    instead = sorted(runs - set(named))
    skipped = sorted(set(named) - set(missing) - runs)
    text = (
        f"when clocks go forward ({_hhmm(change.wall_before)} -> {_hhmm(change.wall_after)}), {_times(missing)} "
        f"{'does' if len(missing) == 1 else 'do'} not exist: "
    )
    if instead:
        text += f"the DAG runs {_count(len(instead))}, at {_times(instead)}, instead"
    else:
        text += f"no run takes {'its' if len(missing) == 1 else 'their'} place"
    return text + (f", and skips {_times(skipped)}" if skipped else "")


def _back(time_of_day: str, zone: str, change: ClockChange) -> str | None:
    jump = change.before - change.after
    twice = _named_times(time_of_day, change.wall_after, change.wall_before)
    if not twice:
        return None
    runs = _local_runs(time_of_day, zone, change.wall_after, change.at + jump)
    by_kind: dict[str, list[datetime]] = {}
    for wall in twice:
        offsets = {offset for run, offset in runs if run == wall}
        by_kind.setdefault(_occurrences(offsets, change, zone, wall), []).append(wall)
    if len(by_kind) == 1:
        clauses = [f"{'it' if len(twice) == 1 else 'each'} {next(iter(by_kind))}"]
    else:
        clauses = [f"{_times(walls)} {'' if len(walls) == 1 else 'each '}{kind}" for kind, walls in by_kind.items()]
    extra = sorted({run for run, _ in runs} - set(twice))
    return (
        f"when clocks go back ({_hhmm(change.wall_before)} -> {_hhmm(change.wall_after)}), {_times(twice)} "
        f"{'happens' if len(twice) == 1 else 'happen'} twice: "
        + ", ".join(clauses)
        + (f", and it also runs at {_times(extra)}" if extra else "")
    )


def _occurrences(offsets: set[timedelta], change: ClockChange, zone: str, wall: datetime) -> str:
    """Which of the two occurrences of a repeated time Airflow runs: ``runs twice (...)``, ``runs once, at the
    second (CET, UTC+01:00)``..."""
    first, second = _label(zone, wall, change.before, 0), _label(zone, wall, change.after, 1)
    if offsets == {change.before, change.after}:
        return f"runs twice ({first} and {second})"
    if offsets == {change.after}:
        return f"runs once, at the second ({second})"
    if offsets == {change.before}:
        return f"runs once, at the first ({first})"
    return "does not run"


def _label(zone: str, wall: datetime, offset: timedelta, fold: int) -> str:
    name = wall.replace(tzinfo=zoneinfo.ZoneInfo(zone), fold=fold).tzname()
    minutes = int(offset.total_seconds()) // 60
    text = f"UTC{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return f"{name}, {text}" if name and not name.startswith(("+", "-")) else text


def _named_times(time_of_day: str, start: datetime, end: datetime) -> list[datetime]:
    """The wall-clock times from ``start`` to before ``end`` (naive) that the cron names."""
    from croniter import croniter

    times = croniter(time_of_day, start_time=start - timedelta(seconds=1))
    named = []
    while (wall := times.get_next(datetime)) < end:
        named.append(wall)
    return named


def _local_runs(time_of_day: str, zone: str, since: datetime, end: datetime) -> list[tuple[datetime, timedelta]]:
    """The runs Airflow's scheduler makes after the cron's last time before the wall-clock time ``since`` (naive,
    before the change) up to ``end`` (UTC), each computed from the one before as the scheduler does, as (naive
    wall-clock time, UTC offset)."""
    import pendulum
    from airflow.timetables.base import DataInterval, TimeRestriction
    from airflow.timetables.trigger import CronTriggerTimetable
    from croniter import croniter

    tz = zoneinfo.ZoneInfo(zone)
    previous = croniter(time_of_day, start_time=since).get_prev(datetime)
    seed = pendulum.instance(previous.replace(tzinfo=tz).astimezone(timezone.utc))
    last: DataInterval | None = DataInterval(seed, seed)
    timetable = CronTriggerTimetable(time_of_day, timezone=zone)
    restriction = TimeRestriction(
        earliest=None, latest=pendulum.instance(end - timedelta(microseconds=1)), catchup=True
    )
    runs: list[tuple[datetime, timedelta]] = []
    while info := timetable.next_dagrun_info(last_automated_data_interval=last, restriction=restriction):
        local = info.run_after.astimezone(tz)
        runs.append((local.replace(tzinfo=None), local.utcoffset() or timedelta(0)))
        last = info.data_interval
    return runs


def _count(times: int) -> str:
    return {1: "once", 2: "twice"}.get(times, f"{times} times")


def _expanded(expression: str, zone: str) -> str:
    """The cron of a preset (``@daily`` is ``0 0 * * *``), as Airflow's timetable reads it."""
    from airflow.timetables.trigger import CronTriggerTimetable

    return str(CronTriggerTimetable(expression, timezone=zone)._expression)


def _times(walls: Sequence[datetime]) -> str:
    texts = sorted(dict.fromkeys(_hhmm(wall) for wall in walls))
    if len(texts) > _LISTED:
        return f"the {len(texts)} times from {texts[0]} to {texts[-1]}"
    return " and ".join([", ".join(texts[:-1]), texts[-1]]) if len(texts) > 1 else texts[0]


def _hhmm(wall: datetime) -> str:
    return wall.strftime("%H:%M")
