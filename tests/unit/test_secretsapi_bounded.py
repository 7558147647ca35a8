"""The write-only API against a tenant that makes its views expensive (security review after issue 22): one Secret of
20,000 short keys loaded whole (``envFrom``) by 200 Deployments must not freeze the process that also serves both
``failurePolicy: Fail`` webhooks. The work of a view is counted (uses looked at, entries made), never timed."""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from kubernetes_asyncio import client

import webhook.secretsapi as edge
from rules import protection
from rules import secretsapi as api
from rules.protection import Owner, Referrer, referrer_of
from rules.references import How, Use, Via
from rules.workloads import resource_path
from tests.unit.fakeapi import FakeApi
from webhook import apiprotocol
from webhook.referrers import ReferrerIndex

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
KEYS = 20_000
WORKLOADS = 200
SECRETS = resource_path("Secret", "shop")


def big_secret(name: str = "big", keys: int = KEYS) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "creationTimestamp": "2026-11-01T00:00:00Z",
        },
        "data": {f"K{n:05d}": "eA==" for n in range(keys)},
    }


def env_from_deployment(number: int, secret: str = "big") -> dict[str, Any]:
    container = {"name": "app", "image": "busybox", "envFrom": [{"secretRef": {"name": secret}}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"app-{number:03d}", "namespace": "shop", "uid": f"uid-{secret}-app-{number:03d}"},
        "spec": {"replicas": 0, "template": {"spec": {"containers": [container]}}},
    }


def attack_index(secrets: Iterable[str] = ("big",)) -> ReferrerIndex:
    index = ReferrerIndex()
    for secret in secrets:
        for number in range(WORKLOADS):
            index.add(referrer_of(env_from_deployment(number, secret), "Deployment"))
    return index


class Budget:
    """Wraps protection's ``usage`` where the view calls it: counts the uses it is given to look at, and stops the
    view (an AssertionError) once they pass ``limit`` — the attack's keys times workloads would be 4,000,000."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls = 0
        self.uses = 0

    def __call__(self, secret: str, referrers: Iterable[Referrer], by_uid: Mapping[str, Referrer], **kw: Any) -> Any:
        referrers = list(referrers)
        self.calls += 1
        self.uses += sum(len(r.uses) for r in referrers)
        assert self.uses <= self.limit, f"the view looked at more than {self.limit} uses ({self.calls} usage calls)"
        return protection.usage(secret, referrers, by_uid, **kw)


@pytest.fixture
def budget(monkeypatch: pytest.MonkeyPatch) -> Budget:
    found = Budget(2 * (KEYS + WORKLOADS))
    monkeypatch.setattr(api, "usage", found)
    return found


def test_a_secret_of_many_keys_used_whole_by_many_is_viewed_with_bounded_work(budget: Budget) -> None:
    index = attack_index()
    found = api.secret_view(big_secret(), index.referrers("shop", "big"), index.by_uid, NOW)
    assert budget.uses <= 2 * (KEYS + WORKLOADS)
    keys = found.body["keys"]
    assert [key["name"] for key in keys] == [f"K{n:05d}" for n in range(KEYS)], "every key name is listed"
    users = sorted(f"deployment/app-{n:03d} (envFrom)" for n in range(WORKLOADS))
    for key in keys:
        assert key["usedBy"] == users[: api.USERS_SHOWN]
        assert key["moreUsers"] == WORKLOADS - api.USERS_SHOWN
    # The view grows with the keys, never with keys times workloads (before: 117 MB for this one Secret).
    assert len(json.dumps(found.body)) < 300 * KEYS
    assert found.users == WORKLOADS
    row = apiprotocol.table([found], NOW)["rows"][0]["cells"]
    assert row[0] == "big"
    assert row[2].startswith("K00000,K00001,")
    assert len(row[2]) <= 60
    assert row[3] == WORKLOADS, "the USERS column counts every service, not only those a key lists"


def test_the_table_and_the_list_do_not_repeat_the_work_per_row(budget: Budget) -> None:
    index = attack_index(("big-0", "big-1", "big-2"))
    views = [
        api.secret_view(big_secret(name, 2_000), index.referrers("shop", name), index.by_uid, NOW)
        for name in ("big-0", "big-1", "big-2")
    ]
    before = budget.uses
    table = apiprotocol.table(views, NOW)
    assert budget.uses == before, "the Table is made from the views, with no use looked at again"
    assert [row["cells"][3] for row in table["rows"]] == [WORKLOADS] * 3
    assert before <= 3 * 2 * (2_000 + WORKLOADS)


def test_advice_is_bounded_too() -> None:
    stale = big_secret()
    stale["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    stale["data"] = {f"KEY{n}": "eA==" for n in range(KEYS)}  # every key stale, every name vague
    found = api.secret_view(stale, [], {}, NOW).body["advice"]
    assert len(found) <= api.USERS_SHOWN + 2
    assert len(json.dumps(found)) < 2_000
    assert any("and 19995 more" in line and "rotate credentials regularly" in line for line in found)
    assert any("and 19995 more" in line and "use descriptive key names" in line for line in found)


# ---- the merged users are those key-by-key usage finds ------------------------------------------------------------


def slow_key_users(
    secret: str, keys: Iterable[str], referrers: Sequence[Referrer], by_uid: Mapping[str, Referrer]
) -> dict[str, dict[str, tuple[str, ...]]]:
    """The reference: protection's usage once per key over every referrer (what the view did before)."""
    return {
        key: dict(
            protection.usage(
                secret,
                [
                    replace(
                        r, uses=tuple(u for u in r.uses if u.secret == secret and (u.keys is None or key in u.keys))
                    )
                    for r in referrers
                ],
                by_uid,
            ).report
        )
        for key in keys
    }


