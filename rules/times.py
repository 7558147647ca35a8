"""Durations and times as the product's objects and flags write them."""

from __future__ import annotations

import datetime
import re

UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
EXAMPLES = {"d": "1825d", "h": "720h", "m": "90m", "s": "45s"}


def parse_duration(text: str, *, units: str = "hms") -> datetime.timedelta:
    """``720h``, ``90m``, ``1h30m``: whole numbers of some of ``units``, each at most once and in that order (the
    order of ``dhms``). ValueError for anything else, the empty text included."""
    match = re.fullmatch("".join(rf"(?:(\d+){unit})?" for unit in units), text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"{text!r} is not a duration like {', '.join(EXAMPLES[unit] for unit in units)} or 1h30m")
    return datetime.timedelta(
        **{UNITS[unit]: int(number or 0) for unit, number in zip(units, match.groups(), strict=True)}
    )


def parse_time(text: str | None) -> datetime.datetime | None:
    """An RFC 3339 time as the API writes it; None when there is none or it is not one."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC to the second, as the API writes its own times."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
