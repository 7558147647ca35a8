"""Tenancy of Databases: a tenant with the rights a platform hands out (the built-in ``edit`` in its own namespace,
and a Role on ``databases`` there; never ``databases/status``) reaches no other tenant's database, no role of the
server that is not its own, and no Secret the controller did not make — on the real control plane (RBAC on; the
tenant's writes by impersonation, as the apiserver authenticates it) and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from controller.databases.postgres import connect
from devenv.cluster import ControlPlane, wait_for
from devenv.controller import CONTROLLER_NAMESPACE, LocalController
from devenv.postgres import LocalPostgres
from rules.certs import make_ca
from rules.database import Server, quote_ident
from tests.conftest import fresh_namespace
from tests.e2e.test_databases_e2e import (
    CA_SECRET,
    admin_fetch,
    can_connect,
    credentials,
    database_controller,
    postgres,
    wait_credentials,
)
from tests.leaks import GUARD

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("webhook")]

__all__ = ["database_controller", "postgres"]  # the fixtures (verify-full), shared with the Database e2e tests


# What a platform grants a tenant for Databases beside ``edit``: the object, never its status subresource.
DATABASE_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "Role",
    "metadata": {"name": "database-editor"},
    "rules": [
        {
            "apiGroups": ["smll.io"],
            "resources": ["databases"],
            "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        }
    ],
}
HOSTILE_PASSWORD = "TenantChosenPassword0123456789abcdefghij"


def tenant_of(namespace: str) -> str:
    return f"dev@{namespace}"


def grant_tenant(cluster: ControlPlane, namespace: str) -> str:
    """A user bound to the built-in ``edit`` in ``namespace``, with the Role above."""
    user = tenant_of(namespace)
    cluster.kubectl("-n", namespace, "create", "rolebinding", "edit", "--clusterrole=edit", f"--user={user}")
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(DATABASE_ROLE))
    cluster.kubectl("-n", namespace, "create", "rolebinding", "databases", "--role=database-editor", f"--user={user}")
    return user


def as_tenant(cluster: ControlPlane, namespace: str, *args: str, input: str | None = None) -> str:
    """A kubectl call as the tenant of ``namespace``; it must be allowed (the attacks use only granted rights)."""
    result = cluster.kubectl(f"--as={tenant_of(namespace)}", "-n", namespace, *args, input=input, check=False)
    assert result.returncode == 0, f"the tenant's own right was refused: {result.stderr}"
    return result.stdout


@pytest.fixture
def shop(cluster: ControlPlane) -> Iterator[str]:
    with fresh_namespace(cluster, "shop") as name:
        grant_tenant(cluster, name)
        yield name


@pytest.fixture
def bank(cluster: ControlPlane) -> Iterator[str]:
    with fresh_namespace(cluster, "bank") as name:
        grant_tenant(cluster, name)
        yield name


def tenant_creates_database(cluster: ControlPlane, namespace: str, name: str) -> None:
    body = {
        "apiVersion": "smll.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": name},
        "spec": {"engine": "postgres", "server": "default"},
    }
    as_tenant(cluster, namespace, "apply", "-f", "-", input=json.dumps(body))


def tenant_writes(cluster: ControlPlane, namespace: str, secret: str, patch: dict[str, Any]) -> None:
    as_tenant(cluster, namespace, "patch", "secret", secret, "--type=merge", "-p", json.dumps(patch))


def tenant_pokes(cluster: ControlPlane, namespace: str, name: str) -> None:
    """Any change the tenant may make to its own Database makes the controller look at it again."""
    as_tenant(cluster, namespace, "label", f"database/{name}", f"poke={uuid.uuid4().hex[:8]}", "--overwrite")


def restart(controller: LocalController) -> None:
    controller.stop()
    controller.start()
    controller.wait_leading()
    wait_for(lambda: "databases: caches synced" in controller.log(), timeout=30, what="the database loop")


def secret_json(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("-n", namespace, "get", "secret", name, "-o", "json").stdout)  # type: ignore[no-any-return]


def condition(cluster: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    obj = json.loads(cluster.kubectl("-n", namespace, "get", "database", name, "-o", "json").stdout)
    found: dict[str, str] = next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {}
    )
    return found


def url_with(creds: dict[str, str], *, user: str, password: str) -> str:
    return creds["DATABASE_URL"].replace(
        f"//{creds['POSTGRES_USER']}:{creds['POSTGRES_PASSWORD']}@", f"//{user}:{password}@"
    )


async def admin_logs_in(postgres: LocalPostgres) -> bool:
    try:
        return bool(await admin_fetch(postgres, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    except asyncpg.InvalidPasswordError:
        return False


def events(cluster: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    found = json.loads(cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout)["items"]
    return [e for e in found if e["involvedObject"]["kind"] == "Database" and e["involvedObject"]["name"] == name]


@pytest.mark.usefixtures("database_controller")
def test_the_tenant_has_edit_in_its_namespace_and_no_right_on_database_status(cluster: ControlPlane, shop: str) -> None:
    """The premise of every attack here: the tenant may write its Secrets and its Databases, not their status."""
    user = tenant_of(shop)

    def can(verb: str, resource: str, namespace: str = shop, subresource: str = "") -> str:
        extra = [f"--subresource={subresource}"] if subresource else []
        answer = cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={user}", check=False)
        return answer.stdout.strip()

    answers = {
        "update secrets": can("update", "secrets"),
        "create databases": can("create", "databases.smll.io"),
        "patch databases/status": can("patch", "databases.smll.io", subresource="status"),
        "update databases/status": can("update", "databases.smll.io", subresource="status"),
        "get secrets in smll-system": can("get", "secrets", namespace="smll-system"),
    }

    assert answers == {
        "update secrets": "yes",
        "create databases": "yes",
        "patch databases/status": "no",
        "update databases/status": "no",
        "get secrets in smll-system": "no",
    }


@pytest.mark.usefixtures("database_controller")
async def test_a_tenant_naming_another_tenants_login_in_its_secret_takes_nothing(
    cluster: ControlPlane, shop: str, bank: str, database_controller: LocalController
) -> None:
    """Attack 1: ``POSTGRES_USER=<bank's login>`` and a password of the tenant's own in ``orders-credentials``; the
    controller restarts. Bank's login must be untouched: its services still log in, shop's password does not."""
    tenant_creates_database(cluster, bank, "ledger")
    tenant_creates_database(cluster, shop, "orders")
    ledger = wait_credentials(cluster, bank, "ledger")
    orders = wait_credentials(cluster, shop, "orders")
    GUARD.register(HOSTILE_PASSWORD)

    tenant_writes(
        cluster,
        shop,
        "orders-credentials",
        {"stringData": {"POSTGRES_USER": ledger["POSTGRES_USER"], "POSTGRES_PASSWORD": HOSTILE_PASSWORD}},
    )
    restart(database_controller)
    wait_for(
        lambda: (
            (credentials(cluster, shop, "orders") or {}).get("POSTGRES_USER") == orders["POSTGRES_USER"]
            or not asyncio_run(can_connect(ledger["DATABASE_URL"]))
        ),
        timeout=30,
        what="the controller to act on the edited Secret",
    )

    assert await can_connect(ledger["DATABASE_URL"]), "bank's services must still log in"
    assert not await can_connect(url_with(ledger, user=ledger["POSTGRES_USER"], password=HOSTILE_PASSWORD)), (
        "shop must not log in as bank's login"
    )
    restored = credentials(cluster, shop, "orders")
    assert restored is not None
    assert restored["POSTGRES_USER"] == orders["POSTGRES_USER"], "the derived login is put back"
    assert await can_connect(restored["DATABASE_URL"]), "shop's own credentials work again"
    told = [e for e in events(cluster, shop, "orders") if e["reason"] == "CredentialsRestored"]
    assert told, "an Event says the Secret was put back"
    assert "POSTGRES_USER" in told[0]["message"]
    assert HOSTILE_PASSWORD not in json.dumps(told)


@pytest.mark.usefixtures("database_controller")
async def test_a_tenant_naming_the_admin_in_its_secret_leaves_the_admin_alone(
    cluster: ControlPlane, shop: str, postgres: LocalPostgres
) -> None:
    """Attack 1, on the server's admin role: the controller set the tenant's password on it and made it
    NOSUPERUSER, and no Database on the server could be provisioned or deleted after that."""
    tenant_creates_database(cluster, shop, "orders")
    orders = wait_credentials(cluster, shop, "orders")
    GUARD.register(HOSTILE_PASSWORD)

    tenant_writes(
        cluster,
        shop,
        "orders-credentials",
        {"stringData": {"POSTGRES_USER": postgres.admin_user, "POSTGRES_PASSWORD": HOSTILE_PASSWORD}},
    )
    tenant_pokes(cluster, shop, "orders")
    wait_for(
        lambda: (
            (credentials(cluster, shop, "orders") or {}).get("POSTGRES_USER") == orders["POSTGRES_USER"]
            or not asyncio_run(admin_logs_in(postgres))
        ),
        timeout=30,
        what="the controller to act on the edited Secret",
    )

    assert await admin_logs_in(postgres), "the admin keeps its password and stays superuser"
    admin_as_tenant = url_with(orders, user=postgres.admin_user, password=HOSTILE_PASSWORD)
    assert not await can_connect(admin_as_tenant), "the tenant's password must not open the admin role"
    assert await admin_fetch(postgres, "SELECT pg_has_role($1, $2, 'MEMBER')", postgres.admin_user, "postgres")
    granted = await admin_fetch(
        postgres,
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1",
        postgres.admin_user,
    )
    assert granted == 0, "the admin was made a member of the tenant's role"
    tenant_creates_database(cluster, shop, "after")
    assert await can_connect(wait_credentials(cluster, shop, "after")["DATABASE_URL"]), "provisioning still works"


@pytest.mark.usefixtures("database_controller")
async def test_a_previous_user_annotation_naming_another_tenants_login_drops_nothing(
    cluster: ControlPlane, shop: str, bank: str
) -> None:
    """Attack 1, the annotation: ``secrets.smll.io/previous-user`` named a login that the controller then dropped
    (``REASSIGN OWNED``, ``DROP ROLE``)."""
    tenant_creates_database(cluster, bank, "ledger")
    tenant_creates_database(cluster, shop, "orders")
    ledger = wait_credentials(cluster, bank, "ledger")
    wait_credentials(cluster, shop, "orders")

    tenant_writes(
        cluster,
        shop,
        "orders-credentials",
        {"metadata": {"annotations": {"secrets.smll.io/previous-user": ledger["POSTGRES_USER"]}}},
    )
    tenant_pokes(cluster, shop, "orders")
    wait_for(
        lambda: (
            not asyncio_run(can_connect(ledger["DATABASE_URL"]))
            or ledger["POSTGRES_USER"] not in json.dumps(secret_json(cluster, shop, "orders-credentials")["metadata"])
        ),
        timeout=30,
        what="the controller to act on the annotation",
    )

    assert await can_connect(ledger["DATABASE_URL"]), "bank's login was dropped through shop's annotation"


@pytest.mark.usefixtures("database_controller")
def test_a_database_never_adopts_a_secret_it_did_not_make(cluster: ControlPlane, shop: str) -> None:
    """A ``<name>-credentials`` Secret that is there before the Database (another app's): Ready=False, naming it,
    and not one byte of it written."""
    as_tenant(cluster, shop, "create", "secret", "generic", "pay-credentials", "--from-literal=token=someone-elses")
    before = secret_json(cluster, shop, "pay-credentials")

    tenant_creates_database(cluster, shop, "pay")
    wait_for(lambda: condition(cluster, shop, "pay").get("status") == "False", timeout=30, what="Ready=False")

    found = condition(cluster, shop, "pay")
    assert found["reason"] == "SecretConflict"
    assert "pay-credentials" in found["message"]
    after = secret_json(cluster, shop, "pay-credentials")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["data"] == before["data"]


@pytest.mark.usefixtures("database_controller")
def test_a_forged_owner_reference_does_not_make_a_secret_the_controllers(cluster: ControlPlane, shop: str) -> None:
    """The tenant may write any ownerReference into a Secret of its namespace: being controlled by the Database (its
    uid, read while the Database waited on a server name) is no proof that the controller made the Secret."""
    body = {
        "apiVersion": "smll.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": "pay"},
        "spec": {"engine": "postgres", "server": "later"},
    }
    as_tenant(cluster, shop, "apply", "-f", "-", input=json.dumps(body))
    uid = json.loads(cluster.kubectl("-n", shop, "get", "database", "pay", "-o", "json").stdout)["metadata"]["uid"]
    owner = {"apiVersion": "smll.io/v1alpha1", "kind": "Database", "name": "pay", "uid": uid, "controller": True}
    forged = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "pay-credentials",
            "labels": {"smll.io/secret-type": "database"},
            "ownerReferences": [owner],
        },
        "stringData": {"token": "another-apps"},
    }
    as_tenant(cluster, shop, "create", "-f", "-", input=json.dumps(forged))
    before = secret_json(cluster, shop, "pay-credentials")

    as_tenant(cluster, shop, "patch", "database", "pay", "--type=merge", "-p", '{"spec": {"server": "default"}}')
    wait_for(
        lambda: condition(cluster, shop, "pay").get("reason") not in (None, "UnknownServer"),
        timeout=30,
        what="the Database to name its server",
    )

    assert condition(cluster, shop, "pay")["reason"] == "SecretConflict"
    after = secret_json(cluster, shop, "pay-credentials")
    assert (after["data"], after["metadata"]["resourceVersion"]) == (
        before["data"],
        before["metadata"]["resourceVersion"],
    )


@pytest.mark.usefixtures("database_controller")
def test_the_controllers_own_secret_stripped_of_its_proof_is_still_its_own(cluster: ControlPlane, shop: str) -> None:
    """A tenant that overwrites the annotations of the Secret the controller made (kubectl replace of its own
    manifest) gets it put back, not a conflict: the Database's status records the Secret's uid."""
    tenant_creates_database(cluster, shop, "orders")
    before = wait_credentials(cluster, shop, "orders")
    manifest = secret_json(cluster, shop, "orders-credentials")
    manifest["metadata"]["annotations"] = {"note": "mine now"}
    manifest["metadata"].pop("ownerReferences")

    as_tenant(cluster, shop, "replace", "-f", "-", input=json.dumps(manifest))

    def put_back() -> bool:
        found = secret_json(cluster, shop, "orders-credentials")["metadata"]
        return "secrets.smll.io/made-for" in (found.get("annotations") or {}) and bool(found.get("ownerReferences"))

    wait_for(put_back, timeout=30, what="the proof and owner put back")
    assert credentials(cluster, shop, "orders") == before
    assert condition(cluster, shop, "orders")["reason"] == "Provisioned"


@pytest.mark.usefixtures("database_controller")
async def test_a_role_on_the_server_that_the_controller_did_not_make_is_never_taken(
    cluster: ControlPlane, shop: str, postgres: LocalPostgres
) -> None:
    """A role and database a DBA made by hand, whose name happens to be what a Database would derive: the tenant's
    Database must not become a member of it, nor change it."""
    role = f"{shop}_reports"
    await admin_fetch(postgres, f'CREATE ROLE "{role}" NOLOGIN')
    connection = await asyncpg.connect(
        host="127.0.0.1", port=postgres.port, user=postgres.admin_user, password=postgres.admin_password
    )
    try:
        await connection.execute(f'CREATE DATABASE "{role}" OWNER "{role}"')
    finally:
        await connection.close()

    tenant_creates_database(cluster, shop, "reports")
    wait_for(lambda: condition(cluster, shop, "reports").get("status") == "False", timeout=30, what="Ready=False")

    found = condition(cluster, shop, "reports")
    assert found["reason"] == "RoleConflict"
    assert role in found["message"]
    members = await admin_fetch(
        postgres,
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles o ON o.oid = m.roleid WHERE o.rolname = $1",
        role,
    )
    assert members == 0, "a login was put into the DBA's role"
    assert credentials(cluster, shop, "reports") is None


def legacy_digest(full: str) -> str:
    """The digest today's code cut long names to (``namespace[:54]_<hash8>``): what the attack below aims at."""
    return hashlib.sha256(full.encode()).hexdigest()[:8]


@pytest.fixture
def prefix_namespaces(cluster: ControlPlane) -> Iterator[tuple[str, str]]:
    """Two namespaces, one the other's 54-character prefix."""
    prefix = ("p" + uuid.uuid4().hex[:12]).ljust(54, "p")
    long = prefix + "-long"
    for name in (prefix, long):
        cluster.kubectl("create", "namespace", name)
        grant_tenant(cluster, name)
    yield prefix, long
    for name in (prefix, long):
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.usefixtures("database_controller")
async def test_two_databases_whose_names_truncate_alike_never_share_a_role(
    cluster: ControlPlane, prefix_namespaces: tuple[str, str]
) -> None:
    """A cut name and a name that fits can be the same string: a Database named by the digest in the namespace that
    is the other's prefix got the victim's owner role and database."""
    short, long = prefix_namespaces
    victim = "orders-database"
    tenant_creates_database(cluster, long, victim)
    first = wait_credentials(cluster, long, victim)
    attacker = legacy_digest(f"{long}_{victim}")  # a valid Database name: lowercase hex
    tenant_creates_database(cluster, short, attacker)
    wait_for(
        lambda: (
            credentials(cluster, short, attacker) is not None
            or condition(cluster, short, attacker).get("status") == "False"
        ),
        timeout=30,
        what="the second Database",
    )
    second = credentials(cluster, short, attacker)

    if second is not None:
        assert second["POSTGRES_DB"] != first["POSTGRES_DB"], "two Databases share one database"
        other = second["DATABASE_URL"].replace(f"/{second['POSTGRES_DB']}?", f"/{first['POSTGRES_DB']}?")
        assert not await can_connect(other), "the second Database's login reaches the first's database"
    assert await can_connect(first["DATABASE_URL"])


def asyncio_run(coroutine: Any) -> Any:
    """Run a coroutine from a wait_for predicate (the test's own loop is blocked while it waits)."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(coroutine)))
    thread.start()
    thread.join(timeout=30)
    return box[0] if box else None


def put_ca(cluster: ControlPlane, pem: bytes, workdir: Any) -> None:
    path = workdir / "ca.crt"
    path.write_bytes(pem)
    manifest = cluster.kubectl(
        "-n", CONTROLLER_NAMESPACE, "create", "secret", "generic", CA_SECRET, f"--from-file=ca.crt={path}",
        "--dry-run=client", "-o", "json",
    ).stdout  # fmt: skip
    cluster.kubectl("-n", CONTROLLER_NAMESPACE, "replace", "-f", "-", input=manifest)


@pytest.mark.usefixtures("database_controller")
def test_the_admin_connection_verifies_the_servers_certificate(
    cluster: ControlPlane, shop: str, postgres: LocalPostgres, tmp_path: Any
) -> None:
    """verify-full with the CA the server config names: provisioning works, and with another CA in its place the
    controller refuses the server (no statement is sent to a server it cannot verify)."""
    tenant_creates_database(cluster, shop, "orders")
    assert wait_credentials(cluster, shop, "orders")["DATABASE_URL"].endswith("?sslmode=verify-full")

    put_ca(cluster, make_ca("not the server's CA", valid_for=datetime.timedelta(days=1)).cert_pem, tmp_path)
    try:
        tenant_pokes(cluster, shop, "orders")
        wait_for(
            lambda: condition(cluster, shop, "orders").get("reason") == "ServerUnavailable",
            timeout=30,
            what="Ready=False ServerUnavailable",
        )
        assert "certificate verify failed" in condition(cluster, shop, "orders")["message"]
    finally:
        put_ca(cluster, postgres.ca_pem, tmp_path)
    tenant_pokes(cluster, shop, "orders")
    wait_for(lambda: condition(cluster, shop, "orders").get("status") == "True", timeout=90, what="Ready again")


@pytest.mark.usefixtures("database_controller")
def test_a_hand_edited_credentials_secret_is_put_back_at_once_with_an_event_naming_the_keys(
    cluster: ControlPlane, shop: str
) -> None:
    """No restart, no poke: the controller watches the credentials Secrets. The Event names the keys, never a
    value."""
    tenant_creates_database(cluster, shop, "orders")
    before = wait_credentials(cluster, shop, "orders")

    tenant_writes(
        cluster, shop, "orders-credentials", {"stringData": {"POSTGRES_HOST": "evil.example", "EXTRA": "added"}}
    )

    wait_for(lambda: credentials(cluster, shop, "orders") == before, timeout=30, what="the Secret put back")
    told = [e for e in events(cluster, shop, "orders") if e["reason"] == "CredentialsRestored"]
    assert told
    assert "EXTRA, POSTGRES_HOST" in told[0]["message"]
    assert "evil.example" not in json.dumps(told)
    assert "added" not in json.dumps(told)


async def admin_execute(postgres: LocalPostgres, *statements: str) -> None:
    connection = await asyncpg.connect(
        host="127.0.0.1", port=postgres.port, user=postgres.admin_user, password=postgres.admin_password
    )
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def waiting_database(cluster: ControlPlane, namespace: str, name: str) -> str:
    """A Database that names no configured server yet (UnknownServer: nothing provisioned); its uid."""
    body = {
        "apiVersion": "smll.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": name},
        "spec": {"engine": "postgres", "server": "later"},
    }
    as_tenant(cluster, namespace, "apply", "-f", "-", input=json.dumps(body))
    wait_for(lambda: condition(cluster, namespace, name).get("reason") == "UnknownServer", timeout=30, what="waiting")
    found = json.loads(cluster.kubectl("-n", namespace, "get", "database", name, "-o", "json").stdout)
    return str(found["metadata"]["uid"])


@pytest.mark.usefixtures("database_controller")
async def test_a_database_provisioned_before_markers_is_adopted_with_its_data_and_password(
    cluster: ControlPlane, shop: str, postgres: LocalPostgres
) -> None:
    """Upgrade: what today's code left — roles without markers, a Secret owned by the Database, a status naming it —
    is adopted (marked), and the password and the data stay."""
    uid = waiting_database(cluster, shop, "orders")
    owner, login, password = f"{shop}_orders", f"{shop}_orders_v1", "L" * 40
    GUARD.register(password)
    await admin_execute(
        postgres,
        f'CREATE ROLE "{owner}" NOLOGIN',
        f'CREATE DATABASE "{owner}" OWNER "{owner}"',
        f'CREATE ROLE "{login}" LOGIN PASSWORD \'{password}\' IN ROLE "{owner}"',
        f"ALTER ROLE \"{login}\" SET role = '{owner}'",
    )
    url = f"postgresql://{login}:{password}@localhost:{postgres.port}/{owner}?sslmode=verify-full"
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)")
    finally:
        await connection.close()
    data = {
        "POSTGRES_USER": login,
        "POSTGRES_PASSWORD": password,
        "POSTGRES_HOST": "localhost",
        "POSTGRES_PORT": str(postgres.port),
        "POSTGRES_DB": owner,
        "DATABASE_URL": url,
    }
    owner_ref = {"apiVersion": "smll.io/v1alpha1", "kind": "Database", "name": "orders", "uid": uid, "controller": True}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "orders-credentials",
            "labels": {"smll.io/secret-type": "database"},
            "ownerReferences": [owner_ref],
        },
        "stringData": data,
    }
    cluster.kubectl("-n", shop, "create", "-f", "-", input=json.dumps(secret))
    cluster.kubectl(  # what today's controller wrote in the status; the tenant cannot
        "-n", shop, "patch", "database", "orders", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"secretName": "orders-credentials"}}),
    )  # fmt: skip

    as_tenant(cluster, shop, "patch", "database", "orders", "--type=merge", "-p", '{"spec": {"server": "default"}}')
    wait_for(lambda: condition(cluster, shop, "orders").get("reason") == "Provisioned", timeout=30, what="adopted")

    assert credentials(cluster, shop, "orders") == data
    marker = f"smll-secrets: made for Database {shop}/orders uid {uid}"
    for role in (owner, login):
        found = await admin_fetch(
            postgres, "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1", role
        )
        assert found == marker
    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM kept") == 1
    finally:
        await connection.close()


@pytest.mark.usefixtures("database_controller")
async def test_a_retained_database_is_not_handed_to_a_new_object_of_the_same_name(
    cluster: ControlPlane, shop: str, postgres: LocalPostgres
) -> None:
    """deletionPolicy Retain, then the namespace's next Database of the same name (a namespace name can be given to
    another tenant later): a new uid, so the retained roles are not its own; nothing is touched."""
    tenant_creates_database(cluster, shop, "orders")
    first = wait_credentials(cluster, shop, "orders")
    as_tenant(cluster, shop, "delete", "database", "orders", "--timeout=60s")
    wait_for(lambda: credentials(cluster, shop, "orders") is None, timeout=60, what="the Secret collected")

    tenant_creates_database(cluster, shop, "orders")
    wait_for(lambda: condition(cluster, shop, "orders").get("status") == "False", timeout=30, what="Ready=False")

    found = condition(cluster, shop, "orders")
    assert found["reason"] == "RoleConflict"
    assert "made for an earlier Database" in found["message"]
    assert await can_connect(first["DATABASE_URL"]), "the retained login is untouched"
    assert credentials(cluster, shop, "orders") is None


# ---- The admin session inside a tenant's database, and in the maintenance database ---------------------------------


async def tenant_execute(url: str, *statements: str) -> None:
    """SQL as the tenant, with the credentials from its own Secret (its login acts as its owner role)."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def tenant_fetchval(url: str, query: str) -> Any:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


