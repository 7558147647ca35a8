"""The rollout decisions, by table."""

from __future__ import annotations

import base64

import pytest

from rules.references import How, Use, Via
from rules.rollout import (
    ABSENT,
    WHOLE,
    Decision,
    State,
    current_state,
    decide,
    describe_missing,
    is_generated,
    key_digests,
    missing_needs,
    opted_in,
    opted_out,
    parse_state,
    rolling_uses,
)

HMAC_KEY = b"k" * 32


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def test_digests_are_per_key_keyed_and_hide_the_value() -> None:
    digests = key_digests({"A": b64("hunter2"), "B": b64("hunter2")}, HMAC_KEY)

    assert digests["A"] != digests["B"]  # the key name is part of the message
    assert key_digests({"A": b64("hunter2")}, b"other-key" * 4)["A"] != digests["A"]
    assert "hunter2" not in str(digests)
    assert b64("hunter2") not in str(digests)


def test_digests_are_the_ones_services_already_store() -> None:
    # Stored on every service (rolled-for): a digest that changed between versions would roll every service once.
    data = {"A": b64("hunter2"), "B": "***not base64", "C": ""}

    assert key_digests(data, HMAC_KEY) == {"A": "dc1c35f5c059792b", "B": "1cd55d0237746a2d", "C": "ddb510960aac3414"}
    assert key_digests(data, b"other-key" * 4) == key_digests(data, b"other-key" * 4)  # the prepared key is its own
    assert key_digests(data, b"other-key" * 4) != key_digests(data, HMAC_KEY)


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
        pytest.param(
            {"secrets.smll.io/auto-rollout": "false"},
            {"env.secrets.smll.io/A": "s/k", "secrets.smll.io/auto-rollout": "true"},
            False,
            id="false-on-the-workload-wins-over-true-on-its-template",
        ),
        pytest.param(
            {"secrets.smll.io/auto-rollout": "true"},
            {"secrets.smll.io/auto-rollout": "false"},
            True,
            id="true-on-the-workload-wins-over-false-on-its-template",
        ),
        pytest.param(
            {"env.secrets.smll.io/A": "s/k"},
            {"secrets.smll.io/auto-rollout": "false"},
            False,
            id="false-on-the-template-of-a-linked-workload",
        ),
    ],
)
def test_which_services_roll(annotations: dict[str, str], template: dict[str, str], expected: bool) -> None:
    assert opted_in(annotations, template) is expected


def test_current_state_reads_only_the_keys_a_service_uses() -> None:
    uses = [
        Use("s", How(Via.ENV, "A"), frozenset({"A"})),
        Use("whole", How(Via.ENV_FROM)),
        Use("gone", How(Via.ENV, "X"), frozenset({"X"})),
    ]
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


@pytest.mark.parametrize(
    ("uses", "secrets", "expected"),
    [
        pytest.param(
            [Use("s", How(Via.ENV, "A"), frozenset({"A"}))], {"s": None}, {"s": ()}, id="secret-gone-secretKeyRef"
        ),
        pytest.param([Use("s", How(Via.LINK, "A"), frozenset({"A"}))], {"s": None}, {"s": ()}, id="secret-gone-link"),
        pytest.param([Use("s", How(Via.ENV_FROM))], {"s": None}, {"s": ()}, id="secret-gone-envFrom"),
        pytest.param([Use("s", How(Via.VOLUME, "v"))], {"s": None}, {"s": ()}, id="secret-gone-volume"),
        pytest.param(
            [Use("s", How(Via.ENV, "A"), frozenset({"A"}), optional=True)], {"s": None}, {}, id="optional-secretKeyRef"
        ),
        pytest.param([Use("s", How(Via.ENV_FROM), None, optional=True)], {"s": None}, {}, id="optional-envFrom"),
        pytest.param([Use("s", How(Via.VOLUME, "v"), None, optional=True)], {"s": None}, {}, id="optional-volume"),
        pytest.param(
            [Use("s", How(Via.ENV, "A"), frozenset({"A"})), Use("s", How(Via.VOLUME, "v"), frozenset({"B", "C"}))],
            {"s": {"C": "1"}},
            {"s": ("A", "B")},
            id="keys-gone-from-a-secret-that-exists",
        ),
        pytest.param([Use("s", How(Via.ENV_FROM))], {"s": {}}, {}, id="envFrom-of-an-empty-secret-starts"),
        pytest.param(
            [Use("s", How(Via.ENV, "A"), frozenset({"A"})), Use("s", How(Via.ENV_FROM))],
            {"s": None},
            {"s": ()},
            id="a-missing-secret-is-named-once",
        ),
    ],
)
def test_what_new_pods_would_miss(
    uses: list[Use], secrets: dict[str, dict[str, str] | None], expected: dict[str, tuple[str, ...]]
) -> None:
    assert missing_needs(uses, secrets) == expected


