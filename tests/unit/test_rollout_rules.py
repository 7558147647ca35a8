"""The rollout decisions, by table."""

from __future__ import annotations

import base64
import hmac

import pytest

from rules.references import How, Use, Via
from rules.rollout import (
    ABSENT,
    CHANGED,
    FORMAT,
    WHOLE,
    Decision,
    Recorded,
    State,
    current_state,
    decide,
    describe_missing,
    format_state,
    is_generated,
    key_digests,
    legacy_key_digests,
    migrate,
    missing_needs,
    opted_in,
    opted_out,
    parse_recorded,
    parse_state,
    rolling_uses,
)

HMAC_KEY = b"k" * 32


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def digests(data: dict[str, str], hmac_key: bytes = HMAC_KEY, at: tuple[str, str] = ("shop", "s")) -> dict[str, str]:
    return key_digests(data, hmac_key, namespace=at[0], secret=at[1])


def test_digests_are_per_key_keyed_and_hide_the_value() -> None:
    found = digests({"A": b64("hunter2"), "B": b64("hunter2")})

    assert found["A"] != found["B"]  # the key name is part of the message
    assert digests({"A": b64("hunter2")}, b"other-key" * 4)["A"] != found["A"]
    assert "hunter2" not in str(found)
    assert b64("hunter2") not in str(found)


PLACES = [
    ("shop-dev", "stripe"),
    ("shop-prod", "stripe"),  # the same Secret name in another namespace: what edit in one and view in the other see
    ("shop-prod", "stripe-copy"),  # another Secret in the same namespace
    ("shop-prods", "tripe"),  # names are separated (the API's names hold no NUL): no two places share a message
    ("shop-prodstripe", ""),
]


def test_the_same_key_and_value_in_two_secrets_or_two_namespaces_have_different_digests() -> None:
    # The digests are on workloads, readable with view: equal digests would tell that prod holds the value a
    # developer put in dev (and let them test guesses by rolling a dev Deployment).
    data = {"API_KEY": b64("sk_live_1")}

    found = {place: digests(data, at=place)["API_KEY"] for place in PLACES}

    assert len(set(found.values())) == len(PLACES)
    assert all(digests(data, at=place)["API_KEY"] == digest for place, digest in found.items())  # stable


def test_digests_are_the_ones_services_already_store() -> None:
    # Stored on every service (rolled-for): a digest that changed between versions would roll every service once.
    data = {"A": b64("hunter2"), "B": "***not base64", "C": ""}

    assert digests(data) == {"A": "3e46e3d148c38354", "B": "c506c6c88d0bbc28", "C": "03b516a77ea81ba6"}
    assert digests(data)["A"] == hmac.new(HMAC_KEY, b"shop\0s\0A\0hunter2", "sha256").hexdigest()[:16]
    assert digests(data, b"other-key" * 4) == digests(data, b"other-key" * 4)  # the prepared key is its own
    assert digests(data, b"other-key" * 4) != digests(data)
    assert digests(data, at=("shop", "t")) != digests(data)  # the prepared place is its own


def test_legacy_digests_are_the_ones_versions_before_the_format_stored() -> None:
    # MIGRATION ONLY: what a record without FORMAT holds (HMAC of key NUL value, bound to no Secret).
    data = {"A": b64("hunter2"), "B": "***not base64", "C": ""}

    assert legacy_key_digests(data, HMAC_KEY) == {
        "A": "dc1c35f5c059792b",
        "B": "1cd55d0237746a2d",
        "C": "ddb510960aac3414",
    }
    assert legacy_key_digests(data, HMAC_KEY)["A"] == hmac.new(HMAC_KEY, b"A\0hunter2", "sha256").hexdigest()[:16]


def test_a_record_is_written_in_the_format_and_one_without_it_is_legacy() -> None:
    state = {"s": {"A": "3e46e3d148c38354"}}

    assert format_state(state) == FORMAT + '{"s":{"A":"3e46e3d148c38354"}}'
    assert parse_recorded(format_state(state)) == Recorded(state, legacy=False)
    assert parse_state(format_state(state)) == state
    old = '{"s":{"A":"dc1c35f5c059792b"}}'  # as the versions before wrote it
    assert parse_recorded(old) == Recorded({"s": {"A": "dc1c35f5c059792b"}}, legacy=True)
    assert parse_state(old) is None  # compared only through migrate: its digests equal no current one
    assert parse_recorded(FORMAT + "not json") is None


@pytest.mark.parametrize(
    ("stored", "legacy", "current", "expected"),
    [
        pytest.param({"s": {"A": "old1"}}, {"s": {"A": "old1"}}, {"s": {"A": "new1"}}, {"s": {"A": "new1"}}, id="same"),
        pytest.param(
            {"s": {"A": "old1"}}, {"s": {"A": "old2"}}, {"s": {"A": "new2"}}, {"s": {"A": CHANGED}}, id="changed"
        ),
        pytest.param(
            {"s": {"A": "old1", "B": "oldb"}},
            {"s": {"A": "old1", "B": "oldc"}},
            {"s": {"A": "new1", "B": "newc"}},
            {"s": {"A": "new1", "B": CHANGED}},
            id="one-of-two-keys-changed",
        ),
        pytest.param({"s": {"A": ABSENT}}, {"s": {}}, {"s": {}}, {"s": {"A": ABSENT}}, id="still-absent"),
        pytest.param(
            {"s": {"A": ABSENT}}, {"s": {"A": "old1"}}, {"s": {"A": "new1"}}, {"s": {"A": CHANGED}}, id="appeared"
        ),
        pytest.param({"s": {"A": "old1"}}, {"s": None}, {"s": None}, {"s": {"A": CHANGED}}, id="secret-gone"),
        pytest.param(
            {"w": {"P": "oldp", WHOLE: WHOLE}},
            {"w": {"P": "oldp"}},
            {"w": {"P": "newp"}},
            {"w": {"P": "newp", WHOLE: WHOLE}},
            id="whole",
        ),
    ],
)
def test_migrate_a_legacy_record(
    stored: State,
    legacy: dict[str, dict[str, str] | None],
    current: dict[str, dict[str, str] | None],
    expected: State,
) -> None:
    assert migrate(stored, legacy, current) == expected


def test_a_migrated_record_rolls_only_for_what_changed() -> None:
    data = {"A": b64("a1"), "B": b64("b1")}
    uses = [Use("s", How(Via.ENV, "A"), frozenset({"A"})), Use("s", How(Via.ENV, "B"), frozenset({"B"}))]
    old = {"s": legacy_key_digests(data, HMAC_KEY)}  # what the version before recorded
    now = {**data, "B": b64("b2")}  # B changed while the controller was down (and upgraded)
    current = {"s": digests(now)}

    stored = migrate(current_state(uses, old), {"s": legacy_key_digests(now, HMAC_KEY)}, current)

    assert decide(stored, current_state(uses, current)) == Decision(True, True, {"s": ("B",)})
    unchanged = migrate(current_state(uses, old), {"s": legacy_key_digests(data, HMAC_KEY)}, {"s": digests(data)})
    assert decide(unchanged, current_state(uses, {"s": digests(data)})) == NO_CHANGE


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
