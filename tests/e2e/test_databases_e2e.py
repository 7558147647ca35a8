"""Generated database credentials on the real control plane and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from devenv.cluster import ControlPlane, wait_for
from devenv.controller import CONTROLLER_NAMESPACE, LocalController, install_database_support
from devenv.postgres import ADMIN_SECRET, LocalPostgres
from rules.database import rotation_secret_name
from tests.e2e.versions import SecretVersions
from tests.leaks import GUARD

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("webhook")]

KEYS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "DATABASE_URL"}


CA_SECRET = "pg-ca"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A server with a certificate from a CA of its own: the controller connects with verify-full, and so do the
    tests (PGSSLROOTCERT), as a service would with the URL's sslmode."""
    server = LocalPostgres(tls=True)
    GUARD.register(server.admin_password)
    server.start()
    root = tmp_path_factory.mktemp("pg-ca") / "ca.crt"
    root.write_bytes(server.ca_pem)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PGSSLROOTCERT", str(root))
        yield server
    log = server.directory / "postgres.log"
    GUARD.scan(log.read_text(errors="replace") if log.exists() else "", "the PostgreSQL server's log")
    server.remove()


def verify_full(cluster: ControlPlane, postgres: LocalPostgres, config: Path) -> None:
    """The server config of install_database_support, made verify-full with the server's CA in a Secret."""
    cluster.kubectl("-n", CONTROLLER_NAMESPACE, "delete", "secret", CA_SECRET, "--ignore-not-found")
    cluster.kubectl(
        "-n", CONTROLLER_NAMESPACE, "create", "secret", "generic", CA_SECRET,
        f"--from-file=ca.crt={postgres.directory}/ca.crt",
    )  # fmt: skip
    servers = yaml.safe_load(config.read_text())
    servers["servers"]["default"].update({"host": "localhost", "sslmode": "verify-full", "caSecret": CA_SECRET})
    config.write_text(yaml.safe_dump(servers))


@pytest.fixture(scope="module")
def database_controller(
    cluster: ControlPlane, postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalController]:
    workdir = tmp_path_factory.mktemp("database-controller")
    config = install_database_support(cluster, postgres, workdir)
    verify_full(cluster, postgres, config)
    controller = LocalController(
        cluster,
        workdir,
        identity="db",
        settle_seconds=0.5,
        lease_name=f"lease-{uuid.uuid4().hex[:8]}",
        extra_args=[f"--database-config={config}", "--rotation-grace-seconds=600"],
    )
    controller.start()
    controller.wait_leading()
    yield controller
    controller.wait_leading()  # a test may have just restarted it
    GUARD.scan(controller.metrics(), "metrics of the database controller")
    controller.stop()
    cluster.kubectl("delete", "secret", ADMIN_SECRET, CA_SECRET, "-n", CONTROLLER_NAMESPACE, check=False)


