"""A rotation's previous registry entry: kept for the token endpoint until the readers have rolled (or the grace
period passed), by ``rules.retirement`` — the Database feature's rule — and dropped with the entry on leaving."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest

from rules import registry as r
from rules.retirement import Reader
from tests.unit.test_registry_rules import HOST, IN_SYNC, NEW, OLD, USER, fake_verify

T0 = datetime.datetime(2026, 12, 4, 21, 0, tzinfo=datetime.UTC)
GRACE = datetime.timedelta(hours=1)
OLDER = "C" * 40
KEPT = r.PreviousEntry(f"hash-of-{OLDER}", T0)
WAITING = Reader("Deployment", "api", rolled=False, opted_out=False)
LEGACY = Reader("Deployment", "legacy", rolled=False, opted_out=True)
ROLLED = Reader("Deployment", "api", rolled=True, opted_out=False)
AFTER_ROTATION = replace(IN_SYNC, previous=(KEPT,))


def step(observed: r.Observed, now: datetime.datetime) -> r.Step | None:
    return r.next_step(observed, registry_host=HOST, verify=fake_verify, new_password=lambda: NEW, now=now, grace=GRACE)


MINUTE = datetime.timedelta(minutes=1)
BOTH_GONE = "every service using the credentials has rolled"
GRACE_PASSED = "the grace period after the rotation has passed"


@pytest.mark.parametrize(
    ("observed", "now", "expected"),
    [
        pytest.param(replace(AFTER_ROTATION, readers=(WAITING,)), T0 + MINUTE, None, id="kept-until-rolled"),
        pytest.param(
            replace(AFTER_ROTATION, readers=(LEGACY,)), T0 + MINUTE, None, id="kept-for-one-that-opted-out-too"
        ),
        pytest.param(
            replace(AFTER_ROTATION, readers=(ROLLED,)),
            T0 + MINUTE,
            r.RetirePrevious(USER, (), BOTH_GONE),
            id="dropped-after-rolled",
        ),
        pytest.param(
            replace(AFTER_ROTATION, readers=()), T0, r.RetirePrevious(USER, (), BOTH_GONE), id="no-readers-at-once"
        ),
        pytest.param(
            replace(AFTER_ROTATION, readers=(WAITING, ROLLED)), T0 + MINUTE, None, id="one-reader-not-rolled-keeps-it"
        ),
        pytest.param(
            replace(AFTER_ROTATION, readers=(WAITING,)),
            T0 + GRACE,
            r.RetirePrevious(USER, (), GRACE_PASSED),
            id="dropped-after-grace",
        ),
        pytest.param(AFTER_ROTATION, T0 + MINUTE, None, id="readers-not-looked-at-kept-in-grace"),
        pytest.param(
            AFTER_ROTATION, T0 + GRACE, r.RetirePrevious(USER, (), GRACE_PASSED), id="readers-not-looked-at-grace"
        ),
        pytest.param(
            replace(
                AFTER_ROTATION,
                previous=(KEPT, r.PreviousEntry(f"hash-of-{OLD}x", T0 + GRACE)),
                readers=(WAITING,),
            ),
            T0 + GRACE + MINUTE,
            r.RetirePrevious(USER, (r.PreviousEntry(f"hash-of-{OLD}x", T0 + GRACE),), GRACE_PASSED),
            id="each-previous-entry-by-its-own-rotation-time",
        ),
        pytest.param(
            replace(AFTER_ROTATION, member=False, readers=(WAITING,)),
            T0 + MINUTE,
            r.RemoveEntry(USER),
            id="dropped-with-the-entry-on-leaving",
        ),
        pytest.param(
            replace(AFTER_ROTATION, member=False, entry=None),
            T0 + MINUTE,
            r.RemoveEntry(USER),
            id="a-previous-entry-alone-is-dropped-on-leaving",
        ),
        pytest.param(
            replace(AFTER_ROTATION, pending=r.Pending(NEW, "r1"), readers=()),
            T0 + GRACE,
            r.SetEntry(USER, NEW, keep=f"hash-of-{OLD}"),
            id="never-retired-before-the-rotation-is-committed",
        ),
    ],
)
def test_the_previous_entry_is_retired_as_a_databases_old_login(
    observed: r.Observed, now: datetime.datetime, expected: r.Step | None
) -> None:
    assert step(observed, now) == expected


@pytest.mark.parametrize(
    ("observed", "keep"),
    [
        pytest.param(replace(IN_SYNC, pending=r.Pending(NEW, "r1")), f"hash-of-{OLD}", id="the-readers-password"),
        pytest.param(
            replace(IN_SYNC, pending=r.Pending(NEW, "r1"), entry=f"hash-of-{OLDER}"),
            None,
            id="an-entry-of-no-published-password-is-not-kept",
        ),
        pytest.param(
            replace(IN_SYNC, pending=r.Pending(NEW, None), credentials=None, pull_secret=None),
            None,
            id="the-first-password-replaces-nothing-kept",
        ),
        pytest.param(replace(IN_SYNC, entry=f"hash-of-{OLDER}"), None, id="a-repaired-entry-keeps-nothing"),
    ],
)
def test_only_the_entry_of_the_published_password_is_kept_at_a_rotation(observed: r.Observed, keep: str | None) -> None:
    found = step(observed, T0)
    assert isinstance(found, r.SetEntry)
    assert found.keep == keep


def test_the_previous_entries_round_trip_and_a_broken_line_is_dropped() -> None:
    previous = {"vpc-a": (r.PreviousEntry("$2b$10$abc", T0),), "vpc-b": (KEPT, r.PreviousEntry("$2b$x", T0 + GRACE))}
    text = r.format_previous(previous)
    assert text.startswith("vpc-a:$2b$10$abc:2026-12-04T21:00:00Z\n")
    assert r.parse_previous(text + "vpc-c:$2b$10$def:not-a-time\nno-colon\n") == previous


def test_at_most_three_previous_entries_per_user_are_kept() -> None:
    entries: tuple[r.PreviousEntry, ...] = ()
    for n in range(5):
        entries = r.with_previous(entries, f"hash-{n}", T0 + n * MINUTE)
    assert [entry.hash for entry in entries] == ["hash-2", "hash-3", "hash-4"]
    assert len(entries) == r.MAX_PREVIOUS


@pytest.mark.parametrize(
    ("entry", "now", "expected"),
    [
        pytest.param("new", T0 + MINUTE, ("new", KEPT.hash), id="in-grace-both"),
        pytest.param("new", T0 + GRACE, ("new",), id="after-grace-the-new-only"),
        pytest.param(None, T0 + MINUTE, (), id="no-entry-none-left-the-vpc"),
        pytest.param(KEPT.hash, T0 + MINUTE, (KEPT.hash,), id="no-repeat"),
    ],
)
def test_the_hashes_a_password_may_match(entry: str | None, now: datetime.datetime, expected: tuple[str, ...]) -> None:
    assert r.accepted_hashes(entry, (KEPT,), now=now, grace=GRACE) == expected
