"""A rotation's previous registry entry against the in-memory API: kept in the htpasswd Secret (key ``previous``)
until the reader of registry-credentials has rolled, or the grace period passed; gone with the entry on leaving."""

from __future__ import annotations

import datetime

import pytest

from controller.registry.caches import htpasswd_previous
from controller.registry.reconciler import Registry
from rules import registry as registry_rules
from rules.names import ROLLOUT_STATE, ROTATE, VPC_LABEL
from rules.references import secret_uses
from rules.rollout import current_state, format_state, key_digests
from rules.workloads import resource_path
from tests.factories import JsonObject
from tests.unit.fakeapi import NO_CLIENT, FakeApi
from tests.unit.test_registry_reconcile import CONFIG, CREDENTIALS, SHOP, Controller, htpasswd, secret_data

HMAC_KEY = b"rollout-key"
GRACE = datetime.timedelta(hours=1)
T0 = datetime.datetime(2026, 12, 4, 21, 0, tzinfo=datetime.UTC)
API = resource_path("Deployment", "shop", "api")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


def reader() -> JsonObject:
    """A Deployment reading REGISTRY_PASSWORD, rolled out completely (no replicas), never rolled to a version yet."""
    ref = {"secretKeyRef": {"name": registry_rules.CREDENTIALS, "key": registry_rules.PASSWORD_KEY}}
    return {
        "metadata": {"name": "api", "generation": 1},
        "spec": {
            "replicas": 0,
            "template": {"spec": {"containers": [{"name": "app", "env": [{"name": "P", "valueFrom": ref}]}]}},
        },
        "status": {"observedGeneration": 1},
    }


def roll(api: FakeApi) -> None:
    """What the rollout feature records once the reader has rolled to the Secret's current data."""
    deployment = api.get(API)
    credentials = api.get(CREDENTIALS)
    assert deployment is not None
    assert credentials is not None
    digests = key_digests(credentials["data"], HMAC_KEY, namespace="shop", secret=registry_rules.CREDENTIALS)
    state = current_state(secret_uses(deployment, "Deployment"), {registry_rules.CREDENTIALS: digests})
    api.patch(API, {"metadata": {"annotations": {ROLLOUT_STATE: format_state(state)}}})


def previous(api: FakeApi) -> tuple[registry_rules.PreviousEntry, ...]:
    return tuple(htpasswd_previous(api.get(CONFIG.htpasswd_path)).get("vpc-shop", ()))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    fake.install(monkeypatch)
    fake.put(resource_path("Namespace"), {"metadata": {"name": "shop", "labels": {VPC_LABEL: "true"}}})
    fake.put(resource_path("ServiceAccount", "shop"), {"metadata": {"name": "default"}})
    return fake


@pytest.fixture
def controller(api: FakeApi) -> tuple[Controller, Clock]:
    clock = Clock()
    controller = Controller(api)
    controller.registry = Registry(NO_CLIENT, CONFIG, controller.caches, hmac_key=HMAC_KEY, grace=GRACE, now=clock)
    return controller, clock


async def rotate(api: FakeApi, controller: Controller, value: str) -> tuple[str, str]:
    old = secret_data(api, CREDENTIALS)[registry_rules.PASSWORD_KEY]
    api.patch(SHOP, {"metadata": {"annotations": {ROTATE: value}}})
    await controller.settle()
    new = secret_data(api, CREDENTIALS)[registry_rules.PASSWORD_KEY]
    assert new != old
    return old, new


async def test_the_old_entry_is_kept_until_the_reader_has_rolled(
    api: FakeApi, controller: tuple[Controller, Clock]
) -> None:
    registry, clock = controller
    api.put(resource_path("Deployment", "shop"), reader())
    await registry.settle()
    assert previous(api) == ()  # the first password replaces nothing

    old, new = await rotate(api, registry, "r1")
    assert registry_rules.verify_password(new, htpasswd(api)["vpc-shop"])
    kept = previous(api)
    assert len(kept) == 1
    assert kept[0].rotated_at == T0
    assert registry_rules.verify_password(old, kept[0].hash), "the readers' password is kept"
    assert old not in str(api.get(CONFIG.htpasswd_path)), "only its hash"

    clock.now = T0 + datetime.timedelta(minutes=5)
    await registry.registry.reconcile("shop")
    assert previous(api) == kept, "the reader has not rolled"

    roll(api)
    await registry.settle()
    assert previous(api) == ()
    assert registry_rules.PREVIOUS_KEY not in (api.get(CONFIG.htpasswd_path) or {})["data"], "none left: the key goes"
    assert registry_rules.verify_password(new, htpasswd(api)["vpc-shop"])


async def test_the_old_entry_goes_when_the_grace_period_has_passed(
    api: FakeApi, controller: tuple[Controller, Clock]
) -> None:
    registry, clock = controller
    api.put(resource_path("Deployment", "shop"), reader())
    await registry.settle()
    await rotate(api, registry, "r1")
    assert len(previous(api)) == 1

    clock.now = T0 + GRACE - datetime.timedelta(seconds=1)
    await registry.registry.reconcile("shop")
    assert len(previous(api)) == 1
    clock.now = T0 + GRACE
    await registry.registry.reconcile("shop")
    assert previous(api) == ()


async def test_with_no_reader_the_old_entry_goes_once_the_rotation_is_committed(
    api: FakeApi, controller: tuple[Controller, Clock]
) -> None:
    registry, _ = controller
    await registry.settle()
    await rotate(api, registry, "r1")
    assert previous(api) == ()


async def test_leaving_the_vpc_drops_the_entry_and_the_previous_ones_in_one_write(
    api: FakeApi, controller: tuple[Controller, Clock]
) -> None:
    registry, clock = controller
    api.put(resource_path("Deployment", "shop"), reader())
    await registry.settle()
    await rotate(api, registry, "r1")
    clock.now = T0 + datetime.timedelta(minutes=1)
    await rotate(api, registry, "r2")
    assert len(previous(api)) == 2, "a reader that rolled to neither may hold either"

    api.patch(SHOP, {"metadata": {"labels": {VPC_LABEL: None}}})
    registry.relist()
    api.requests.clear()
    await registry.registry.reconcile("shop")
    assert api.writes()[0] == ("PATCH", CONFIG.htpasswd_path), "revoked first"
    assert api.writes().count(("PATCH", CONFIG.htpasswd_path)) == 1, "every entry of the user in one write"
    assert "vpc-shop" not in htpasswd(api)
    assert previous(api) == ()