def deployment(name: str, *uses: Use) -> Referrer:
    return Referrer("Deployment", "shop", name, f"uid-{name}", None, tuple(uses))


def pod_of(owner: Referrer, number: int, *uses: Use) -> Referrer:
    return Referrer("Pod", "shop", f"{owner.name}-{number}", f"uid-{owner.name}-{number}",
                    Owner("Deployment", owner.name, owner.uid), tuple(uses), pods=1)  # fmt: skip


ENV_A = Use("s", How(Via.ENV, "A_VAR"), frozenset({"A"}))
LINK_A = Use("s", How(Via.LINK, "A_VAR"), frozenset({"A"}))
ENV_FROM = Use("s", How(Via.ENV_FROM), None)
VOLUME = Use("s", How(Via.VOLUME, "certs"), None)
VOLUME_B = Use("s", How(Via.VOLUME, "only-b"), frozenset({"B"}))
OPTIONAL_C = Use("s", How(Via.ENV, "C_VAR"), frozenset({"C"}), optional=True)
OTHER = Use("other", How(Via.ENV_FROM), None)
WEB = deployment("web", ENV_A, LINK_A, VOLUME)
WORKER = deployment("worker", ENV_FROM, OTHER)
JOBS = deployment("jobs", VOLUME_B, OPTIONAL_C)
ROLLING = deployment("rolling", ENV_A)  # its old pods still read the whole Secret and B


@pytest.mark.parametrize(
    "referrers",
    [
        [WEB, WORKER, JOBS],
        [WEB, pod_of(WEB, 1, ENV_A, LINK_A, VOLUME), WORKER],
        [ROLLING, pod_of(ROLLING, 1, ENV_A, ENV_FROM), pod_of(ROLLING, 2, ENV_FROM)],
        [ROLLING, pod_of(ROLLING, 1, VOLUME_B)],
        [ROLLING, pod_of(ROLLING, 1, ENV_FROM, VOLUME_B), pod_of(ROLLING, 2, ENV_FROM, VOLUME_B)],
        [JOBS, deployment("idle", ENV_FROM), replace(WORKER, idle=True, kind="ReplicaSet")],
        [deployment(f"d{n}", ENV_FROM) for n in range(12)] + [WEB],
        [],
    ],
    ids=["mixed", "pod-of-owner", "old-pods-whole", "old-pod-keyed", "old-pods-both", "idle", "many", "none"],
)
def test_each_key_s_users_are_those_key_by_key_usage_finds(referrers: list[Referrer]) -> None:
    keys = ["A", "B", "C", "D"]
    by_uid = {r.uid: r for r in referrers}
    expected = slow_key_users("s", keys, referrers, by_uid)
    found = api.key_users("s", referrers, by_uid)
    for key in keys:
        assert found.of(key) == expected[key], key
        shown = [f"{label} ({', '.join(hows)})" for label, hows in expected[key].items()]
        assert found.shown(key) == (shown[: api.USERS_SHOWN], max(len(shown) - api.USERS_SHOWN, 0)), key
    assert found.labels() == {label for users in expected.values() for label in users}


