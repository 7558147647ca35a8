"""Durations and times as the product's objects and flags write them."""

from __future__ import annotations

import datetime

import pytest

from rules.times import format_time, parse_duration, parse_time

HOUR = datetime.timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "units", "expected"),
    [
        pytest.param("720h", "hms", 720 * HOUR, id="hours"),
        pytest.param("90m", "hms", 1.5 * HOUR, id="minutes"),
        pytest.param("1h30m", "hms", 1.5 * HOUR, id="hours-and-minutes"),
        pytest.param("45s", "hms", datetime.timedelta(seconds=45), id="seconds"),
        pytest.param(" 2h ", "hms", 2 * HOUR, id="spaces-around"),
        pytest.param("1825d", "dhms", datetime.timedelta(days=1825), id="days"),
        pytest.param("1d12h", "dhms", 36 * HOUR, id="days-and-hours"),
    ],
)
def test_durations(text: str, units: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text, units=units) == expected


@pytest.mark.parametrize(
    ("text", "units"),
    [
        pytest.param("", "hms", id="empty"),
        pytest.param("a week", "hms", id="words"),
        pytest.param("10d", "hms", id="a-unit-not-allowed"),
        pytest.param("h", "hms", id="no-number"),
        pytest.param("30m1h", "hms", id="out-of-order"),
        pytest.param("1h1h", "hms", id="a-unit-twice"),
        pytest.param("1.5h", "dhms", id="not-whole"),
    ],
)
def test_bad_durations_say_what_a_good_one_looks_like(text: str, units: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration like .*720h"):
        parse_duration(text, units=units)


def test_times_are_written_in_utc_to_the_second_and_read_back() -> None:
    moment = datetime.datetime(2026, 11, 26, 13, 0, 5, 999, tzinfo=datetime.timezone(HOUR))

    assert format_time(moment) == "2026-11-26T12:00:05Z"
    assert parse_time("2026-11-26T12:00:05Z") == moment.replace(microsecond=0)


@pytest.mark.parametrize("text", [None, "", "yesterday"])
def test_no_time_or_an_unreadable_one_reads_as_none(text: str | None) -> None:
    assert parse_time(text) is None