@pytest.mark.parametrize(
    ("uses", "secrets", "roll"),
    [
        pytest.param(
            [Use("s", How(Via.LINK, "A"), frozenset({"A"}))], {"s": None}, False, id="linked-secret-deleted-holds"
        ),
        pytest.param([Use("s", How(Via.ENV_FROM))], {"s": None}, False, id="envFrom-secret-deleted-holds"),
        pytest.param(
            [Use("s", How(Via.ENV, "A"), frozenset({"A"}), optional=True)],
            {"s": None},
            True,
            id="optional-ref-secret-deleted",
        ),
        pytest.param(
            [Use("s", How(Via.ENV_FROM), None, optional=True)], {"s": None}, True, id="optional-envFrom-deleted"
        ),
        pytest.param(
            [Use("s", How(Via.VOLUME, "v"), None, optional=True)],
            {"s": None},
            True,
            id="optional-volume-secret-deleted",
        ),
        pytest.param(
            [Use("s", How(Via.ENV, "A"), frozenset({"A"})), Use("t", How(Via.ENV_FROM), None, optional=True)],
            {"s": {"A": "2"}, "t": None},
            True,
            id="a-change-with-only-an-optional-secret-gone",
        ),
        pytest.param(
            [Use("s", How(Via.ENV, "A"), frozenset({"A"})), Use("t", How(Via.ENV, "B"), frozenset({"B"}))],
            {"s": {"A": "2"}, "t": None},
            False,
            id="a-change-while-a-needed-secret-is-gone",
        ),
        pytest.param(
            [Use("s", How(Via.ENV, "A"), frozenset({"A"}))], {"s": {"B": "1"}}, False, id="needed-key-removed-holds"
        ),
    ],
)
def test_a_change_rolls_only_into_pods_that_can_start(
    uses: list[Use], secrets: dict[str, dict[str, str] | None], roll: bool
) -> None:
    before = {"s": {"A": "1"}, "t": {"B": "1"}}
    stored = current_state(uses, {name: before[name] for name in secrets})

    decision = decide(stored, current_state(uses, secrets), missing_needs(uses, secrets))

    assert decision.changed  # there is a change of data every time
    assert decision.roll is roll
    assert decision.record is roll  # a held change is not recorded: it is still seen once the Secret is back
    assert bool(decision.held) is not roll


def test_a_held_change_is_rolled_once_the_secret_is_back_with_new_values_and_not_with_the_same() -> None:
    uses = [Use("s", How(Via.LINK, "A"), frozenset({"A"}))]
    stored = current_state(uses, {"s": {"A": "1"}})
    assert decide(stored, current_state(uses, {"s": None}), missing_needs(uses, {"s": None})).held == {"s": ()}

    same = {"s": {"A": "1"}}
    assert decide(stored, current_state(uses, same), missing_needs(uses, same)) == NO_CHANGE
    new = {"s": {"A": "2"}}
    assert decide(stored, current_state(uses, new), missing_needs(uses, new)) == Decision(True, True, {"s": ("A",)})