def test_a_user_with_many_uses_lists_the_first_and_counts_the_rest() -> None:
    many = deployment("web", *(Use("s", How(Via.VOLUME, f"v{n:02d}"), None) for n in range(30)), ENV_A)
    found = api.key_users("s", [many], {many.uid: many})
    (entry,), more = found.shown("A")
    assert more == 0
    assert entry == "deployment/web (env A_VAR, volume v00, volume v01, volume v02, volume v03 and 26 more)"


# ---- the edge: a listing lets the webhooks in between Secrets -------------------------------------------------------


def edge_of(monkeypatch: pytest.MonkeyPatch, index: ReferrerIndex) -> tuple[FakeApi, edge.SecretsApi]:
    fake = FakeApi()
    fake.install(monkeypatch)

    async def answer(kube: Any, method: str, path: str, *, body: Any = None, query: Any = None, **kw: Any) -> Any:
        if path.endswith("/subjectaccessreviews"):
            return {**body, "status": {"allowed": True}}
        return await fake.json_request(kube, method, path, body=body, query=query, **kw)

    monkeypatch.setattr(edge, "json_request", answer)
    monkeypatch.setattr("kubeio.rest.json_request", answer)
    secrets = edge.SecretsApi(index, api=cast(client.ApiClient, object()), clock=lambda: NOW)
    monkeypatch.setattr(secrets, "authenticate", lambda request: apiprotocol.Identity("viewer"))
    return fake, secrets


async def turns_during(work: Awaitable[web.StreamResponse]) -> tuple[int, Any]:
    """How many times the loop ran another task (a webhook's, a probe's) while ``work`` was answered."""
    ticks = 0
    done = False

    async def webhook_turns() -> None:
        nonlocal ticks
        while not done and ticks < 100_000:
            ticks += 1
            await asyncio.sleep(0)

    turns = asyncio.create_task(webhook_turns())
    await asyncio.sleep(0)
    start = ticks
    response = await work
    between = ticks - start
    done = True
    await turns
    return between, json.loads(cast(web.Response, response).body)  # type: ignore[arg-type]


async def test_a_listing_yields_to_the_webhooks_between_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, secrets = edge_of(monkeypatch, ReferrerIndex())
    for number in range(12):
        fake.put(SECRETS, big_secret(f"s{number:02d}", 3))
    listing = make_mocked_request(
        "GET", f"{edge.BASE}/namespaces/shop/writeonlysecrets", match_info={"namespace": "shop"}
    )
    between, found = await turns_during(secrets.list_views(listing))
    assert len(found["items"]) == 12
    assert between >= 12, f"the event loop ran other work {between} times during a listing of 12 Secrets"


async def test_the_big_secret_s_view_is_made_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, secrets = edge_of(monkeypatch, attack_index())
    fake.put(SECRETS, big_secret())
    get = make_mocked_request(
        "GET", f"{edge.BASE}/namespaces/shop/writeonlysecrets/big", match_info={"namespace": "shop", "name": "big"}
    )
    between, found = await turns_during(secrets.get_view(get))
    assert len(found["keys"]) == KEYS
    assert between >= 2, "the view and its JSON are made while the loop serves the webhooks"


# ---- the validating webhook's key removal, for a Secret of many keys -------------------------------------------------


def test_removing_many_keys_is_judged_with_messages_that_name_a_few() -> None:
    """One usage pass (no keys x workloads), but the subject named every removed key, in the refusal and in each
    warning about a ReplicaSet at zero: 20,000 keys by 200 such ReplicaSets was 24 MB of warnings."""
    keys = frozenset(f"K{n:05d}" for n in range(KEYS))
    ref = [Use("big", How(Via.ENV, f"V{n}"), frozenset({f"K{n:05d}"})) for n in range(3)]
    idle = [
        Referrer("ReplicaSet", "shop", f"rs-{n}", f"uid-rs-{n}", None, (ref[0],), idle=True) for n in range(WORKLOADS)
    ]
    found = protection.usage("big", idle, {r.uid: r for r in idle}, keys=keys)
    warnings = protection.dormant_warnings(protection.keys_subject("big", keys), found.dormant)
    assert len(warnings) == WORKLOADS
    assert all(len(line) < 500 for line in warnings)
    live = deployment("web", *ref)
    used = protection.usage("big", [live], {live.uid: live}, keys=keys)
    refusal = protection.key_removal_refusal("big", used.needed, used.report)
    assert refusal == (
        'keys K00000, K00001, K00002 of secret "big" is used by deployment/web (env V0, env V1, env V2); remove these '
        "references first"
    )
    assert len(protection.keys_subject("big", keys)) < 200
