"""The one definition of lag (airflow_matview.freshness), on real fingerprints' shape."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_matview.freshness import LagRecord, cover, lag_of, observe
from devtools.harness.fingerprints import signals

STALE_AFTER = 60.0


def test_zero_when_the_view_reflects_every_change() -> None:
    record = LagRecord()
    observe(record, signals(0), 100.0)
    cover(record, signals(0), read_at=101.0, committed_at=102.0)
    observe(record, signals(0), 110.0)
    lag = lag_of(record, 110.0, stale_after=STALE_AFTER)
    assert (lag.seconds, lag.basis, lag.since) == (0.0, "sources", None)
    assert lag.describe() == "0s"


def test_counts_from_the_first_poll_that_saw_an_unreflected_change() -> None:
    record = LagRecord()
    observe(record, signals(0), 100.0)
    cover(record, signals(0), read_at=100.0, committed_at=101.0)
    observe(record, signals(1), 110.0)
    observe(record, signals(2), 120.0)  # a second change: the lag still counts from the first
    lag = lag_of(record, 125.0, stale_after=STALE_AFTER)
    assert (lag.seconds, lag.since) == (15.0, 110.0)
    assert lag.over(10.0) and not lag.over(15.0)


def test_a_refresh_covers_what_it_read_and_not_what_came_after() -> None:
    record = LagRecord()
    cover(record, signals(0), read_at=90.0, committed_at=91.0)
    observe(record, signals(1), 110.0)
    observe(record, signals(2), 120.0)
    cover(record, signals(1), read_at=115.0, committed_at=125.0)  # read before the second change was seen
    lag = lag_of(record, 130.0, stale_after=STALE_AFTER)
    assert (lag.seconds, lag.since) == (10.0, 120.0)
    assert record.covered_origin == 110.0
    assert record.refresh_seconds == 10.0
    cover(record, signals(2), read_at=131.0, committed_at=132.0)
    assert lag_of(record, 140.0, stale_after=STALE_AFTER).seconds == 0.0


def test_a_refresh_that_read_signals_between_two_polls_covers_what_was_seen_before_it_read() -> None:
    record = LagRecord()
    cover(record, signals(0), read_at=90.0, committed_at=91.0)
    observe(record, signals(1), 110.0)
    cover(record, signals(2), read_at=112.0, committed_at=113.0)  # a change committed between the poll and the read
    assert lag_of(record, 113.0, stale_after=STALE_AFTER).seconds == 0.0
    observe(record, signals(2), 120.0)
    assert lag_of(record, 121.0, stale_after=STALE_AFTER).seconds == 0.0


def test_a_failed_or_stale_measurement_is_unknown_never_zero() -> None:
    record = LagRecord()
    assert lag_of(record, 100.0, stale_after=STALE_AFTER).seconds is None
    observe(record, signals(0), 100.0)
    cover(record, signals(0), read_at=100.0, committed_at=100.0)
    lag = lag_of(record, 100.0 + STALE_AFTER + 1, stale_after=STALE_AFTER)
    assert (lag.seconds, lag.basis) == (None, "unknown")
    assert lag.over(1e9)
    assert "no measurement for 1m1s" in lag.describe()


def test_unwatchable_sources_count_from_the_last_refresh() -> None:
    record = LagRecord()
    why = "public.remote cannot be tracked (a foreign table or a sequence)"
    observe(record, None, 100.0, unwatchable=why)
    assert lag_of(record, 100.0, stale_after=STALE_AFTER).seconds is None  # never refreshed: unknown
    cover(record, None, read_at=100.0, committed_at=104.0)
    observe(record, None, 130.0, unwatchable=why)
    lag = lag_of(record, 134.0, stale_after=STALE_AFTER)
    assert (lag.seconds, lag.basis, lag.reason) == (30.0, "last_refresh", why)
    assert "its sources cannot be watched" in lag.describe()


def test_a_chain_is_measured_from_the_root() -> None:
    upstream, downstream = LagRecord(), LagRecord()
    for record in (upstream, downstream):
        cover(record, signals(0), read_at=90.0, committed_at=91.0)
    observe(upstream, signals(1), 100.0)  # a root change, first seen at 100
    cover(upstream, signals(1), read_at=150.0, committed_at=160.0)
    # The downstream view sees its source (the upstream view) change at 170, and dates it from the root change.
    observe(upstream, signals(1), 170.0)
    observe(downstream, signals(1), 170.0, origin=upstream.covered_origin)
    up = lag_of(upstream, 175.0, stale_after=STALE_AFTER)
    down = lag_of(downstream, 175.0, stale_after=STALE_AFTER, upstream=[up])
    assert (up.seconds, down.seconds, down.since) == (0.0, 75.0, 100.0)
    # Never less behind than its upstream; unknown when the upstream's lag is.
    observe(upstream, signals(2), 176.0)
    observe(downstream, signals(1), 176.0)
    cover(downstream, signals(1), read_at=177.0, committed_at=178.0, origin=upstream.covered_origin)
    up = lag_of(upstream, 200.0, stale_after=STALE_AFTER)
    assert lag_of(downstream, 200.0, stale_after=STALE_AFTER, upstream=[up]).seconds == 24.0
    gone = lag_of(upstream, 1000.0, stale_after=STALE_AFTER)
    assert lag_of(downstream, 1000.0, stale_after=1e9, upstream=[gone]).seconds is None


def test_many_changes_keep_a_bounded_record_and_an_honest_start() -> None:
    record = LagRecord()
    cover(record, signals(0), read_at=0.0, committed_at=1.0)
    for second in range(1, 500):
        observe(record, signals(second), float(second))
    assert len(record.pending) <= 32
    assert lag_of(record, 500.0, stale_after=STALE_AFTER).since == 1.0
    cover(record, signals(250), read_at=250.5, committed_at=260.0)
    # Whatever merged, the oldest change still pending dates from no later than its first sighting.
    assert lag_of(record, 500.0, stale_after=STALE_AFTER).since <= 251.0


def test_the_record_survives_json_and_rejects_garbage() -> None:
    import json

    record = LagRecord()
    observe(record, signals(1), 5.0)
    back = LagRecord.from_dict(json.loads(json.dumps(record.as_dict())))
    assert back == record
    assert LagRecord.from_dict("nonsense") == LagRecord()
    assert LagRecord.from_dict({"pending": [1, 2]}).pending == []


def test_what_a_monitor_stored_gives_the_same_lags_chains_included() -> None:
    from airflow_matview.freshness import lags_of

    upstream, downstream = LagRecord(), LagRecord()
    cover(upstream, signals(0), read_at=90.0, committed_at=91.0)
    observe(upstream, signals(1), 100.0)
    observe(downstream, signals(0), 100.0)
    cover(downstream, signals(0), read_at=100.0, committed_at=100.0)
    states = {
        "public.up": {"record": upstream.as_dict(), "stale_after": 60.0, "after": []},
        "public.down": {"record": downstream.as_dict(), "stale_after": 60.0, "after": ["public.up"]},
    }
    lags = lags_of(states, 130.0)
    assert lags["public.up"] == lag_of(upstream, 130.0, stale_after=60.0)
    assert (lags["public.down"].seconds, lags["public.down"].since) == (30.0, 100.0)
    assert lags_of(states, 200.0)["public.down"].seconds is None  # no measurement since 100: unknown


def test_a_failed_poll_makes_the_lag_unknown_with_why_until_a_poll_succeeds() -> None:
    from airflow_matview.freshness import fail, lags_of

    record = LagRecord()
    observe(record, signals(0), 100.0)
    cover(record, signals(0), read_at=101.0, committed_at=102.0)
    why = "cannot reach the database of connection 'app': connection refused"
    fail(record, why, 105.0)
    lag = lag_of(record, 106.0, stale_after=STALE_AFTER)
    assert (lag.seconds, lag.basis, lag.reason) == (None, "unknown", why)  # at once, not after stale_after
    assert lag.describe() == f"unknown ({why})"
    # Stored and read back (the fleet page), the same reason, also past the stale bound.
    stored = {"public.v": {"record": LagRecord.from_dict(record.as_dict()).as_dict(), "stale_after": 60.0}}
    assert lags_of(stored, 106.0)["public.v"] == lag
    assert lags_of(stored, 1000.0)["public.v"] == lag
    observe(record, signals(0), 110.0)  # a poll succeeds: measured again
    assert lag_of(record, 110.0, stale_after=STALE_AFTER).seconds == 0.0
    assert (record.failure, record.failed_at) == (None, None)


def test_a_view_whose_own_poll_failed_says_so_rather_than_its_upstreams_reason() -> None:
    from airflow_matview.freshness import fail

    upstream, downstream = LagRecord(), LagRecord()
    fail(upstream, "the upstream's reason", 100.0)
    fail(downstream, "its own reason", 100.0)
    up = lag_of(upstream, 101.0, stale_after=STALE_AFTER)
    assert lag_of(downstream, 101.0, stale_after=STALE_AFTER, upstream=[up]).reason == "its own reason"
    observe(downstream, signals(0), 102.0)
    cover(downstream, signals(0), read_at=102.0, committed_at=102.0)
    down = lag_of(downstream, 103.0, stale_after=STALE_AFTER, upstream=[up])
    assert down.reason == "an upstream view's lag is unknown: the upstream's reason"


@pytest.mark.parametrize(
    "stored",
    [
        {"after": 5},
        {"after": [["public.up"]]},
        {"after": [{"view": "public.up"}]},
        {"record": {"measured_at": "yesterday", "pending": []}},
        {"record": {"measured_at": float("inf"), "pending": []}},
        {"record": {"measured_at": True, "pending": []}},
        {"record": {"measured_at": 100.0, "refreshed_at": [1], "pending": []}},
        {"record": {"measured_at": 100.0, "pending": [["x", 1.0, None]]}},
        {"record": {"measured_at": 100.0, "pending": [[1.0, 2.0]]}},
        {"record": {"measured_at": 100.0, "pending": 5}},
        {"record": {"measured_at": 100.0, "pending": [], "failure": {"why": 1}}},
        {"record": {"measured_at": 100.0, "pending": [], "covered": [1, 2]}},
    ],
)
def test_what_another_writer_stored_never_crashes_the_reader_nor_reads_as_within(stored: dict[str, Any]) -> None:
    # The state store takes any JSON (an API user may write it): the fleet page and a restarted monitor read it.
    from airflow_matview.freshness import lags_of

    fine = {"record": {"measured_at": 100.0, "pending": [[90.0, 95.0, None]]}, "stale_after": 60.0, "after": []}
    lags = lags_of({"public.up": fine, "public.v": {**fine, **stored}}, 110.0)
    assert lags["public.up"].seconds == 20.0
    assert lags["public.v"].seconds in (None, 20.0), "garbage never reads as a lag of 0"
