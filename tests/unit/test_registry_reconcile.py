"""The registry reconciler against the in-memory API: what a VPC namespace gets, keeps and loses."""

from __future__ import annotations

import json
import logging

import pytest

from controller.frame.queue import WorkQueue
from controller.registry.caches import Caches, HtpasswdHandler
from controller.registry.config import RegistryConfig
from controller.registry.reconciler import Registry
from kubeio.logs import JsonFormatter
from rules import registry as registry_rules
from rules.names import COMPONENT_LABEL, REGISTRY_TYPE, ROTATE, SECRET_TYPE_LABEL, VPC_LABEL
from rules.secretdata import decode_data
from rules.workloads import resource_path
from tests.factories import JsonObject
from tests.unit.fakeapi import NO_CLIENT, FakeApi, feed, settle

CONTROLLER = "smll-system"
CONFIG = RegistryConfig("https://registry.example:5000", "registry", "htpasswd", CONTROLLER)
SHOP = resource_path("Namespace", name="shop")
CREDENTIALS = resource_path("Secret", "shop", registry_rules.CREDENTIALS)
PULL_SECRET = resource_path("Secret", "shop", registry_rules.PULL_SECRET)
ACCOUNT = resource_path("ServiceAccount", "shop", "default")


class Controller:
    """The registry loop's caches and reconcile, fed by relists of the fake API (as its five informers would be)."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.queue: WorkQueue[str] = WorkQueue()
        self.caches = Caches(self.queue)
        self.registry = Registry(NO_CLIENT, CONFIG, self.caches)

    def relist(self) -> None:
        caches = self.caches
        feed(self.api, resource_path("Namespace"), caches.namespaces)
        feed(
            self.api,
            resource_path("Secret", CONFIG.htpasswd_namespace),
            HtpasswdHandler(caches),
            {"fieldSelector": f"metadata.name={CONFIG.htpasswd_name}"},
        )
        feed(
            self.api, resource_path("Secret"), caches.secrets, {"labelSelector": f"{SECRET_TYPE_LABEL}={REGISTRY_TYPE}"}
        )
        feed(
            self.api,
            resource_path("Secret", CONTROLLER),
            caches.rotations,
            {"labelSelector": f"{COMPONENT_LABEL}={registry_rules.ROTATION_COMPONENT}"},
        )
        feed(
            self.api,
            resource_path("ServiceAccount"),
            caches.service_accounts,
            {"fieldSelector": "metadata.name=default"},
        )

    async def settle(self) -> None:
        await settle(self.api, self.queue, self.registry.reconcile, self.relist, loop="registry")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    fake.install(monkeypatch)
    fake.put(resource_path("Namespace"), {"metadata": {"name": "shop", "labels": {VPC_LABEL: "true"}}})
    fake.put(resource_path("ServiceAccount", "shop"), {"metadata": {"name": "default"}})
    fake.put(resource_path("Namespace"), {"metadata": {"name": "outside"}})
    fake.put(resource_path("ServiceAccount", "outside"), {"metadata": {"name": "default"}})
    return fake


def secret_data(api: FakeApi, path: str) -> dict[str, str]:
    found = api.get(path)
    assert found is not None
    return decode_data(found["data"])


def htpasswd(api: FakeApi) -> dict[str, str]:
    return registry_rules.parse_htpasswd(secret_data(api, CONFIG.htpasswd_path).get(registry_rules.HTPASSWD_KEY, ""))


def pull_secrets(api: FakeApi) -> list[JsonObject]:
    return list((api.get(ACCOUNT) or {}).get("imagePullSecrets") or [])


def rotation_secrets(api: FakeApi) -> list[str]:
    listing = api.listing(resource_path("Secret", CONTROLLER))["items"]
    return [secret["metadata"]["name"] for secret in listing]


async def test_a_vpc_namespace_gets_credentials_that_log_in_a_pull_secret_and_its_service_account_uses_it(
    api: FakeApi,
) -> None:
    await Controller(api).settle()

    data = secret_data(api, CREDENTIALS)
    assert set(data) == set(registry_rules.CONTRACT_KEYS)
    assert data["REGISTRY_URL"] == "registry.example:5000"
    assert data["REGISTRY_USER"] == "vpc-shop"
    assert registry_rules.verify_password(data["REGISTRY_PASSWORD"], htpasswd(api)["vpc-shop"])
    pull = api.get(PULL_SECRET)
    assert pull is not None
    assert pull["type"] == registry_rules.DOCKERCONFIGJSON
    auths = json.loads(secret_data(api, PULL_SECRET)[registry_rules.DOCKERCONFIGJSON_KEY])["auths"]
    assert auths["registry.example:5000"]["password"] == data["REGISTRY_PASSWORD"]
    assert pull_secrets(api) == [{"name": registry_rules.PULL_SECRET}]
    assert rotation_secrets(api) == []  # the password on its way in has arrived
    assert api.get(resource_path("Secret", "outside", registry_rules.CREDENTIALS)) is None
    assert set(htpasswd(api)) == {"vpc-shop"}


async def test_a_settled_namespace_costs_no_api_call(api: FakeApi) -> None:
    controller = Controller(api)
    await controller.settle()
    api.requests.clear()

    await controller.registry.reconcile("shop")

    assert api.requests == []


async def test_a_rotate_request_changes_the_password_everywhere(api: FakeApi) -> None:
    controller = Controller(api)
    await controller.settle()
    before = secret_data(api, CREDENTIALS)

    api.patch(SHOP, {"metadata": {"annotations": {ROTATE: "now"}}})
    await controller.settle()

    after = secret_data(api, CREDENTIALS)
    assert after["REGISTRY_PASSWORD"] != before["REGISTRY_PASSWORD"]
    assert registry_rules.verify_password(after["REGISTRY_PASSWORD"], htpasswd(api)["vpc-shop"])
    assert not registry_rules.verify_password(before["REGISTRY_PASSWORD"], htpasswd(api)["vpc-shop"])
    assert set(after) == set(registry_rules.CONTRACT_KEYS)
    assert rotation_secrets(api) == []


async def test_a_namespace_that_leaves_the_vpc_loses_its_user_and_secrets(api: FakeApi) -> None:
    controller = Controller(api)
    await controller.settle()

    api.patch(SHOP, {"metadata": {"labels": {VPC_LABEL: None}}})
    await controller.settle()

    assert "vpc-shop" not in htpasswd(api)
    assert api.get(CREDENTIALS) is None
    assert api.get(PULL_SECRET) is None
    assert pull_secrets(api) == []


async def test_a_foreign_secret_in_the_way_blocks_the_namespace_and_says_so_once(api: FakeApi) -> None:
    api.put(resource_path("Secret", "shop"), {"metadata": {"name": registry_rules.CREDENTIALS}, "data": {}})
    controller = Controller(api)

    await controller.settle()
    await controller.registry.reconcile("shop")

    foreign = api.get(CREDENTIALS)
    assert foreign is not None
    assert foreign["data"] == {}  # never overwritten
    assert [event["reason"] for event in api.events()] == ["RegistryCredentialsBlocked"]
    assert api.events()[0]["metadata"]["namespace"] == "default"  # where the apiserver takes a Namespace's Events


async def test_json_logs_name_the_namespace_and_each_outcome_and_never_a_password(
    api: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    controller = Controller(api)
    await controller.settle()
    first = secret_data(api, CREDENTIALS)["REGISTRY_PASSWORD"]
    api.patch(SHOP, {"metadata": {"annotations": {ROTATE: "now"}}})
    await controller.settle()
    second = secret_data(api, CREDENTIALS)["REGISTRY_PASSWORD"]

    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert first not in "\n".join(lines)
    assert second not in "\n".join(lines)
    reconciles = [json.loads(line) for line in lines if json.loads(line)["logger"] == "controller.registry.reconciler"]
    assert {line["outcome"] for line in reconciles} >= {
        "password-pending",
        "credentials-created",
        "credentials-updated",
    }
    assert all(
        (line["loop"], line["object"]) == ("registry", {"kind": "Namespace", "name": "shop"}) for line in reconciles
    )