def create_database(cluster: ControlPlane, namespace: str, name: str, **spec: Any) -> None:
    body = {
        "apiVersion": "smll.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": name},
        "spec": {"engine": "postgres", "server": "default", **spec},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def credentials(cluster: ControlPlane, namespace: str, name: str) -> dict[str, str] | None:
    found = cluster.kubectl("get", "secret", f"{name}-credentials", "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    data = {k: base64.b64decode(v).decode() for k, v in json.loads(found.stdout)["data"].items()}
    GUARD.register(data["POSTGRES_PASSWORD"])
    return data


def wait_credentials(cluster: ControlPlane, namespace: str, name: str) -> dict[str, str]:
    wait_for(lambda: credentials(cluster, namespace, name) is not None, timeout=30, what=f"{name}-credentials")
    found = credentials(cluster, namespace, name)
    assert found is not None
    return found


def ready(cluster: ControlPlane, namespace: str, name: str) -> tuple[str, str]:
    obj = json.loads(cluster.kubectl("get", "database", name, "-n", namespace, "-o", "json").stdout)
    conditions = (obj.get("status") or {}).get("conditions") or []
    condition: dict[str, str] = next((c for c in conditions if c["type"] == "Ready"), {})
    return condition.get("status", ""), condition.get("reason", "")


async def can_connect(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=5)
    except (
        asyncpg.InvalidPasswordError,
        asyncpg.InvalidAuthorizationSpecificationError,
        asyncpg.InsufficientPrivilegeError,
    ):
        return False
    await connection.close()
    return True


async def admin_fetch(postgres: LocalPostgres, query: str, *args: Any) -> Any:
    connection = await asyncpg.connect(
        host="127.0.0.1",
        port=postgres.port,
        user=postgres.admin_user,
        password=postgres.admin_password,
        database="postgres",
    )
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


@pytest.mark.usefixtures("database_controller")
async def test_a_database_gets_working_credentials_scoped_to_it(cluster: ControlPlane, namespace: str) -> None:
    create_database(cluster, namespace, "orders")
    create_database(cluster, namespace, "billing")

    orders = wait_credentials(cluster, namespace, "orders")
    billing = wait_credentials(cluster, namespace, "billing")

    assert set(orders) == KEYS
    assert len(orders["POSTGRES_PASSWORD"]) >= 32
    assert orders["POSTGRES_PASSWORD"].isalnum()
    assert orders["DATABASE_URL"].endswith("?sslmode=verify-full")
    connection = await asyncpg.connect(orders["DATABASE_URL"], timeout=5)
    try:
        await connection.execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")
        await connection.execute("INSERT INTO items (name) VALUES ('one')")
        assert await connection.fetchval("SELECT count(*) FROM items") == 1
        assert await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
    finally:
        await connection.close()
    other = billing["DATABASE_URL"].replace(f"/{billing['POSTGRES_DB']}?", f"/{orders['POSTGRES_DB']}?")
    assert not await can_connect(other), "billing's login must not reach orders' database"
    wait_for(lambda: ready(cluster, namespace, "orders") == ("True", "Provisioned"), timeout=20, what="Ready=True")
    table = cluster.kubectl("get", "databases", "-n", namespace).stdout
    assert "orders-credentials" in table
    assert "True" in table
    secret = json.loads(cluster.kubectl("get", "secret", "orders-credentials", "-n", namespace, "-o", "json").stdout)
    assert secret["metadata"]["labels"]["smll.io/secret-type"] == "database"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Database"


def test_restarting_the_controller_keeps_the_password(
    cluster: ControlPlane, namespace: str, database_controller: LocalController
) -> None:
    create_database(cluster, namespace, "orders")
    before = wait_credentials(cluster, namespace, "orders")

    database_controller.stop()
    database_controller.start()
    database_controller.wait_leading()
    wait_for(lambda: "databases: caches synced" in database_controller.log(), timeout=20, what="database loop")

    assert credentials(cluster, namespace, "orders") == before


@pytest.mark.usefixtures("database_controller")
async def test_rotation_gives_a_new_password_rolls_dependents_and_then_retires_the_old_login(
    cluster: ControlPlane, namespace: str
) -> None:
    create_database(cluster, namespace, "orders")
    old = wait_credentials(cluster, namespace, "orders")
    # A linked service with no replicas: its rollout completes as soon as the Deployment controller has seen it.
    cluster.kubectl("create", "deployment", "api", "--image=registry.invalid/api:1", "--replicas=0", "-n", namespace)
    cluster.kubectl(
        "annotate",
        "deployment/api",
        "env.secrets.smll.io/DATABASE_URL=orders-credentials/DATABASE_URL",
        "-n",
        namespace,
    )
    wait_for(
        lambda: (
            "secrets.smll.io/rolled-for"
            in cluster.kubectl(
                "get", "deployment/api", "-n", namespace, "-o", "jsonpath={.metadata.annotations}"
            ).stdout
        ),
        timeout=20,
        what="the rollout state of api",
    )

    cluster.kubectl("annotate", "database/orders", "secrets.smll.io/rotate=1", "-n", namespace)

    wait_for(
        lambda: (credentials(cluster, namespace, "orders") or {}).get("POSTGRES_PASSWORD") != old["POSTGRES_PASSWORD"],
        timeout=30,
        what="the new password",
    )
    new = credentials(cluster, namespace, "orders")
    assert new is not None
    assert new["POSTGRES_USER"] != old["POSTGRES_USER"]
    assert await can_connect(new["DATABASE_URL"])
    wait_for(
        lambda: bool(
            cluster.kubectl(
                "get", "deployment/api", "-n", namespace, "-o", "jsonpath={.spec.template.metadata.annotations}"
            ).stdout.count("restarted-at")
        ),
        timeout=20,
        what="api rolled",
    )

    async def old_login_gone() -> bool:
        return not await can_connect(old["DATABASE_URL"])

    for _ in range(60):
        if await old_login_gone():
            break
        await asyncio.sleep(0.5)
    assert await old_login_gone(), "the old login must stop working once api has rolled"
    assert (
        "secrets.smll.io/previous-user"
        not in cluster.kubectl(
            "get", "secret", "orders-credentials", "-n", namespace, "-o", "jsonpath={.metadata.annotations}"
        ).stdout
    )


@pytest.mark.usefixtures("database_controller")
async def test_deletion_policy_delete_drops_the_database_and_retain_keeps_it(
    cluster: ControlPlane, namespace: str, postgres: LocalPostgres
) -> None:
    create_database(cluster, namespace, "gone", deletionPolicy="Delete")
    create_database(cluster, namespace, "kept", deletionPolicy="Retain")
    gone = wait_credentials(cluster, namespace, "gone")
    kept = wait_credentials(cluster, namespace, "kept")

    cluster.kubectl("delete", "database", "gone", "kept", "-n", namespace, "--timeout=60s")

    exists = "SELECT count(*) FROM pg_database WHERE datname = $1"
    roles = "SELECT count(*) FROM pg_roles WHERE rolname = $1"
    assert await admin_fetch(postgres, exists, gone["POSTGRES_DB"]) == 0
    assert await admin_fetch(postgres, roles, gone["POSTGRES_USER"]) == 0
    assert await admin_fetch(postgres, exists, kept["POSTGRES_DB"]) == 1
    assert await admin_fetch(postgres, roles, kept["POSTGRES_USER"]) == 1


@pytest.mark.usefixtures("database_controller")
def test_an_unknown_server_shows_ready_false_with_the_reason(cluster: ControlPlane, namespace: str) -> None:
    create_database(cluster, namespace, "lost", server="nowhere")

    wait_for(lambda: ready(cluster, namespace, "lost") == ("False", "UnknownServer"), timeout=20, what="UnknownServer")

    table = cluster.kubectl("get", "databases", "-n", namespace).stdout
    assert "UnknownServer" in table
    message = cluster.kubectl(
        "get", "database", "lost", "-n", namespace, "-o", "jsonpath={.status.conditions[0].message}"
    ).stdout
    assert message == "server 'nowhere' is not one of: default"


@pytest.mark.usefixtures("database_controller")
def test_a_spec_the_schema_refuses_never_reaches_the_controller(cluster: ControlPlane, namespace: str) -> None:
    body = {
        "apiVersion": "smll.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": "bad"},
        "spec": {"engine": "mysql", "server": "default", "deletionPolicy": "Sometimes", "rotateEvery": "a week"},
    }

    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)

    assert result.returncode != 0
    for field in ("spec.engine", "spec.deletionPolicy", "spec.rotateEvery"):
        assert field in result.stderr


