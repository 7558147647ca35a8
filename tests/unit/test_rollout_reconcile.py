"""The rollout reconciler against the in-memory API: which changes roll a service, and that each rolls it once."""

from __future__ import annotations

import datetime
import hmac
import json
from collections.abc import Callable

import pytest

from controller.frame.metrics import ControllerMetrics
from controller.frame.queue import WorkQueue
from controller.rollouts import Caches, Rollouts, ServiceKey
from rules.names import RESTARTED_AT, ROLLOUT_STATE, SECRET_TYPE_LABEL
from rules.secretdata import encode
from rules.workloads import resource_path
from tests.factories import JsonObject, container, pod_spec, workload
from tests.unit.fakeapi import NO_CLIENT, FakeApi, feed, settle

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
SECRET = resource_path("Secret", "shop", "stripe")
WEB = resource_path("Deployment", "shop", "web")
LINK = {"env.secrets.smll.io/API_KEY": "stripe/KEY"}
OTHER_LINK = {"env.secrets.smll.io/TOKEN": "other/KEY"}


def stripe(labels: dict[str, str] | None = None) -> JsonObject:
    metadata: JsonObject = {"name": "stripe", "labels": labels or {}}
    return {"metadata": metadata, "data": {"KEY": encode("sk_live_1"), "OTHER": encode("o1")}}