def in_database(url: str, database: str) -> str:
    """The URL of the tenant's credentials, to another database of the server (the path before the query)."""
    head, _, query = url.partition("?")
    return head.rsplit("/", 1)[0] + f"/{database}?{query}"


# Run by the admin, it leaves a row in the tenant's canary table and makes the tenant's owner role (the table's owner:
# its logins SET ROLE to it) superuser, then answers as the catalog's function would.
RAISE_PRIVILEGES = (
    "LANGUAGE plpgsql AS $body$ BEGIN "
    "INSERT INTO public.canary_calls VALUES (current_user); "
    "EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER CREATEROLE', (SELECT t.tableowner FROM pg_catalog.pg_tables t "
    "WHERE t.schemaname OPERATOR(pg_catalog.=) 'public' AND t.tablename OPERATOR(pg_catalog.=) 'canary_calls')); "
    "RETURN pg_catalog.shobj_description($1, $2::pg_catalog.name); END $body$"
)
CANARY = "CREATE TABLE public.canary_calls (by_role name)"
CANARY_CALLS = "SELECT count(*) FROM public.canary_calls"


async def privileged_or_foreign(postgres: LocalPostgres, owner: str) -> list[str]:
    """The roles of this Database (its owner role and every login generation) that hold a privilege, or a membership
    in a role other than the owner role: none may."""
    rows = await admin_fetch(
        postgres,
        "SELECT array_agg(r.rolname || CASE WHEN r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication "
        "OR r.rolbypassrls THEN ' privileged' ELSE ' member of ' || g.rolname END) FROM pg_roles r "
        "LEFT JOIN pg_auth_members m ON m.member = r.oid LEFT JOIN pg_roles g ON g.oid = m.roleid "
        "WHERE (r.rolname = $1 OR left(r.rolname, length($1) + 2) = $1 || '_v') "
        "AND (r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls "
        "OR (g.rolname IS NOT NULL AND g.rolname <> $1))",
        owner,
    )
    return list(rows or [])