@pytest.mark.usefixtures("database_controller")
def test_deleting_a_database_whose_credentials_are_in_use_is_denied(cluster: ControlPlane, namespace: str) -> None:
    create_database(cluster, namespace, "orders")
    wait_credentials(cluster, namespace, "orders")
    cluster.kubectl("create", "deployment", "api", "--image=registry.invalid/api:1", "-n", namespace)
    cluster.kubectl(
        "annotate", "deployment/api", "env.secrets.smll.io/DB=orders-credentials/DATABASE_URL", "-n", namespace
    )

    result = cluster.kubectl("delete", "database", "orders", "-n", namespace, check=False)

    assert result.returncode != 0
    assert 'database "orders": its credentials secret "orders-credentials" is used by deployment/api (env DB)' in (
        result.stderr
    )


def test_a_postgres_outage_shows_ready_false_with_the_reason_then_recovers(
    cluster: ControlPlane, namespace: str, postgres: LocalPostgres, database_controller: LocalController
) -> None:
    create_database(cluster, namespace, "orders")
    wait_for(lambda: ready(cluster, namespace, "orders") == ("True", "Provisioned"), timeout=30, what="Ready")

    postgres.stop()
    try:
        cluster.kubectl("label", "database/orders", "touch=1", "-n", namespace)  # any event makes it look again
        wait_for(
            lambda: ready(cluster, namespace, "orders") == ("False", "ServerUnavailable"),
            timeout=30,
            what="Ready=False ServerUnavailable",
        )
        message = cluster.kubectl(
            "get", "database/orders", "-n", namespace, "-o", "jsonpath={.status.conditions[0].message}"
        ).stdout
        assert "PostgreSQL server 'default'" in message
    finally:
        postgres.start()

    wait_for(lambda: ready(cluster, namespace, "orders") == ("True", "Provisioned"), timeout=90, what="recovery")
    assert database_controller.component is not None
    assert database_controller.component.alive(), "an outage must never crash the controller"