def test_a_held_rollout_is_described_by_names_only() -> None:
    assert describe_missing({"s": (), "t": ("A", "B"), "u": ("C",)}) == (
        "secret 's' does not exist; secret 't' has no keys A, B; secret 'u' has no key C"
    )


@pytest.mark.parametrize(
    ("annotations", "template", "expected"),
    [
        pytest.param({"secrets.smll.io/auto-rollout": "false"}, {}, True, id="false-on-the-workload"),
        pytest.param({}, {"secrets.smll.io/auto-rollout": " False "}, True, id="false-on-the-template"),
        pytest.param(
            {"secrets.smll.io/auto-rollout": "true"},
            {"secrets.smll.io/auto-rollout": "false"},
            False,
            id="the-workload-wins-over-its-template",
        ),
        pytest.param({}, {}, False, id="unset"),
        pytest.param({"secrets.smll.io/auto-rollout": "no"}, {}, False, id="only-false-opts-out"),
        pytest.param({"env.secrets.smll.io/A": "s/k"}, {}, False, id="links-are-not-an-opt-out"),
    ],
)
def test_only_auto_rollout_false_opts_out(
    annotations: dict[str, str], template: dict[str, str], expected: bool
) -> None:
    assert opted_out(annotations, template) is expected


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param({"smll.io/secret-type": "database"}, True, id="database"),
        pytest.param({"smll.io/secret-type": "registry"}, True, id="registry"),
        pytest.param({"smll.io/secret-type": "custom"}, False, id="custom"),
        pytest.param({}, False, id="unlabeled-is-custom"),
    ],
)
def test_generated_secrets_are_told_by_their_type_label(labels: dict[str, str], expected: bool) -> None:
    assert is_generated(labels) is expected


DB = Use("orders-credentials", How(Via.ENV, "DATABASE_URL"), frozenset({"DATABASE_URL"}))
REGISTRY = Use("registry-credentials", How(Via.ENV_FROM))
CUSTOM = Use("stripe", How(Via.ENV, "API_KEY"), frozenset({"API_KEY"}))
GENERATED = {"orders-credentials", "registry-credentials"}


@pytest.mark.parametrize(
    ("opted_in_", "opted_out_", "expected"),
    [
        pytest.param(True, False, (DB, REGISTRY, CUSTOM), id="opted-in-rolls-for-every-secret"),
        pytest.param(False, False, (DB, REGISTRY), id="a-plain-reader-rolls-for-generated-secrets-only"),
        pytest.param(False, True, (), id="auto-rollout-false-rolls-for-nothing"),
    ],
)
def test_a_rotation_of_generated_credentials_rolls_every_reader_that_did_not_opt_out(
    opted_in_: bool, opted_out_: bool, expected: tuple[Use, ...]
) -> None:
    uses = (DB, REGISTRY, CUSTOM)

    assert rolling_uses(uses, opted_in=opted_in_, opted_out=opted_out_, generated=GENERATED) == expected


def test_a_plain_reader_of_database_credentials_rolls_once_per_rotation() -> None:
    """First seen: recorded; the rotation: one rollout; the same data again: nothing."""
    uses = rolling_uses([DB, CUSTOM], opted_in=False, opted_out=False, generated=GENERATED)
    before = current_state(uses, {"orders-credentials": {"DATABASE_URL": "d1"}, "stripe": {"API_KEY": "a1"}})
    after = current_state(uses, {"orders-credentials": {"DATABASE_URL": "d2"}, "stripe": {"API_KEY": "a2"}})

    assert decide(None, before) == Decision(roll=False, record=True, changed={})
    assert decide(before, after) == Decision(roll=True, record=True, changed={"orders-credentials": ("DATABASE_URL",)})
    assert decide(after, after) == Decision(roll=False, record=False, changed={})
