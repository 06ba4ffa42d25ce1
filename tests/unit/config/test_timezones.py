"""Time zones written as an offset get the right spelling (POSIX's inverted sign for Etc/GMT), and an Etc/GMT zone,
valid but easily misread, is accepted with a note in validate's output and in the DAG's doc."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import yaml

from airflow_matview.cli.main import main
from airflow_matview.config import InvalidConfigFileError, load_config
from airflow_matview.factory import build_dags

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        (
            "UTC+2",
            "'UTC+2' is a fixed offset, not an IANA time zone; write Etc/GMT-2 for UTC+02:00 all year (POSIX sign: "
            "Etc/GMT-2 is UTC+02:00), or the region whose local time you mean, such as Europe/Berlin or Europe/Athens",
        ),
        (
            "GMT+2",
            "'GMT+2' is a fixed offset, not an IANA time zone; write Etc/GMT-2 for UTC+02:00 all year (POSIX sign: "
            "Etc/GMT-2 is UTC+02:00), or the region whose local time you mean, such as Europe/Berlin or Europe/Athens",
        ),
        (
            "UTC-5",
            "'UTC-5' is a fixed offset, not an IANA time zone; write Etc/GMT+5 for UTC-05:00 all year (POSIX sign: "
            "Etc/GMT+5 is UTC-05:00), or the region whose local time you mean, such as America/New_York or "
            "America/Chicago",
        ),
        (
            "GMT-05:00",
            "'GMT-05:00' is a fixed offset, not an IANA time zone; write Etc/GMT+5 for UTC-05:00 all year (POSIX "
            "sign: Etc/GMT+5 is UTC-05:00), or the region whose local time you mean, such as America/New_York or "
            "America/Chicago",
        ),
        (
            "+01:00",
            "'+01:00' is a fixed offset, not an IANA time zone; write Etc/GMT-1 for UTC+01:00 all year (POSIX sign: "
            "Etc/GMT-1 is UTC+01:00), or the region whose local time you mean, such as Europe/London or "
            "Europe/Berlin",
        ),
        (
            "UTC+5:30",
            "'UTC+5:30' is a fixed offset, not an IANA time zone; no Etc/GMT zone has the offset UTC+05:30; write "
            "the region whose local time you mean, such as Asia/Kolkata",
        ),
        ("UTC+0", "'UTC+0' is a fixed offset, not an IANA time zone; write UTC"),
        (
            "UTC+15",
            "'UTC+15' is a fixed offset, not an IANA time zone; no Etc/GMT zone has the offset UTC+15:00; write the "
            "region whose local time you mean",
        ),
    ],
)
def test_an_offset_written_as_a_zone_gets_the_right_spelling(zone: str, message: str) -> None:
    with pytest.raises(InvalidConfigFileError) as raised:
        load_config({"views": [{"name": "public.a", "timezone": zone}]})
    assert raised.value.problems == [f"views[0] (public.a): timezone: {message}"]


NOTE_PLUS_2 = (
    "Etc/GMT+2 is UTC-02:00, 2 hour(s) behind UTC (POSIX inverts the sign of Etc/GMT zones); if you meant "
    "UTC+02:00, write Etc/GMT-2"
)


def test_an_etc_gmt_zone_is_accepted_with_a_note_in_validate_once_per_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "matviews.yaml"
    views = [
        {"name": "public.a", "timezone": "Etc/GMT+2"},
        {"name": "public.b", "timezone": "Etc/GMT+2"},
        {"name": "public.c", "timezone": "Etc/GMT-2"},
        {"name": "public.d", "timezone": "Etc/GMT0"},
        {"name": "public.e", "timezone": "Europe/Berlin"},
    ]
    path.write_text(yaml.safe_dump({"views": views}))
    assert main(["validate", str(path)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: views[0] (public.a) and 1 other view(s): timezone: {NOTE_PLUS_2}",
        "note: views[2] (public.c): timezone: Etc/GMT-2 is UTC+02:00, 2 hour(s) ahead of UTC (POSIX inverts the "
        "sign of Etc/GMT zones); if you meant UTC-02:00, write Etc/GMT+2",
    ]


def test_the_dag_doc_says_what_an_etc_gmt_zone_is() -> None:
    dag = build_dags({"views": [{"name": "public.a", "schedule": "0 6 * * *", "timezone": "Etc/GMT+2"}]})[
        "matview.public.a"
    ]
    assert f"- cron times are Etc/GMT+2 local time: {NOTE_PLUS_2}\n" in (dag.doc_md or "")