@pytest.mark.usefixtures("database_controller")
async def test_a_tenant_cannot_become_superuser_through_objects_in_its_own_database(
    cluster: ControlPlane, shop: str, postgres: LocalPostgres
) -> None:
    """Its login owns its database: it put a ``shobj_description`` (and an ``=`` on ``name``) of its own first on the
    database's search_path, then asked for a rotation. Dropping the old login, the controller connected as the admin
    into that database and read the role there: the tenant's function ran as superuser."""
    tenant_creates_database(cluster, shop, "orders")
    creds = wait_credentials(cluster, shop, "orders")
    owner = creds["POSTGRES_DB"]
    await tenant_execute(
        creds["DATABASE_URL"],
        "CREATE SCHEMA evil",
        CANARY,
        f"CREATE FUNCTION evil.shobj_description(oid, name) RETURNS text {RAISE_PRIVILEGES}",
        "CREATE FUNCTION evil.eq(name, text) RETURNS boolean LANGUAGE plpgsql AS $body$ BEGIN "
        "INSERT INTO public.canary_calls VALUES (current_user); "
        "RETURN $1 OPERATOR(pg_catalog.=) $2::pg_catalog.name; END $body$",
        "CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = text, FUNCTION = evil.eq)",
        f"ALTER DATABASE {quote_ident(owner)} SET search_path = evil, pg_catalog",
    )
    try:
        as_tenant(cluster, shop, "annotate", "database/orders", "secrets.smll.io/rotate=1")
        wait_for(
            lambda: (credentials(cluster, shop, "orders") or {}).get("POSTGRES_USER") != creds["POSTGRES_USER"],
            timeout=30,
            what="the new login",
        )
        new = credentials(cluster, shop, "orders")
        assert new is not None
        for _ in range(60):  # no reader: the old login is dropped at once
            if not await can_connect(creds["DATABASE_URL"]):
                break
            await asyncio.sleep(0.5)

        assert await privileged_or_foreign(postgres, owner) == [], "the tenant's roles gained a privilege"
        calls = await tenant_fetchval(new["DATABASE_URL"], CANARY_CALLS)
        assert calls == 0, "the tenant's function ran in the admin's session"
        assert not await can_connect(creds["DATABASE_URL"]), "the old login is still retired"
    finally:  # a superuser left on the module's server would spoil the tests after this one
        await admin_execute(postgres, f"ALTER ROLE {quote_ident(owner)} NOSUPERUSER NOCREATEROLE")