async def test_killing_the_controller_at_random_points_never_orphans_a_role_or_breaks_the_secret(
    cluster: ControlPlane, namespace: str, postgres: LocalPostgres, database_controller: LocalController
) -> None:
    chaos = random.Random(7)  # noqa: S311 - a reproducible schedule, not secrecy
    for round_ in range(4):
        name = f"chaos{round_}"
        create_database(cluster, namespace, name, deletionPolicy="Delete")
        await asyncio.sleep(chaos.uniform(0, 0.8))
        database_controller.stop(kill=True)
        database_controller.start()
        creds = wait_credentials(cluster, namespace, name)
        cluster.kubectl("annotate", f"database/{name}", f"secrets.smll.io/rotate=r{round_}", "-n", namespace)
        await asyncio.sleep(chaos.uniform(0, 0.8))
        database_controller.stop(kill=True)
        database_controller.start()

        def rotated(name: str = name, before: str = creds["POSTGRES_PASSWORD"]) -> bool:
            now = credentials(cluster, namespace, name) or {}
            return bool(now) and now["POSTGRES_PASSWORD"] != before

        wait_for(rotated, timeout=60, what=f"{name} rotated")
        wait_for(
            lambda name=name: (
                "previous-user"
                not in cluster.kubectl(  # type: ignore[misc]
                    "get", "secret", f"{name}-credentials", "-n", namespace, "-o", "jsonpath={.metadata.annotations}"
                ).stdout
            ),
            timeout=60,
            what=f"{name}'s old login retired",
        )
        final = credentials(cluster, namespace, name)
        assert final is not None
        assert await can_connect(final["DATABASE_URL"]), f"{name}: the Secret's credentials must log in"
        owner = final["POSTGRES_DB"]
        members = await admin_fetch(
            postgres,
            "SELECT string_agg(r.rolname, ',' ORDER BY r.rolname) FROM pg_auth_members m "
            "JOIN pg_roles r ON r.oid = m.member JOIN pg_roles o ON o.oid = m.roleid WHERE o.rolname = $1",
            owner,
        )
        assert members == final["POSTGRES_USER"], f"{name}: exactly one login, the Secret's, may remain"
        orphans = await admin_fetch(
            postgres,
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 AND NOT pg_has_role(rolname, $2, 'MEMBER')",
            owner + "%",
            owner,
        )
        assert orphans == 0


def rotation_secret(cluster: ControlPlane, namespace: str, name: str) -> bool:
    """Whether a login is on its way in for the Database (its rotation Secret in the controller's namespace)."""
    found = cluster.kubectl(
        "get", "secret", rotation_secret_name(namespace, name), "-n", CONTROLLER_NAMESPACE, check=False
    )
    return found.returncode == 0


