"""The write-only Secrets API's core, by table: what a SecretWrite asks, what it does to a Secret, what a listing
shows (never a value), the best-practice advice, and who the front proxy says is asking."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest

from rules import secretsapi as api
from rules.keynames import vague_key
from rules.names import KEYS_CHANGED_AT
from rules.protection import Owner, Referrer
from rules.references import How, Use, Via
from rules.times import format_time
from webhook import apiprotocol

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_body(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": api.WRITE_KIND, "spec": {"secretName": "stripe", **spec}}


def secret(data: dict[str, str], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "stripe", "namespace": "shop", "resourceVersion": "7", **metadata},
        "type": "Opaque",
        "data": {k: b64(v) for k, v in data.items()},
    }


# ---- parsing a SecretWrite ---------------------------------------------------------------------------------------


def test_a_write_takes_base64_and_plain_values_and_keys_to_remove() -> None:
    request = api.parse_write(write_body(data={"A": b64("x")}, stringData={"B": "y"}, remove=["C"]), "shop")
    assert request == api.WriteRequest("shop", "stripe", {"A": b"x", "B": b"y"}, frozenset({"C"}), False)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not an object", "must be a SecretWrite object"),
        ({"kind": "Secret", "apiVersion": "v1", "spec": {}}, "expected kind SecretWrite"),
        ({"spec": "x"}, "spec is required"),
        (write_body(secretName="Bad_Name", stringData={"A": "x"}), "not a valid Secret name"),
        (write_body(stringData={"a b": "x"}), "'a b'"),
        (write_body(stringData={"..": "x"}), "not a valid Secret key"),
        (write_body(data={"A": "not base64!"}), "is not valid base64"),
        (write_body(data={"A": 5}), "must be a base64 string"),
        (write_body(stringData={"A": 5}), "must be a string"),
        (write_body(data={"A": b64("x")}, stringData={"A": "y"}), "give each key once"),
        (write_body(stringData={"A": "x"}, remove=["A"]), "a write sets or removes a key, not both"),
        (write_body(remove="A"), "must be a list of key names"),
        (write_body(), "nothing to do"),
        (write_body(stringData={"A": "x"}, allowGenerated="yes"), "must be true or false"),
        (write_body(stringData=["A"]), "must be a map"),
    ],
)
def test_bad_writes_are_refused_with_what_to_fix(body: Any, says: str) -> None:
    with pytest.raises(api.ApiError) as refused:
        api.parse_write(body, "shop")
    assert says in refused.value.message
    assert refused.value.code in (400, 422)
    assert "x" * 3 not in json.dumps(apiprotocol.error_status(refused.value))


def test_a_namespace_in_the_body_must_be_the_one_of_the_path() -> None:
    with pytest.raises(api.ApiError, match="does not match"):
        api.parse_write({**write_body(stringData={"A": "x"}), "metadata": {"namespace": "other"}}, "shop")


def test_a_refusal_never_carries_the_value() -> None:
    value = "sk_live_canary_value"
    with pytest.raises(api.ApiError) as refused:
        api.parse_write(write_body(stringData={"bad key": value}), "shop")
    assert value not in json.dumps(apiprotocol.error_status(refused.value))


# ---- planning the write ------------------------------------------------------------------------------------------


def request(set_: dict[str, str] | None = None, remove: set[str] | None = None, allow: bool = False) -> Any:
    values = {k: v.encode() for k, v in (set_ or {}).items()}
    return api.WriteRequest("shop", "stripe", values, frozenset(remove or ()), allow)


def stamps_of(body: dict[str, Any]) -> dict[str, str]:
    return json.loads(body["metadata"]["annotations"][KEYS_CHANGED_AT])  # type: ignore[no-any-return]


def test_a_missing_secret_is_created_with_the_keys_and_their_change_times() -> None:
    body, result = api.plan_write(None, request({"B": "2", "A": "1"}), NOW)
    assert body["data"] == {"A": b64("1"), "B": b64("2")}
    assert body["type"] == "Opaque"
    assert stamps_of(body) == {"A": "2026-11-27T12:00:00Z", "B": "2026-11-27T12:00:00Z"}
    assert result == api.WriteResult(created=True, set=("A", "B"))


def test_keys_not_named_are_kept_and_every_key_sent_is_stamped() -> None:
    current = secret(
        {"A": "1", "B": "2", "C": "3", "D": "4"},
        annotations={KEYS_CHANGED_AT: '{"A":"2026-01-01T00:00:00Z","D":"2026-01-02T00:00:00Z"}'},
    )
    current["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    body, result = api.plan_write(current, request({"A": "1", "B": "new"}, {"C"}), NOW)
    assert body["data"] == {"A": b64("1"), "B": b64("new"), "D": b64("4")}
    assert body["metadata"]["resourceVersion"] == "7", "the write carries the version read: no lost update"
    assert "managedFields" not in body["metadata"]
    # A, sent with the value it held, is stamped as B is: the stamp never tells a right guess from a wrong one.
    assert stamps_of(body) == {"A": "2026-11-27T12:00:00Z", "B": "2026-11-27T12:00:00Z", "D": "2026-01-02T00:00:00Z"}
    assert result == api.WriteResult(set=("A", "B"), removed=("C",))


@pytest.mark.parametrize(
    ("current", "wanted", "code", "says"),
    [
        (None, request(remove={"A"}), 404, 'secret "stripe" not found in namespace "shop"'),
        (secret({"A": "1"}), request(remove={"B"}), 404, "has no key B (its keys: A)"),
        (secret({"A": "1"}, labels={"smll.io/secret-type": "database"}), request({"A": "2"}), 409, "allowGenerated"),
        (
            secret({"A": "1"}, labels={"smll.io/secret-type": "registry"}),
            request({"B": "2"}, allow=True),
            409,
            "holds exactly its contract keys (A); B cannot be added or removed",
        ),
        (
            secret({"A": "1"}, labels={"smll.io/secret-type": "database"}),
            request(remove={"A"}, allow=True),
            409,
            "cannot be added or removed",
        ),
        (secret({"A": "1"}), request({"BIG": "x" * (1 << 20)}), 413, "at most 1048576"),
        (None, request({"BIG": "x" * (1 << 20)}), 413, "at most 1048576"),
    ],
    ids=[
        "remove-missing-secret",
        "remove-missing-key",
        "generated",
        "generated-new-key",
        "generated-remove",
        "too-large",
        "too-large-new",
    ],
)
def test_writes_that_cannot_be_done(current: Any, wanted: Any, code: int, says: str) -> None:
    with pytest.raises(api.ApiError) as refused:
        api.plan_write(current, wanted, NOW)
    assert refused.value.code == code
    assert says in refused.value.message


def test_a_generated_secret_takes_existing_keys_when_asked_explicitly() -> None:
    current = secret({"A": "1"}, labels={"smll.io/secret-type": "database"})
    body, result = api.plan_write(current, request({"A": "2"}, allow=True), NOW)
    assert body["data"] == {"A": b64("2")}
    assert body["metadata"]["labels"] == {"smll.io/secret-type": "database"}
    assert result.set == ("A",)


def test_the_answer_names_keys_and_never_values() -> None:
    wanted = request({"A": "sk_live_value"}, {"B"})
    answer = api.write_answer(wanted, api.WriteResult(set=("A",), removed=("B",)))
    assert "sk_live_value" not in json.dumps(answer)
    assert b64("sk_live_value") not in json.dumps(answer)
    assert answer["spec"] == {"secretName": "stripe", "keys": ["A"], "remove": ["B"], "allowGenerated": False}
    assert answer["status"] == {"created": False, "set": ["A"], "removed": ["B"]}
    assert answer["metadata"]["name"] == "stripe"


# ---- when each key changed ---------------------------------------------------------------------------------------


def managed(manager: str, time: str, *keys: str) -> dict[str, Any]:
    return {"manager": manager, "time": time, "fieldsV1": {"f:data": {f"f:{k}": {} for k in keys}}}


@pytest.mark.parametrize(
    ("stamps", "fields", "expected"),
    [
        ({}, [], {"A": "2026-01-01T00:00:00Z"}),  # nothing known: when the Secret was made
        ({"A": "2026-02-01T00:00:00Z"}, [], {"A": "2026-02-01T00:00:00Z"}),
        ({}, [managed("kubectl", "2026-03-01T00:00:00Z", "A")], {"A": "2026-03-01T00:00:00Z"}),
        # Another manager wrote after the API's stamp: its write is the newer change.
        (
            {"A": "2026-02-01T00:00:00Z"},
            [managed("kubectl", "2026-03-01T00:00:00Z", "A")],
            {"A": "2026-03-01T00:00:00Z"},
        ),
        # The API owns the key: its manager entry moves with every key it writes, so the stamp is the truth.
        (
            {"A": "2026-02-01T00:00:00Z"},
            [managed(api.FIELD_MANAGER, "2026-05-01T00:00:00Z", "A", "B")],
            {"A": "2026-02-01T00:00:00Z"},
        ),
    ],
    ids=["created", "stamp", "managed-fields", "newer-direct-write", "api-owned"],
)
def test_when_each_key_last_changed(
    stamps: dict[str, str], fields: list[dict[str, Any]], expected: dict[str, str]
) -> None:
    metadata: dict[str, Any] = {"creationTimestamp": "2026-01-01T00:00:00Z", "managedFields": fields}
    if stamps:
        metadata["annotations"] = {KEYS_CHANGED_AT: json.dumps(stamps)}
    found = api.key_changes(secret({"A": "1"}, **metadata))
    assert {k: format_time(v) for k, v in found.items()} == expected


# ---- the view and its advice -------------------------------------------------------------------------------------


def deployment(name: str, *uses: Use) -> Referrer:
    return Referrer("Deployment", "shop", name, f"uid-{name}", None, tuple(uses))


def pod_of(owner: Referrer, *uses: Use) -> Referrer:
    return Referrer("Pod", "shop", f"{owner.name}-1", f"uid-{owner.name}-pod", Owner("Deployment", owner.name,
                    owner.uid), tuple(uses), pods=1)  # fmt: skip


def test_the_view_lists_keys_with_their_users_and_never_a_value() -> None:
    web = deployment("web", Use("stripe", How(Via.ENV, "API_KEY"), frozenset({"A"})))
    worker = deployment("worker", Use("stripe", How(Via.ENV_FROM), None))
    referrers = [web, worker, pod_of(web, Use("stripe", How(Via.ENV, "API_KEY"), frozenset({"A"})))]
    view = api.view(
        secret({"A": "sk_live_1", "B": "sk_live_2"}, creationTimestamp="2026-11-01T00:00:00Z"),
        referrers,
        {r.uid: r for r in referrers},
        NOW,
    )
    assert "sk_live" not in json.dumps(view)
    assert view["kind"] == api.VIEW_KIND
    assert view["type"] == "custom"
    assert view["keys"] == [
        {
            "name": "A",
            "lastChanged": "2026-11-01T00:00:00Z",
            "usedBy": ["deployment/web (env API_KEY)", "deployment/worker (envFrom)"],
        },
        {"name": "B", "lastChanged": "2026-11-01T00:00:00Z", "usedBy": ["deployment/worker (envFrom)"]},
    ]
    assert view["advice"] == ["A, B says little of what it holds: use descriptive key names"]


def test_idle_referrers_do_not_count_as_users() -> None:
    idle = Referrer(
        "ReplicaSet", "shop", "web-1", "rs", None, (Use("stripe", How(Via.ENV, "X"), frozenset({"A"})),), idle=True
    )
    view = api.view(secret({"A": "1"}), [idle], {"rs": idle}, NOW)
    assert view["keys"][0]["usedBy"] == []


@pytest.mark.parametrize(
    ("users", "keys", "shared"),
    [
        ({"deployment/a": {"A"}, "deployment/b": {"B"}}, {"A", "B"}, True),
        ({"deployment/a": {"A"}, "deployment/b": {"A"}}, {"A", "B"}, False),  # both read the same part
        ({"deployment/a": {"A", "B"}, "deployment/b": {"B"}}, {"A", "B"}, False),  # a reads it all
        ({"deployment/a": {"A"}}, {"A", "B"}, False),  # one service
        ({"deployment/a": {"A"}, "deployment/b": {"B"}, "deployment/c": {"C"}}, {"A", "B", "C"}, True),
    ],
    ids=["two-disjoint", "same-subset", "one-reads-all", "one-user", "three"],
)
def test_a_secret_shared_by_services_that_each_read_only_some_keys(
    users: dict[str, set[str]], keys: set[str], shared: bool
) -> None:
    by_key = {key: {label: ("env",) for label, read in users.items() if key in read} for key in keys}
    found = api.advice(
        secret(dict.fromkeys(keys, "v")), api.KeyUsers({}, by_key), dict.fromkeys(keys, NOW), NOW, 90 * DAY
    )
    assert any("scope secrets per service" in line for line in found) is shared


@pytest.mark.parametrize(
    ("age", "stale"), [(89 * DAY, False), (91 * DAY, True), (datetime.timedelta(0), False)], ids=["89d", "91d", "new"]
)
def test_a_key_unchanged_too_long_is_flagged(age: datetime.timedelta, stale: bool) -> None:
    found = api.advice(secret({"STRIPE_KEY": "v"}), api.KeyUsers({}, {}), {"STRIPE_KEY": NOW - age}, NOW, 90 * DAY)
    assert (found == [f"STRIPE_KEY unchanged for {age.days}d (more than 90d): rotate credentials regularly"]) is stale


@pytest.mark.parametrize(
    ("key", "vague"),
    [
        ("KEY", True),
        ("key2", True),
        ("SECRET_VALUE", True),
        ("password", True),
        ("MyToken", True),
        ("x", True),
        ("123", True),
        ("STRIPE_SECRET_KEY", False),
        ("DATABASE_URL", False),
        ("API_KEY", False),
        ("githubToken", False),
        (".dockerconfigjson", False),
    ],
)
def test_key_names_that_say_little(key: str, vague: bool) -> None:
    assert vague_key(key) is vague


def test_generated_secrets_get_no_key_name_advice() -> None:
    database = secret({"KEY": "v"}, labels={"smll.io/secret-type": "database"})
    assert api.advice(database, api.KeyUsers({}, {}), {"KEY": NOW}, NOW, 90 * DAY) == []


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (45, "45s"), (150, "2m30s"), (600, "10m"), (4 * 3600 + 60, "4h1m"), (30 * 3600, "30h"),
     (3 * 86400 + 3600, "3d1h"), (120 * 86400, "120d"), (800 * 86400, "2y"), (-5, "0s")],
)  # fmt: skip
def test_ages_read_as_kubectl_shows_them(seconds: int, shown: str) -> None:
    assert api.human_age(datetime.timedelta(seconds=seconds)) == shown