@pytest.mark.usefixtures("database_controller")
async def test_a_tenant_cannot_plant_a_function_for_the_admin_in_the_maintenance_database(
    cluster: ControlPlane, shop: str, postgres: LocalPostgres
) -> None:
    """Servers where PUBLIC may CREATE in ``public`` of ``postgres`` (the default up to PostgreSQL 14, kept by
    pg_upgrade): the tenant's login connects there and adds ``public.shobj_description(oid, text)``; the admin's
    read of a role passed an untyped literal, so the server chose the tenant's overload, at every reconcile."""
    await admin_execute(postgres, "GRANT CREATE ON SCHEMA public TO PUBLIC")
    owner = ""
    try:
        tenant_creates_database(cluster, shop, "orders")
        creds = wait_credentials(cluster, shop, "orders")
        owner = creds["POSTGRES_DB"]
        maintenance = in_database(creds["DATABASE_URL"], "postgres")
        await tenant_execute(
            maintenance, CANARY, f"CREATE FUNCTION public.shobj_description(oid, text) RETURNS text {RAISE_PRIVILEGES}"
        )

        tenant_creates_database(cluster, shop, "after")  # a reconcile that reads roles, as every one does
        wait_credentials(cluster, shop, "after")

        assert await privileged_or_foreign(postgres, owner) == [], "the tenant's roles gained a privilege"
        assert await tenant_fetchval(maintenance, CANARY_CALLS) == 0, "the admin ran it"
    finally:
        await admin_execute(
            postgres,
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            "DROP FUNCTION IF EXISTS public.shobj_description(oid, text)",
        )
        if owner:
            await admin_execute(
                postgres,
                f"ALTER ROLE {quote_ident(owner)} NOSUPERUSER NOCREATEROLE",
                f"DROP OWNED BY {quote_ident(owner)}",  # in postgres only: its canary table
            )


