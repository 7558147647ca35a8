"""The Database reconciler against the in-memory API and an in-memory PostgreSQL server: what a Database gets."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from typing import Any

import pytest

import controller.databases.reconciler as databases_module
from controller.databases.postgres import RoleConflict
from controller.databases.reconciler import DatabaseKey, Databases
from controller.frame.queue import WorkQueue
from kubeio.logs import JsonFormatter
from rules import database as database_rules
from rules.names import DATABASE_FINALIZER, PREVIOUS_USER, RESTARTED_AT, ROTATE, SECRET_TYPE_LABEL
from rules.secretdata import decode_data, encode
from rules.workloads import resource_path
from tests.factories import JsonObject, container, pod_spec, workload
from tests.unit.fakeapi import NO_CLIENT, FakeApi, feed, settle
from tests.unit.test_rollout_reconcile import Controller as Rollouts

CONTROLLER = "smll-system"
SERVER = database_rules.Server(name="default", host="pg.example", port=5432, sslmode="require", admin_secret="pg-admin")
ORDERS = resource_path("Database", "shop", "orders")
CREDENTIALS = resource_path("Secret", "shop", "orders-credentials")
NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)


class FakePostgres:
    """The server side of a Database: roles (with their markers and memberships), databases (and their owners),
    passwords. Like the real edge, it refuses to change a role that is not marked for the Database."""

    def __init__(self) -> None:
        self.roles: dict[str, database_rules.Role] = {"postgres": database_rules.Role("postgres", True, True, None)}
        self.database_owners: dict[str, str] = {}
        self.passwords: dict[str, str] = {"postgres": "admin-password"}

    @property
    def databases(self) -> set[str]:
        return set(self.database_owners)

    @property
    def logins(self) -> dict[str, str]:
        return {name: pw for name, pw in self.passwords.items() if name != "postgres"}

    async def connect(
        self, server: database_rules.Server, *, user: str, password: str, database: str = "postgres"
    ) -> Any:
        assert (user, password) == ("postgres", "admin-password"), "only the admin connects"
        return self

    async def close(self) -> None:
        pass

    async def inspect(self, admin: Any, owner: str) -> database_rules.ServerState:
        members = tuple(role for role in self.roles.values() if owner in role.member_of)
        return database_rules.ServerState(self.roles.get(owner), self.database_owners.get(owner), members)

    async def role(self, admin: Any, name: str) -> database_rules.Role | None:
        return self.roles.get(name)

    async def mark(self, admin: Any, names: tuple[str, ...], marker: str) -> None:
        for name in names:
            self.roles[name] = dataclasses.replace(self.roles[name], comment=marker)

    def verify(self, name: str, marker: str) -> database_rules.Role | None:
        role = self.roles.get(name)
        if role is not None and (role.comment != marker or role.privileged):
            raise RoleConflict(f"role {name} is not one this controller made for this Database")
        return role

    async def ensure_database(self, admin: Any, owner: str, *, marker: str, admin_user: str) -> None:
        if self.verify(owner, marker) is None:
            self.roles[owner] = database_rules.Role(owner, False, False, marker)
        self.database_owners.setdefault(owner, owner)

    async def ensure_login(
        self, admin: Any, *, login: str, owner: str, password: str, marker: str, admin_user: str
    ) -> None:
        self.verify(owner, marker)
        if self.verify(login, marker) is None:
            self.roles[login] = database_rules.Role(login, True, False, marker, (owner,))
        self.passwords[login] = password

    async def logs_in(self, server: database_rules.Server, *, user: str, password: str, database: str) -> bool:
        return database in self.database_owners and self.passwords.get(user) == password

    async def drop_login(self, server: database_rules.Server, admin: Any, *, login: str, marker: str, **_: str) -> None:
        if self.verify(login, marker) is not None:
            del self.roles[login], self.passwords[login]

    async def drop_database(self, admin: Any, owner: str, *, marker: str, **_: str) -> bool:
        try:
            self.verify(owner, marker)
        except RoleConflict:
            return False
        self.database_owners.pop(owner, None)
        for name, role in list(self.roles.items()):
            if role.comment == marker:
                del self.roles[name]
                self.passwords.pop(name, None)
        return True

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in (
            "connect",
            "inspect",
            "role",
            "mark",
            "ensure_database",
            "ensure_login",
            "logs_in",
            "drop_login",
            "drop_database",
        ):
            monkeypatch.setattr(databases_module, name, getattr(self, name))


class Controller:
    def __init__(self, api: FakeApi, *, servers: dict[str, database_rules.Server] | None = None) -> None:
        self.api = api
        self.queue: WorkQueue[DatabaseKey] = WorkQueue()
        self.databases = Databases(
            NO_CLIENT,
            self.queue,
            servers={"default": SERVER} if servers is None else servers,
            namespace=CONTROLLER,
            hmac_key=b"k" * 32,
            grace=datetime.timedelta(hours=1),
            now=lambda: NOW,
        )

    async def settle(self) -> None:
        await settle(self.api, self.queue, self.databases.reconcile, self.relist, loop="databases")

    def relist(self) -> None:
        feed(self.api, resource_path("Database"), self.databases.objects)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi(now=lambda: NOW)
    fake.install(monkeypatch)
    admin = {"username": encode("postgres"), "password": encode("admin-password")}
    fake.put(resource_path("Secret", CONTROLLER), {"metadata": {"name": "pg-admin"}, "data": admin})
    return fake


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakePostgres:
    fake = FakePostgres()
    fake.install(monkeypatch)
    return fake


def orders(**spec: str) -> JsonObject:
    return {
        "apiVersion": "smll.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": "orders"},
        "spec": {"engine": "postgres", "server": "default", "deletionPolicy": "Retain", **spec},
    }


def credentials(api: FakeApi) -> dict[str, str]:
    found = api.get(CREDENTIALS)
    assert found is not None
    return decode_data(found["data"])


def ready(api: FakeApi) -> tuple[str, str]:
    found = api.get(ORDERS)
    assert found is not None
    condition = next(c for c in found["status"]["conditions"] if c["type"] == "Ready")
    return condition["status"], condition["reason"]


def no_password_shown(api: FakeApi, *passwords: str) -> None:
    told = str([api.events(), (api.get(ORDERS) or {}).get("status")])
    for password in passwords:
        assert password not in told


async def test_a_database_gets_a_working_credentials_secret_it_owns(api: FakeApi, server: FakePostgres) -> None:
    api.put(resource_path("Database", "shop"), orders())

    await Controller(api).settle()

    secret = api.get(CREDENTIALS)
    assert secret is not None
    data = credentials(api)
    assert set(data) == set(database_rules.KEYS)
    assert secret["metadata"]["labels"][SECRET_TYPE_LABEL] == "database"
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Database", "orders", True)
    assert server.logins[data["POSTGRES_USER"]] == data["POSTGRES_PASSWORD"]
    assert data["POSTGRES_DB"] in server.databases
    assert ready(api) == ("True", "Provisioned")
    database = api.get(ORDERS)
    assert database is not None
    assert database["status"]["secretName"] == "orders-credentials"
    assert DATABASE_FINALIZER in database["metadata"]["finalizers"]
    assert [s["metadata"]["name"] for s in api.listing(resource_path("Secret", CONTROLLER))["items"]] == ["pg-admin"]
    no_password_shown(api, data["POSTGRES_PASSWORD"], "admin-password")


async def test_a_restart_never_changes_the_password(api: FakeApi, server: FakePostgres) -> None:
    api.put(resource_path("Database", "shop"), orders())
    await Controller(api).settle()
    before = credentials(api)

    await Controller(api).settle()  # a new process, or a resync

    assert credentials(api) == before


async def test_a_rotate_request_makes_a_new_login_and_drops_the_old_one_once_nobody_reads_it(
    api: FakeApi, server: FakePostgres
) -> None:
    api.put(resource_path("Database", "shop"), orders())
    controller = Controller(api)
    await controller.settle()
    before = credentials(api)

    api.patch(ORDERS, {"metadata": {"annotations": {ROTATE: "1"}}})
    await controller.settle()

    after = credentials(api)
    assert after["POSTGRES_USER"] != before["POSTGRES_USER"]
    assert after["POSTGRES_PASSWORD"] != before["POSTGRES_PASSWORD"]
    assert server.logins == {after["POSTGRES_USER"]: after["POSTGRES_PASSWORD"]}  # no reader: the old one went
    assert PREVIOUS_USER not in ((api.get(CREDENTIALS) or {})["metadata"].get("annotations") or {})
    assert [event["reason"] for event in api.events()] == ["Rotated", "OldLoginDropped"]
    no_password_shown(api, before["POSTGRES_PASSWORD"], after["POSTGRES_PASSWORD"])


@pytest.mark.parametrize(
    ("servers", "admin_secret", "reason"),
    [
        pytest.param({}, True, "UnknownServer", id="unknown-server"),
        pytest.param(None, False, "AdminCredentialsMissing", id="admin-secret-missing"),
    ],
)
async def test_a_database_that_cannot_be_provisioned_says_why_in_its_status_and_an_event(
    api: FakeApi,
    server: FakePostgres,
    servers: dict[str, database_rules.Server] | None,
    admin_secret: bool,
    reason: str,
) -> None:
    if not admin_secret:
        api.delete(resource_path("Secret", CONTROLLER, "pg-admin"))
    api.put(resource_path("Database", "shop"), orders())

    await Controller(api, servers=servers).settle()

    assert ready(api) == ("False", reason)
    assert api.get(CREDENTIALS) is None
    assert [(event["reason"], event["type"]) for event in api.events()] == [(reason, "Warning")]


async def test_deleting_a_database_with_policy_delete_drops_it_on_the_server_and_lets_it_go(
    api: FakeApi, server: FakePostgres
) -> None:
    api.put(resource_path("Database", "shop"), orders(deletionPolicy="Delete"))
    controller = Controller(api)
    await controller.settle()
    assert server.databases

    api.delete(ORDERS)  # the finalizer keeps it, with a deletionTimestamp
    await controller.settle()

    assert api.get(ORDERS) is None
    assert server.databases == set()
    assert server.logins == {}
    assert set(server.roles) == {"postgres"}


async def test_json_logs_name_the_database_and_its_outcome_and_never_a_password(
    api: FakeApi, server: FakePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.put(resource_path("Database", "shop"), orders())
    controller = Controller(api)
    await controller.settle()
    first = credentials(api)["POSTGRES_PASSWORD"]
    api.patch(ORDERS, {"metadata": {"annotations": {ROTATE: "1"}}})
    await controller.settle()

    lines = [JsonFormatter().format(record) for record in caplog.records]
    for password in (first, credentials(api)["POSTGRES_PASSWORD"], "admin-password"):
        assert password not in "\n".join(lines)
    told = [json.loads(line) for line in lines if json.loads(line)["logger"] == "controller.databases.reconciler"]
    assert [line["outcome"] for line in told] == ["Provisioned", "Provisioned"]  # status.login: v1, then v2
    assert told[0]["object"] == {"namespace": "shop", "name": "orders"}


async def test_a_rotation_keeps_the_old_login_until_its_reader_has_rolled_to_the_new_one(
    api: FakeApi, server: FakePostgres
) -> None:
    """The Database loop and the rollout loop together: the rotation rolls the reader (it did not opt in: a
    generated Secret rolls every reader), and the old login goes once the new pods all run."""
    web = resource_path("Deployment", "shop", "web")
    env = [
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "orders-credentials", "key": "DATABASE_URL"}}}
    ]
    api.put(resource_path("Database", "shop"), orders())
    api.put(resource_path("Deployment", "shop"), workload("Deployment", spec=pod_spec(container(env=env))))
    databases, rollouts = Controller(api), Rollouts(api)
    await databases.settle()
    await rollouts.settle()
    before = credentials(api)

    api.patch(ORDERS, {"metadata": {"annotations": {ROTATE: "1"}}})
    await databases.settle()
    after = credentials(api)
    assert set(server.logins) == {before["POSTGRES_USER"], after["POSTGRES_USER"]}
    found = api.get(ORDERS)
    assert found is not None
    assert "deployment/web" in found["status"]["conditions"][0]["message"]

    await rollouts.settle()  # the reader rolls to the new credentials
    rolled = api.get(web)
    assert rolled is not None
    assert RESTARTED_AT in rolled["spec"]["template"]["metadata"]["annotations"]
    api.patch(  # what the Deployment controller reports once every new pod runs
        web + "/status",
        {
            "status": {
                "observedGeneration": rolled["metadata"]["generation"],
                "replicas": 1,
                "updatedReplicas": 1,
                "availableReplicas": 1,
            }
        },
    )
    databases.queue.add(("shop", "orders"))  # its recheck, without waiting for it
    await databases.settle()

    assert server.logins == {after["POSTGRES_USER"]: after["POSTGRES_PASSWORD"]}
    assert [event["reason"] for event in api.events() if event["involvedObject"]["kind"] == "Database"] == [
        "Rotated",
        "OldLoginDropped",
    ]


# ---- a tenant that writes its own Secret reaches nothing that is not its own ---------------------------------

LEDGER = resource_path("Database", "bank", "ledger")
HOSTILE = "T" * 40


def ledger() -> JsonObject:
    found = orders()
    found["metadata"] = {"name": "ledger"}
    return found


def secret_edit(api: FakeApi, **values: str) -> None:
    api.patch(CREDENTIALS, {"data": {key: encode(value) for key, value in values.items()}})


async def two_tenants(api: FakeApi) -> tuple[Controller, dict[str, str]]:
    api.put(resource_path("Database", "bank"), ledger())
    api.put(resource_path("Database", "shop"), orders())
    controller = Controller(api)
    await controller.settle()
    found = api.get(resource_path("Secret", "bank", "ledger-credentials"))
    assert found is not None
    return controller, decode_data(found["data"])


@pytest.mark.parametrize("victim", ["bank", "admin"])
async def test_a_login_named_in_the_secret_is_never_the_one_acted_on(
    api: FakeApi, server: FakePostgres, victim: str
) -> None:
    controller, bank = await two_tenants(api)
    own = credentials(api)
    target = bank["POSTGRES_USER"] if victim == "bank" else "postgres"
    before = dict(server.passwords)

    secret_edit(api, POSTGRES_USER=target, POSTGRES_PASSWORD=HOSTILE)
    controller.queue.add(("shop", "orders"))
    await controller.settle()

    assert server.passwords[target] == before[target], "another role's password was set"
    assert server.roles["postgres"].privileged
    after = credentials(api)
    assert after["POSTGRES_USER"] == own["POSTGRES_USER"]
    assert server.passwords[own["POSTGRES_USER"]] == HOSTILE, "the edited password reaches only its own login"
    reasons = [e["reason"] for e in api.events() if e["involvedObject"]["name"] == "orders"]
    assert "CredentialsRestored" in reasons
    assert "PasswordSet" in reasons
    no_password_shown(api, HOSTILE, bank["POSTGRES_PASSWORD"])


async def test_a_previous_user_annotation_drops_nothing(api: FakeApi, server: FakePostgres) -> None:
    controller, bank = await two_tenants(api)
    api.patch(CREDENTIALS, {"metadata": {"annotations": {PREVIOUS_USER: bank["POSTGRES_USER"]}}})

    controller.queue.add(("shop", "orders"))
    await controller.settle()

    assert bank["POSTGRES_USER"] in server.roles
    assert PREVIOUS_USER not in ((api.get(CREDENTIALS) or {})["metadata"].get("annotations") or {})


async def test_a_derived_key_edited_by_hand_is_put_back_with_an_event_naming_it(
    api: FakeApi, server: FakePostgres
) -> None:
    api.put(resource_path("Database", "shop"), orders())
    controller = Controller(api)
    await controller.settle()
    before = credentials(api)

    secret_edit(api, POSTGRES_HOST="evil.example", EXTRA="x")
    controller.queue.add(("shop", "orders"))
    await controller.settle()

    assert credentials(api) == before
    [told] = [e for e in api.events() if e["reason"] == "CredentialsRestored"]
    assert told["type"] == "Warning"
    assert "EXTRA, POSTGRES_HOST" in told["message"]
    assert "evil.example" not in told["message"]


@pytest.mark.parametrize("forged_owner", [False, True])
async def test_a_secret_the_controller_did_not_make_is_never_adopted(
    api: FakeApi, server: FakePostgres, forged_owner: bool
) -> None:
    api.put(resource_path("Database", "shop"), orders())
    database = api.get(ORDERS)
    assert database is not None
    someone_elses: JsonObject = {"metadata": {"name": "orders-credentials"}, "data": {"token": encode("theirs")}}
    if forged_owner:
        someone_elses["metadata"]["ownerReferences"] = [
            {"kind": "Database", "name": "orders", "uid": database["metadata"]["uid"], "controller": True}
        ]
    api.put(resource_path("Secret", "shop"), someone_elses)

    await Controller(api).settle()

    assert ready(api) == ("False", "SecretConflict")
    assert credentials(api) == {"token": "theirs"}
    assert server.logins == {}


async def test_a_role_of_its_name_not_made_for_it_is_left_alone(api: FakeApi, server: FakePostgres) -> None:
    server.roles["shop_orders"] = database_rules.Role("shop_orders", False, False, "made by the DBA")
    server.database_owners["shop_orders"] = "shop_orders"
    api.put(resource_path("Database", "shop"), orders())

    await Controller(api).settle()

    assert ready(api) == ("False", "RoleConflict")
    assert server.roles["shop_orders"].comment == "made by the DBA"
    assert [r for r in server.roles.values() if "shop_orders" in r.member_of] == []
    assert api.get(CREDENTIALS) is None


async def test_a_database_provisioned_before_markers_is_adopted_and_keeps_its_password(
    api: FakeApi, server: FakePostgres
) -> None:
    """Upgrade: the roles today's code made (no marker), its Secret (owned by the Database, no proof), its status
    naming the Secret: the roles are marked, the password stays."""
    api.put(resource_path("Database", "shop"), orders())
    database = api.get(ORDERS)
    assert database is not None
    api.patch(ORDERS + "/status", {"status": {"secretName": "orders-credentials"}})
    server.roles["shop_orders"] = database_rules.Role("shop_orders", False, False, None)
    server.roles["shop_orders_v1"] = database_rules.Role("shop_orders_v1", True, False, None, ("shop_orders",))
    server.passwords["shop_orders_v1"] = OLD_PASSWORD
    server.database_owners["shop_orders"] = "shop_orders"
    data = database_rules.credentials(
        user="shop_orders_v1", password=OLD_PASSWORD, server=SERVER, database="shop_orders"
    )
    owner = {"kind": "Database", "name": "orders", "uid": database["metadata"]["uid"], "controller": True}
    api.put(
        resource_path("Secret", "shop"),
        {
            "metadata": {"name": "orders-credentials", "ownerReferences": [owner]},
            "data": {k: encode(v) for k, v in data.items()},
        },
    )

    await Controller(api).settle()

    assert ready(api) == ("True", "Provisioned")
    marker = database_rules.marker("shop", "orders", database["metadata"]["uid"])
    assert server.roles["shop_orders"].comment == server.roles["shop_orders_v1"].comment == marker
    assert credentials(api) == data
    assert "Adopted" in [e["reason"] for e in api.events()]


OLD_PASSWORD = "L" * 40


async def test_a_long_named_database_provisioned_before_finds_its_old_role_and_makes_nothing_new(
    api: FakeApi, server: FakePostgres
) -> None:
    """Names too long for 63 bytes were cut differently before: the Database's data is in the role and database of
    the old name, so a new empty one must not be made in its place."""
    name = "a-database-name-long-enough-to-be-cut-" + "x" * 30
    legacy = database_rules.legacy_owner_role("shop", name)
    server.roles[legacy] = database_rules.Role(legacy, False, False, None)
    server.database_owners[legacy] = legacy
    database = orders()
    database["metadata"]["name"] = name
    api.put(resource_path("Database", "shop"), database)

    await Controller(api).settle()

    found = api.get(resource_path("Database", "shop", name))
    assert found is not None
    assert found["status"]["conditions"][0]["reason"] == "RoleConflict"
    assert legacy in found["status"]["conditions"][0]["message"]
    assert server.databases == {legacy}
