"""Schedule timing: cron in IANA timezones across DST, intervals, validation, descriptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from atom.schedules.timing import Timing, describe
from atom.schedules.validation import check_timing

ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)


def cron(expr: str, zone: str = "UTC") -> Timing:
    return Timing(expr, None, zone, ANCHOR)


def iso(slots) -> list[str]:
    return [s.isoformat() for s in slots]


def test_daily_job_keeps_its_local_hour_when_berlin_leaves_summer_time():
    slots = cron("0 9 * * *", "Europe/Berlin").next_runs(datetime(2026, 10, 23, 12, tzinfo=UTC), 3)
    assert iso(slots) == [
        "2026-10-24T09:00:00+02:00",
        "2026-10-25T09:00:00+01:00",
        "2026-10-26T09:00:00+01:00",
    ]
    assert [s.astimezone(UTC).hour for s in slots] == [7, 8, 8]


def test_a_time_that_does_not_exist_on_spring_forward_day_runs_at_the_next_valid_minute():
    slots = cron("30 2 * * *", "America/New_York").next_runs(
        datetime(2027, 3, 13, 12, tzinfo=UTC), 3
    )
    assert iso(slots) == [
        "2027-03-14T03:00:00-04:00",
        "2027-03-15T02:30:00-04:00",
        "2027-03-16T02:30:00-04:00",
    ]


def test_a_fixed_time_in_the_repeated_hour_runs_once_when_clocks_fall_back():
    slots = cron("30 1 * * *", "America/New_York").next_runs(
        datetime(2026, 11, 1, 0, tzinfo=UTC), 3
    )
    assert iso(slots) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]


def test_an_hourly_job_runs_in_both_copies_of_the_repeated_hour():
    slots = cron("0 * * * *", "America/New_York").next_runs(
        datetime(2026, 11, 1, 4, 30, tzinfo=UTC), 3
    )  # 00:30 EDT
    assert iso(slots) == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_weekday_business_hours_in_tokyo():
    slots = cron("*/30 9-10 * * 1-5", "Asia/Tokyo").next_runs(
        datetime(2026, 11, 20, 2, 0, tzinfo=UTC), 5
    )  # Friday 11:00 in Tokyo
    assert iso(slots) == [
        "2026-11-23T09:00:00+09:00",
        "2026-11-23T09:30:00+09:00",
        "2026-11-23T10:00:00+09:00",
        "2026-11-23T10:30:00+09:00",
        "2026-11-24T09:00:00+09:00",
    ]


def test_interval_slots_count_from_the_anchor():
    timing = Timing(None, 2, "UTC", ANCHOR)
    after = ANCHOR + timedelta(seconds=5.5)
    assert [s - ANCHOR for s in timing.next_runs(after, 3)] == [
        timedelta(seconds=6),
        timedelta(seconds=8),
        timedelta(seconds=10),
    ]
    assert timing.latest_at_or_before(after) == ANCHOR + timedelta(seconds=4)
    assert timing.slots_between(ANCHOR, ANCHOR + timedelta(seconds=6)) == [
        ANCHOR + timedelta(seconds=2),
        ANCHOR + timedelta(seconds=4),
        ANCHOR + timedelta(seconds=6),
    ]
    assert len(timing.slots_between(ANCHOR, ANCHOR + timedelta(days=1), limit=7)) == 7


def test_cron_slots_between_and_latest():
    timing = cron("0 * * * *")
    start = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert iso(timing.slots_between(start, start + timedelta(hours=2))) == [
        "2026-05-01T11:00:00+00:00",
        "2026-05-01T12:00:00+00:00",
    ]
    assert timing.latest_at_or_before(start + timedelta(minutes=59)) == start


@pytest.mark.parametrize(
    ("cron_expr", "interval", "zone", "where", "says"),
    [
        ("* * * *", None, "UTC", "cron", "5 fields"),
        ("*/5 * * * * *", None, "UTC", "cron", "5 fields"),
        ("61 * * * *", None, "UTC", "cron", "not a valid cron"),
        ("0 25 * * *", None, "UTC", "cron", "not a valid cron"),
        (None, None, "UTC", "cron", "exactly one"),
        ("* * * * *", 5, "UTC", "cron", "exactly one"),
        (None, 0, "UTC", "interval_seconds", "from 1"),
        (None, 2.5, "UTC", "interval_seconds", "whole number"),
        ("* * * * *", None, "Mars/Olympus", "timezone", "not an IANA time zone"),
        ("* * * * *", None, 5, "timezone", "IANA"),
    ],
)
def test_bad_timing_names_the_field_and_says_why(cron_expr, interval, zone, where, says):
    problems = check_timing(cron_expr, interval, zone)
    assert any(p.location == where and says in p.message for p in problems), problems


def test_good_timing_has_no_problem_and_reads_as_text():
    assert check_timing("0 9 * * 1-5", None, "Europe/Berlin") == []
    assert check_timing(None, 2, "UTC") == []
    assert (
        describe("0 9 * * 1-5", None, "Europe/Berlin")
        == "At 09:00 AM, Monday through Friday (Europe/Berlin)"
    )
    assert describe(None, 2, "UTC") == "Every 2 seconds"


def test_schedule_schema_fills_defaults_and_lists_every_problem_by_field():
    from atom.errors import InvalidInput
    from atom.schedules.validation import ScheduleInSchema, SchedulePatchSchema

    wf = "00000000-0000-0000-0000-000000000001"
    loaded = ScheduleInSchema().load({"workflow_id": wf, "interval_seconds": 60})
    assert (loaded["timezone"], loaded["overlap"], loaded["max_catchup"]) == ("UTC", "skip", 10)
    assert loaded["input"] == {} and loaded["enabled"] is True and loaded["catchup"] is False
    with pytest.raises(InvalidInput) as bad:
        ScheduleInSchema().load(
            {
                "workflow_id": wf,
                "interval_seconds": True,
                "timezone": None,
                "overlap": "queue",
                "max_catchup": 1001,
            }
        )
    errors = bad.value.errors
    assert set(errors) == {"interval_seconds", "timezone", "overlap", "max_catchup"}, errors
    assert "whole number" in errors["interval_seconds"][0]
    assert errors["overlap"] == ["must be skip or allow"]
    with pytest.raises(InvalidInput) as unknown:
        SchedulePatchSchema().load({"workflow_id": wf})
    assert "workflow_id" in unknown.value.errors
    assert SchedulePatchSchema().load({"enabled": False}) == {"enabled": False}