async def test_what_a_database_owner_sets_on_its_database_does_not_reach_the_admin_session(
    postgres: LocalPostgres,
) -> None:
    """A database's owner may ``ALTER DATABASE … SET`` any USERSET parameter, and the admin connects into that
    database to retire a login. The admin session's startup packet outranks those settings: it runs as the admin,
    with pg_catalog's names only, writable, with bounded waits."""
    tenant = f"t{uuid.uuid4().hex[:10]}"
    login, password = f"{tenant}_v1", uuid.uuid4().hex
    await admin_execute(
        postgres,
        f'CREATE ROLE "{tenant}" NOLOGIN',
        f'CREATE DATABASE "{tenant}" OWNER "{tenant}"',
        f'CREATE ROLE "{login}" LOGIN PASSWORD \'{password}\' IN ROLE "{tenant}"',
        f"ALTER ROLE \"{login}\" SET role = '{tenant}'",
    )
    url = f"postgresql://{login}:{password}@localhost:{postgres.port}/{tenant}?sslmode=verify-full"
    settings = {
        "search_path": "evil, pg_catalog",
        "role": tenant,
        "default_transaction_read_only": "on",
        "transaction_read_only": "on",
        "statement_timeout": "1",
        "lock_timeout": "1",
        "idle_in_transaction_session_timeout": "1",
        "standard_conforming_strings": "off",
        "default_transaction_isolation": "serializable",
        "local_preload_libraries": "smll_no_such_library",  # loaded at connection start: the admin could not connect
    }
    await tenant_execute(url, *(f"ALTER DATABASE \"{tenant}\" SET {k} = '{v}'" for k, v in settings.items()))
    server = Server("default", "localhost", postgres.port, "verify-full", "unused", ca_pem=postgres.ca_pem)

    admin = await connect(server, user=postgres.admin_user, password=postgres.admin_password, database=tenant)
    try:
        seen = await admin.fetchrow(
            "SELECT current_user AS current_user, session_user AS session_user, "
            + ", ".join(f"pg_catalog.current_setting('{k}') AS {k}" for k in settings)
        )
    finally:
        await admin.close()
        await admin_execute(postgres, f'DROP DATABASE "{tenant}"', f'DROP ROLE "{login}"', f'DROP ROLE "{tenant}"')

    assert dict(seen) == {
        "current_user": postgres.admin_user,
        "session_user": postgres.admin_user,
        "search_path": "pg_catalog, pg_temp",
        "role": "none",
        "default_transaction_read_only": "off",
        "transaction_read_only": "off",
        "statement_timeout": "1min",
        "lock_timeout": "30s",
        "idle_in_transaction_session_timeout": "1min",
        "standard_conforming_strings": "on",
        "default_transaction_isolation": "read committed",
        "local_preload_libraries": "",
    }