async def test_database_credentials_hold_exactly_their_keys_through_creation_rotation_and_kills(
    cluster: ControlPlane, namespace: str, database_controller: LocalController
) -> None:
    """Every version a watch sees, from the first write on, has exactly the six keys — through a creation and
    rotations cut short by SIGKILL at random points; and the last one connects."""
    chaos = random.Random(21)  # noqa: S311 - a reproducible schedule, not secrecy
    with SecretVersions(cluster, namespace, "orders-credentials") as watched:
        create_database(cluster, namespace, "orders")
        await asyncio.sleep(chaos.uniform(0, 0.5))
        database_controller.stop(kill=True)
        database_controller.start()
        wait_credentials(cluster, namespace, "orders")
        for round_ in range(3):
            before = wait_credentials(cluster, namespace, "orders")["POSTGRES_PASSWORD"]
            wait_for(
                lambda: (
                    "previous-user"
                    not in cluster.kubectl(
                        "get", "secret", "orders-credentials", "-n", namespace, "-o", "jsonpath={.metadata.annotations}"
                    ).stdout
                ),
                timeout=60,
                what="the previous login retired",
            )
            cluster.kubectl(
                "annotate", "database/orders", f"secrets.smll.io/rotate=r{round_}", "--overwrite", "-n", namespace
            )
            await asyncio.sleep(chaos.uniform(0, 0.5))
            database_controller.stop(kill=True)
            database_controller.start()

            def rotated(before: str = before) -> bool:
                return (credentials(cluster, namespace, "orders") or {}).get("POSTGRES_PASSWORD") != before

            wait_for(rotated, timeout=60, what=f"rotation r{round_}")
        wait_for(lambda: not rotation_secret(cluster, namespace, "orders"), timeout=30, what="nothing left in flight")
        final = credentials(cluster, namespace, "orders")
        await asyncio.sleep(1)  # the watch's last events
    key_sets = watched.key_sets()

    assert len(key_sets) >= 4, "the creation and three rotations are each a version"
    assert set(key_sets) == {frozenset(KEYS)}, key_sets
    assert final is not None
    assert await can_connect(final["DATABASE_URL"])


def reader(name: str, *, env: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """A Deployment with no replicas that reads the credentials as a plain Kubernetes user would write it."""
    container: dict[str, Any] = {"name": "app", "image": "registry.invalid/app:1", **extra}
    if env is not None:
        container["env"] = env
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }


def template_annotations(cluster: ControlPlane, namespace: str, name: str) -> str:
    return cluster.kubectl(
        "get", f"deployment/{name}", "-n", namespace, "-o", "jsonpath={.spec.template.metadata.annotations}"
    ).stdout


@pytest.mark.usefixtures("database_controller")
async def test_a_rotation_rolls_every_reader_and_warns_one_that_opted_out_before_its_login_goes(
    cluster: ControlPlane, namespace: str
) -> None:
    create_database(cluster, namespace, "orders")
    old = wait_credentials(cluster, namespace, "orders")
    url = {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "orders-credentials", "key": "DATABASE_URL"}}}
    plain = reader("plain", env=[url])
    whole = reader("whole", envFrom=[{"secretRef": {"name": "orders-credentials"}}])
    legacy = reader("legacy", env=[url])
    legacy["metadata"]["annotations"] = {"secrets.smll.io/auto-rollout": "false"}
    for deployment in (plain, whole, legacy):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(deployment))
    for name in ("plain", "whole"):  # first seen: the state is recorded, nothing rolls
        wait_for(
            lambda name=name: (
                "secrets.smll.io/rolled-for"
                in cluster.kubectl(  # type: ignore[misc]
                    "get", f"deployment/{name}", "-n", namespace, "-o", "jsonpath={.metadata.annotations}"
                ).stdout
            ),
            timeout=20,
            what=f"the rollout state of {name}",
        )
        assert "restarted-at" not in template_annotations(cluster, namespace, name)

    cluster.kubectl("annotate", "database/orders", "secrets.smll.io/rotate=1", "-n", namespace)

    for name in ("plain", "whole"):
        wait_for(
            lambda name=name: "restarted-at" in template_annotations(cluster, namespace, name),  # type: ignore[misc]
            timeout=30,
            what=f"{name} rolled without opting in",
        )

    def warned() -> bool:
        events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
        return any(
            event["reason"] == "RotationNotRolled"
            and event["type"] == "Warning"
            and event["involvedObject"]["name"] == "legacy"
            for event in events
        )

    wait_for(warned, timeout=30, what="a Warning Event on the reader that opted out")
    message = cluster.kubectl(
        "get", "database/orders", "-n", namespace, "-o", "jsonpath={.status.conditions[0].message}"
    ).stdout
    assert 'not rolled automatically (auto-rollout "false")' in message
    assert "deployment/legacy" in message.rsplit(":", 1)[1]
    assert "restarted-at" not in template_annotations(cluster, namespace, "legacy")
    assert await can_connect(old["DATABASE_URL"]), "the old login stays for the reader that opted out, until grace"
