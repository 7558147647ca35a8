"""The rollout decisions, by table."""

from __future__ import annotations

import base64

import pytest

from rules.references import Use
from rules.rollout import ABSENT, WHOLE, Decision, State, current_state, decide, key_digests, opted_in, parse_state

HMAC_KEY = b"k" * 32


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def test_digests_are_per_key_keyed_and_hide_the_value() -> None:
    digests = key_digests({"A": b64("hunter2"), "B": b64("hunter2")}, HMAC_KEY)

    assert digests["A"] != digests["B"]  # the key name is part of the message
    assert key_digests({"A": b64("hunter2")}, b"other-key" * 4)["A"] != digests["A"]
    assert "hunter2" not in str(digests)
    assert b64("hunter2") not in str(digests)


@pytest.mark.parametrize(
    ("annotations", "template", "expected"),
    [
        pytest.param({"env.secrets.smll.io/A": "s/k"}, {}, True, id="links-on-the-workload"),
        pytest.param({}, {"env.secrets.smll.io/A": "s/k"}, True, id="links-on-the-template"),
        pytest.param({}, {}, False, id="no-links"),
        pytest.param({"secrets.smll.io/auto-rollout": "true"}, {}, True, id="opted-in"),
        pytest.param(
            {"env.secrets.smll.io/A": "s/k", "secrets.smll.io/auto-rollout": "false"}, {}, False, id="opted-out"
        ),
    ],
)
def test_which_services_roll(annotations: dict[str, str], template: dict[str, str], expected: bool) -> None:
    assert opted_in(annotations, template) is expected


def test_current_state_reads_only_the_keys_a_service_uses() -> None:
    uses = [Use("s", "env A", frozenset({"A"})), Use("whole", "envFrom"), Use("gone", "env X", frozenset({"X"}))]
    secrets = {"s": {"A": "a1", "B": "b1"}, "whole": {"P": "p1", "Q": "q1"}, "gone": None}

    assert current_state(uses, secrets) == {
        "s": {"A": "a1"},
        "whole": {"P": "p1", "Q": "q1", WHOLE: WHOLE},
        "gone": {"X": ABSENT},
    }


NO_CHANGE = Decision(roll=False, record=False, changed={})


@pytest.mark.parametrize(
    ("stored", "current", "expected"),
    [
        pytest.param(None, {"s": {"A": "1"}}, Decision(False, True, {}), id="first-seen-records-without-rolling"),
        pytest.param({"s": {"A": "1"}}, {"s": {"A": "1"}}, NO_CHANGE, id="unchanged"),
        pytest.param({"s": {"A": "1"}}, {"s": {"A": "2"}}, Decision(True, True, {"s": ("A",)}), id="used-key-changed"),
        pytest.param(
            {"s": {"A": "1"}, "t": {"B": "1"}},
            {"s": {"A": "2"}, "t": {"B": "3"}},
            Decision(True, True, {"s": ("A",), "t": ("B",)}),
            id="two-secrets-changed-one-decision",
        ),
        pytest.param({"s": {"A": ABSENT}}, {"s": {"A": "1"}}, Decision(True, True, {"s": ("A",)}), id="key-appeared"),
        pytest.param(
            {"s": {"A": "1"}}, {"s": {"A": "1"}, "t": {"B": "1"}}, Decision(False, True, {}), id="new-secret-used"
        ),
        pytest.param({"s": {"A": "1"}}, {"s": {"A": "1", "C": "1"}}, Decision(False, True, {}), id="new-key-used"),
        pytest.param(
            {"s": {"A": "1"}, "t": {"B": "1"}}, {"s": {"A": "1"}}, Decision(False, True, {}), id="secret-no-longer-used"
        ),
        pytest.param(
            {"w": {"P": "1", WHOLE: WHOLE}},
            {"w": {"P": "1", "Q": "1", WHOLE: WHOLE}},
            Decision(True, True, {"w": ("Q",)}),
            id="whole-secret-key-added",
        ),
        pytest.param(
            {"w": {"P": "1", "Q": "1", WHOLE: WHOLE}},
            {"w": {"P": "1", WHOLE: WHOLE}},
            Decision(True, True, {"w": ("Q",)}),
            id="whole-secret-key-removed",
        ),
    ],
)
def test_decide(stored: State | None, current: State, expected: Decision) -> None:
    assert decide(stored, current) == expected


@pytest.mark.parametrize("text", [None, "", "not json", "[1]", '{"s": 3}'])
def test_an_unreadable_stored_state_counts_as_none_or_empty(text: str | None) -> None:
    assert parse_state(text) in (None, {})