def reads_key(**annotations: str) -> JsonObject:
    env = [{"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "stripe", "key": "KEY"}}}]
    return workload("Deployment", annotations=annotations, spec=pod_spec(container(env=env)))


def reads_whole(**annotations: str) -> JsonObject:
    return workload(
        "Deployment", annotations=annotations, spec=pod_spec(container(envFrom=[{"secretRef": {"name": "stripe"}}]))
    )


class Controller:
    """The rollout loop's caches and reconcile, fed by relists of the fake API (as its informers would be)."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.queue: WorkQueue[ServiceKey] = WorkQueue()
        self.caches = Caches(b"k" * 32, self.queue, settle_seconds=0)
        self.rollouts = Rollouts(NO_CLIENT, self.caches, ControllerMetrics(), now=lambda: NOW)

    def relist(self) -> None:
        feed(self.api, resource_path("Secret"), self.caches.secrets)
        for kind, store in self.caches.services.items():
            feed(self.api, resource_path(kind), store)

    async def settle(self) -> None:
        await settle(self.api, self.queue, self.rollouts.reconcile, self.relist, loop="rollouts")


def restarted_at(api: FakeApi) -> str | None:
    found = api.get(WEB)
    assert found is not None
    return ((found["spec"]["template"]["metadata"].get("annotations")) or {}).get(RESTARTED_AT)


def change_key(api: FakeApi) -> None:
    api.patch(SECRET, {"data": {"KEY": encode("sk_live_2")}})


def change_other(api: FakeApi) -> None:
    api.patch(SECRET, {"data": {"OTHER": encode("o2")}})


def delete_secret(api: FakeApi) -> None:
    api.delete(SECRET)


@pytest.mark.parametrize(
    ("service", "secret_labels", "change", "rolled", "events"),
    [
        pytest.param(reads_key(**LINK), None, change_key, True, ["SecretChanged"], id="linked-key-changed"),
        pytest.param(reads_key(**LINK), None, change_other, False, [], id="a-key-it-does-not-read"),
        pytest.param(
            reads_whole(**{"secrets.smll.io/auto-rollout": "true"}),
            None,
            change_other,
            True,
            ["SecretChanged"],
            id="envfrom-reads-every-key",
        ),
        pytest.param(reads_key(), None, change_key, False, [], id="not-opted-in"),
        pytest.param(
            reads_key(**LINK, **{"secrets.smll.io/auto-rollout": "false"}), None, change_key, False, [], id="opted-out"
        ),
        pytest.param(
            reads_key(),
            {SECRET_TYPE_LABEL: "database"},
            change_key,
            True,
            ["SecretChanged"],
            id="generated-rolls-every-reader",
        ),
        pytest.param(
            reads_key(**LINK), None, delete_secret, False, ["RolloutHeld"], id="needed-secret-deleted-is-held"
        ),
    ],
)
async def test_a_secret_change_rolls_exactly_the_services_it_should_once(
    service: JsonObject,
    secret_labels: dict[str, str] | None,
    change: Callable[[FakeApi], None],
    rolled: bool,
    events: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi()
    api.install(monkeypatch)
    api.put(resource_path("Secret", "shop"), stripe(secret_labels))
    api.put(resource_path("Deployment", "shop"), service)
    controller = Controller(api)

    await controller.settle()
    assert restarted_at(api) is None  # first seen: recorded, never rolled
    recorded = api.get(WEB)
    assert recorded is not None
    assert ROLLOUT_STATE in recorded["metadata"]["annotations"] or not events

    change(api)
    await controller.settle()
    await controller.settle()

    assert (restarted_at(api) is not None) is rolled
    assert [event["reason"] for event in api.events()] == events
    for event in api.events():
        assert "sk_live" not in str(event)


async def test_a_change_while_the_controller_was_away_rolls_once_when_it_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi()
    api.install(monkeypatch)
    api.put(resource_path("Secret", "shop"), stripe())
    api.put(resource_path("Deployment", "shop"), reads_key(**LINK))
    await Controller(api).settle()

    change_key(api)
    restarted = Controller(api)  # a new process: nothing in memory, what it needs is on the Deployment
    await restarted.settle()
    first = restarted_at(api)
    await Controller(api).settle()

    assert first is not None
    assert restarted_at(api) == first
    assert [event["reason"] for event in api.events()] == ["SecretChanged"]


async def test_a_refused_patch_is_an_error_for_the_frame_and_nothing_is_rolled(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    api.install(monkeypatch)
    api.put(resource_path("Secret", "shop"), stripe())
    api.put(resource_path("Deployment", "shop"), reads_key(**LINK))
    controller = Controller(api)
    await controller.settle()
    change_key(api)
    api.fail("PATCH", WEB, 403, "forbidden by RBAC")

    with pytest.raises(Exception, match="403"):
        await controller.settle()

    assert restarted_at(api) is None
    await controller.rollouts.failed(("Deployment", "shop", "web"), "HTTP 403 Refused")
    assert [event["reason"] for event in api.events()] == ["RolloutFailed"]


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet"])
async def test_every_rolled_kind_is_rolled_once_at_its_own_path(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    api.install(monkeypatch)
    api.put(resource_path("Secret", "shop"), stripe())
    env = [{"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "stripe", "key": "KEY"}}}]
    api.put(resource_path(kind, "shop"), workload(kind, annotations=LINK, spec=pod_spec(container(env=env))))
    controller = Controller(api)
    await controller.settle()

    change_key(api)
    await controller.settle()

    found = api.get(resource_path(kind, "shop", "web"))
    assert found is not None
    assert RESTARTED_AT in found["spec"]["template"]["metadata"]["annotations"]
    [event] = api.events()
    assert (event["reason"], event["involvedObject"]["kind"], event["involvedObject"]["apiVersion"]) == (
        "SecretChanged",
        kind,
        "apps/v1",
    )


async def test_a_start_is_background_work_a_change_goes_ahead_and_the_controllers_own_writes_enqueue_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi()
    api.install(monkeypatch)
    api.put(resource_path("Secret", "shop"), stripe())
    api.put(resource_path("Secret", "shop"), {"metadata": {"name": "other"}, "data": {"KEY": encode("t")}})
    api.put(resource_path("Deployment", "shop"), workload("Deployment", "a-first", annotations=OTHER_LINK))
    api.put(resource_path("Deployment", "shop"), reads_key(**LINK))
    controller = Controller(api)
    controller.relist()  # the first list: both services, in the background lane
    change_key(api)  # seen on the watch: urgent
    controller.caches.secrets.apply("MODIFIED", controller.caches.secrets.compact(api.get(SECRET) or {}))

    first, second = ("Deployment", "shop", "web"), ("Deployment", "shop", "a-first")
    assert [controller.queue.try_get()[0] for _ in range(2)] == [first, second]
    paced = []
    for key in [first, second]:
        paced.append(await controller.rollouts.reconcile(key))
        controller.queue.done(key)
    # A first start records each service's state and rolls none: no token taken, so a first start records every
    # service at the apiserver's pace, not the bucket's.
    assert paced == [False, False]
    assert all(ROLLOUT_STATE in (api.get(resource_path(*key[:2], key[2])) or {})["metadata"]["annotations"]
               for key in [first, second])  # fmt: skip

    controller.relist()  # what the watch brings of those writes: the cache has them already
    api.patch(WEB, {"metadata": {"labels": {"tier": "web"}}})  # a change the decision does not read
    controller.relist()

    assert len(controller.queue) == 0
    assert not await controller.rollouts.reconcile(("Deployment", "shop", "web"))  # nothing to do: nothing written

    api.patch(SECRET, {"data": {"KEY": encode("sk_live_3")}})
    controller.relist()
    assert await controller.rollouts.reconcile(("Deployment", "shop", "web"))  # a rollout: paced
    assert restarted_at(api) is not None


def recorded_digests(api: FakeApi, path: str) -> dict[str, dict[str, str]]:
    """The digests a holder of ``view`` reads off a workload (whatever the format's prefix)."""
    found = api.get(path)
    assert found is not None
    text = found["metadata"]["annotations"][ROLLOUT_STATE]
    state: dict[str, dict[str, str]] = json.loads(text[text.index("{") :])
    return state


async def test_a_view_holder_cannot_compare_values_across_secrets_or_namespaces_through_the_recorded_digests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # edit in shop-dev, view in shop-prod: the developer puts a guess in a dev Secret, lets the dev Deployment
    # record it, and compares its digest with prod's. Equal digests would say the guess is prod's value.
    api = FakeApi()
    api.install(monkeypatch)
    places = [("shop-dev", "stripe"), ("shop-prod", "stripe"), ("shop-prod", "stripe-copy")]
    for namespace, secret in places:
        api.put(
            resource_path("Secret", namespace),
            {"metadata": {"name": secret}, "data": {"KEY": encode("sk_live_1")}},  # the same value in all three
        )
        links = {"env.secrets.smll.io/API_KEY": f"{secret}/KEY"}
        api.put(resource_path("Deployment", namespace), workload("Deployment", secret, annotations=links))
    await Controller(api).settle()

    seen = [recorded_digests(api, resource_path("Deployment", ns, secret))[secret]["KEY"] for ns, secret in places]

    assert len(set(seen)) == len(places), seen
    assert not any(restarted_at_of(api, ns, secret) for ns, secret in places)


def restarted_at_of(api: FakeApi, namespace: str, name: str) -> str | None:
    found = api.get(resource_path("Deployment", namespace, name))
    assert found is not None
    return ((found["spec"]["template"]["metadata"].get("annotations")) or {}).get(RESTARTED_AT)


def legacy_record(values: dict[str, str], *, whole: bool = False) -> str:
    """A rolled-for annotation as the versions before the bound digests wrote it: HMAC(install key, key NUL value)."""
    keys = {
        key: hmac.new(b"k" * 32, f"{key}\0{value}".encode(), "sha256").hexdigest()[:16] for key, value in values.items()
    }
    return json.dumps({"stripe": keys | ({"*": "*"} if whole else {})}, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    ("service", "record"),
    [
        pytest.param(reads_key(**LINK), legacy_record({"KEY": "sk_live_1"}), id="a-key"),
        pytest.param(
            reads_whole(**{"secrets.smll.io/auto-rollout": "true"}),
            legacy_record({"KEY": "sk_live_1", "OTHER": "o1"}, whole=True),
            id="whole",
        ),
    ],
)
async def test_an_old_format_record_of_unchanged_data_is_rerecorded_at_the_upgrade_without_a_rollout(
    service: JsonObject, record: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeApi()
    api.install(monkeypatch)
    api.put(resource_path("Secret", "shop"), stripe())
    service["metadata"]["annotations"][ROLLOUT_STATE] = record
    api.put(resource_path("Deployment", "shop"), service)

    await Controller(api).settle()  # the first start of the upgraded controller

    found = api.get(WEB)
    assert found is not None
    rewritten = found["metadata"]["annotations"][ROLLOUT_STATE]
    assert rewritten.startswith("v2:"), rewritten  # the format is stored on services: pinned here
    assert rewritten != record
    assert restarted_at(api) is None
    assert api.events() == []
    await Controller(api).settle()  # and the start after: nothing to do
    assert restarted_at(api) is None
    assert api.get(WEB) == found  # not written again


async def test_an_old_format_record_of_data_changed_while_the_controller_was_down_rolls_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = FakeApi()
    api.install(monkeypatch)
    api.put(resource_path("Secret", "shop"), stripe())  # KEY is sk_live_1 now; the old version rolled web for sk_live_0
    api.put(
        resource_path("Deployment", "shop"),
        reads_key(**LINK, **{ROLLOUT_STATE: legacy_record({"KEY": "sk_live_0"})}),
    )

    await Controller(api).settle()
    first = restarted_at(api)
    await Controller(api).settle()

    assert first is not None
    assert restarted_at(api) == first
    assert [event["message"] for event in api.events()] == ["Rolled out: secret 'stripe' changed keys KEY"]
    assert (
        recorded_digests(api, WEB)["stripe"]["KEY"] != json.loads(legacy_record({"KEY": "sk_live_1"}))["stripe"]["KEY"]
    )
