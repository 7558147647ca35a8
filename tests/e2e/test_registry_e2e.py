"""Per-VPC registry credentials on the real control plane, logging in to a real Distribution registry."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from controller.frame.queue import WorkQueue
from controller.registry.caches import Caches
from controller.registry.config import RegistryConfig, parse_secret_ref
from controller.registry.reconciler import Registry
from devenv.cluster import ControlPlane, wait_for
from devenv.controller import CONTROLLER_NAMESPACE, LocalController
from devenv.registry import LocalRegistry, registry_binary
from rules import registry as registry_rules
from rules.secretdata import generate_password
from tests.e2e.versions import SecretVersions
from tests.leaks import GUARD

pytestmark = pytest.mark.e2e

CREDENTIALS = "registry-credentials"
PULL_SECRET = "registry-pull-secret"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    try:
        registry_binary()
    except FileNotFoundError as error:
        pytest.fail(str(error))
    server = LocalRegistry(tmp_path_factory.mktemp("registry"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def htpasswd_secret() -> str:
    """Each test has an htpasswd Secret of its own, as it has a Lease of its own."""
    return f"{CONTROLLER_NAMESPACE}/htpasswd-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def controllers() -> Iterator[list[LocalController]]:
    started: list[LocalController] = []
    yield started
    for controller in started:
        controller.stop()


def start_controller(
    cluster: ControlPlane,
    controllers: list[LocalController],
    workdir: Path,
    registry: LocalRegistry,
    htpasswd_secret: str,
    *,
    lease: str,
    identity: str = "c1",
) -> LocalController:
    controller = LocalController(
        cluster,
        workdir / identity,
        identity=identity,
        lease_seconds=6,
        lease_name=lease,
        registry_url=registry.url,
        htpasswd_secret=htpasswd_secret,
    )
    controllers.append(controller)
    controller.start()
    controller.wait_leading()
    wait_for(lambda: "registry: caches synced" in controller.log(), timeout=20, what="the registry loop")
    return controller


def secret(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def wrong(password: str) -> str:
    """The password with its last character changed (to one it is not)."""
    return password[:-1] + ("y" if password[-1] == "x" else "x")


def values(obj: dict[str, Any]) -> dict[str, str]:
    found = {key: base64.b64decode(value).decode() for key, value in (obj.get("data") or {}).items()}
    for key in ("REGISTRY_PASSWORD", registry_rules.ROTATION_KEY):
        if key in found:
            GUARD.register(found[key])  # the leak check looks for it everywhere from now on
    return found


def credentials(cluster: ControlPlane, namespace: str) -> dict[str, str]:
    found = secret(cluster, namespace, CREDENTIALS)
    return values(found) if found else {}


def committed(cluster: ControlPlane, namespace: str) -> bool:
    """The credentials are there and no new password is on its way in."""
    rotation = secret(cluster, CONTROLLER_NAMESPACE, registry_rules.rotation_secret_name(namespace))
    return "REGISTRY_PASSWORD" in credentials(cluster, namespace) and rotation is None


def pull_secrets_of_default(cluster: ControlPlane, namespace: str) -> list[str]:
    account = json.loads(cluster.kubectl("get", "serviceaccount", "default", "-n", namespace, "-o", "json").stdout)
    return [ref["name"] for ref in account.get("imagePullSecrets") or []]


def logs_in(registry: LocalRegistry, cluster: ControlPlane, htpasswd_secret: str, user: str, password: str) -> int:
    """Sync the registry's htpasswd file from the Secret (as the kubelet would), then GET /v2/."""
    registry.sync_htpasswd(cluster, htpasswd_secret)
    return registry.status(user, password)


def become_vpc(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace, "smll.io/vpc=main")


def lease() -> str:
    return f"lease-{uuid.uuid4().hex[:8]}"


def test_a_vpc_namespace_gets_credentials_that_log_in_and_survive_a_restart(
    cluster: ControlPlane,
    namespace: str,
    registry: LocalRegistry,
    htpasswd_secret: str,
    controllers: list[LocalController],
    tmp_path: Path,
) -> None:
    patch = {"imagePullSecrets": [{"name": "their-own"}]}
    cluster.kubectl("patch", "serviceaccount", "default", "-n", namespace, "-p", json.dumps(patch))
    name = lease()
    first = start_controller(cluster, controllers, tmp_path, registry, htpasswd_secret, lease=name)

    become_vpc(cluster, namespace)

    wait_for(lambda: committed(cluster, namespace), timeout=20, what="registry-credentials")
    wait_for(
        lambda: PULL_SECRET in pull_secrets_of_default(cluster, namespace), timeout=20, what="the pull secret on the SA"
    )
    creds = secret(cluster, namespace, CREDENTIALS)
    pull = secret(cluster, namespace, PULL_SECRET)
    assert creds is not None
    assert pull is not None
    data = values(creds)
    user, password = data["REGISTRY_USER"], data["REGISTRY_PASSWORD"]
    assert set(data) == {"REGISTRY_URL", "REGISTRY_USER", "REGISTRY_PASSWORD"}
    assert data["REGISTRY_URL"] == registry.host == f"127.0.0.1:{registry.port}"  # what docker login takes
    assert user == f"vpc-{namespace}"
    assert len(password) >= 32
    assert password.isalnum()
    for obj in (creds, pull):
        assert obj["metadata"]["labels"]["smll.io/secret-type"] == "registry"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "smll-secrets"
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(values(pull)[".dockerconfigjson"])["auths"]
    assert auths == {
        data["REGISTRY_URL"]: {
            "username": user,
            "password": password,
            "auth": base64.b64encode(f"{user}:{password}".encode()).decode(),
        }
    }
    assert pull_secrets_of_default(cluster, namespace) == ["their-own", PULL_SECRET]

    assert logs_in(registry, cluster, htpasswd_secret, user, password) == 200
    assert logs_in(registry, cluster, htpasswd_secret, user, wrong(password)) == 401
    assert registry.status(None, None) == 401
    entry_before = registry.sync_htpasswd(cluster, htpasswd_secret)

    first.stop()
    second = start_controller(cluster, controllers, tmp_path, registry, htpasswd_secret, lease=name, identity="c2")
    cluster.kubectl("annotate", "namespace", namespace, "resync=1")  # a namespace event: a reconcile for sure

    wait_for(lambda: "registry: caches synced" in second.log(), timeout=10, what="the restarted loop")
    assert credentials(cluster, namespace)["REGISTRY_PASSWORD"] == password
    assert registry.sync_htpasswd(cluster, htpasswd_secret) == entry_before  # not even re-hashed
    assert logs_in(registry, cluster, htpasswd_secret, user, password) == 200
    for controller in (first, second):
        assert password not in controller.log()


def test_rotation_gives_a_new_password_and_the_old_one_stops_working(
    cluster: ControlPlane,
    namespace: str,
    registry: LocalRegistry,
    htpasswd_secret: str,
    controllers: list[LocalController],
    tmp_path: Path,
) -> None:
    controller = start_controller(cluster, controllers, tmp_path, registry, htpasswd_secret, lease=lease())
    become_vpc(cluster, namespace)
    wait_for(lambda: committed(cluster, namespace), timeout=20, what="registry-credentials")
    user, old = credentials(cluster, namespace)["REGISTRY_USER"], credentials(cluster, namespace)["REGISTRY_PASSWORD"]
    assert logs_in(registry, cluster, htpasswd_secret, user, old) == 200

    cluster.kubectl("annotate", "namespace", namespace, "secrets.smll.io/rotate=first")

    def rotated() -> bool:
        return committed(cluster, namespace) and credentials(cluster, namespace)["REGISTRY_PASSWORD"] != old

    wait_for(rotated, timeout=20, what="the rotation")
    new = credentials(cluster, namespace)["REGISTRY_PASSWORD"]
    wait_for(
        lambda: new in values(secret(cluster, namespace, PULL_SECRET) or {}).get(".dockerconfigjson", ""),
        timeout=10,
        what="the pull secret to follow",
    )
    assert logs_in(registry, cluster, htpasswd_secret, user, new) == 200
    assert logs_in(registry, cluster, htpasswd_secret, user, old) == 401

    cluster.kubectl("annotate", "namespace", namespace, "unrelated=1")
    wait_for(lambda: pull_secrets_of_default(cluster, namespace) == [PULL_SECRET], timeout=10, what="the SA")
    assert credentials(cluster, namespace)["REGISTRY_PASSWORD"] == new  # the same rotate value rotates once
    assert old not in controller.log()
    assert new not in controller.log()


def test_registry_credentials_hold_exactly_their_keys_through_creation_rotations_and_kills(
    cluster: ControlPlane,
    namespace: str,
    registry: LocalRegistry,
    htpasswd_secret: str,
    controllers: list[LocalController],
    tmp_path: Path,
) -> None:
    """Every version a watch sees, from the first write on, has exactly the contract keys — through a rotation and
    rotations cut short by SIGKILL at random points; and the last one logs in."""
    controller = start_controller(cluster, controllers, tmp_path, registry, htpasswd_secret, lease=lease())
    rotation = registry_rules.rotation_secret_name(namespace)
    chaos = random.Random(12)  # noqa: S311 - a reproducible schedule, not secrecy
    cut_short = 0
    with SecretVersions(cluster, namespace, CREDENTIALS) as watched:
        become_vpc(cluster, namespace)
        wait_for(lambda: committed(cluster, namespace), timeout=20, what="registry-credentials")
        for round_ in range(4):
            before = credentials(cluster, namespace)["REGISTRY_PASSWORD"]
            cluster.kubectl("annotate", "namespace", namespace, f"secrets.smll.io/rotate=r{round_}", "--overwrite")
            if round_ > 0:
                time.sleep(chaos.uniform(0, 0.12))
                controller.stop(kill=True)
                cut_short += secret(cluster, CONTROLLER_NAMESPACE, rotation) is not None
                controller.start()
                controller.wait_leading()

            def rotated(before: str = before) -> bool:
                return committed(cluster, namespace) and credentials(cluster, namespace)["REGISTRY_PASSWORD"] != before

            wait_for(rotated, timeout=40, what=f"rotation r{round_}")
        final = credentials(cluster, namespace)
        time.sleep(1)  # the watch's last events
    key_sets = watched.key_sets()

    print(f"{cut_short} of 3 kills landed with a password on its way in")
    assert len(key_sets) >= 5, "the creation and four rotations are each a version"
    assert set(key_sets) == {frozenset(registry_rules.CONTRACT_KEYS)}, key_sets
    assert final["REGISTRY_URL"] == registry.host
    assert secret(cluster, CONTROLLER_NAMESPACE, rotation) is None, "nothing in flight is left behind"
    assert logs_in(registry, cluster, htpasswd_secret, final["REGISTRY_USER"], final["REGISTRY_PASSWORD"]) == 200


def test_a_password_on_its_way_in_when_the_controller_died_is_finished_not_lost(
    cluster: ControlPlane,
    namespace: str,
    registry: LocalRegistry,
    htpasswd_secret: str,
    controllers: list[LocalController],
    tmp_path: Path,
) -> None:
    """The state a crash right after the htpasswd write leaves — the new password in the rotation Secret and live
    on the registry, the user's Secret still on the old one — made by hand while the controller is down."""
    controller = start_controller(cluster, controllers, tmp_path, registry, htpasswd_secret, lease=lease())
    become_vpc(cluster, namespace)
    wait_for(lambda: committed(cluster, namespace), timeout=20, what="registry-credentials")
    user = credentials(cluster, namespace)["REGISTRY_USER"]
    controller.stop(kill=True)
    password = GUARD.register(generate_password())
    rotation = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": registry_rules.rotation_secret_name(namespace),
            "namespace": CONTROLLER_NAMESPACE,
            "labels": registry_rules.ROTATION_LABELS,
        },
        "stringData": {registry_rules.ROTATION_KEY: password},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(rotation))
    namespace_, name = parse_secret_ref(htpasswd_secret)
    entries = registry_rules.parse_htpasswd(
        values(secret(cluster, namespace_, name) or {}).get(registry_rules.HTPASSWD_KEY, "")
    )
    entries[user] = registry_rules.hash_password(password, cost=4)
    patch = {"stringData": {registry_rules.HTPASSWD_KEY: registry_rules.format_htpasswd(entries)}}
    cluster.kubectl("patch", "secret", name, "-n", namespace_, "-p", json.dumps(patch))
    assert logs_in(registry, cluster, htpasswd_secret, user, password) == 200

    with SecretVersions(cluster, namespace, CREDENTIALS) as watched:
        controller.start()
        controller.wait_leading()
        wait_for(
            lambda: committed(cluster, namespace) and credentials(cluster, namespace)["REGISTRY_PASSWORD"] == password,
            timeout=30,
            what="the password on its way in to be committed",
        )
        time.sleep(1)
    assert set(watched.key_sets()) == {frozenset(registry_rules.CONTRACT_KEYS)}
    assert logs_in(registry, cluster, htpasswd_secret, user, password) == 200


def test_leaving_the_vpc_revokes_the_login_and_removes_the_secrets(
    cluster: ControlPlane,
    namespace: str,
    registry: LocalRegistry,
    htpasswd_secret: str,
    controllers: list[LocalController],
    tmp_path: Path,
) -> None:
    start_controller(cluster, controllers, tmp_path, registry, htpasswd_secret, lease=lease())
    become_vpc(cluster, namespace)
    wait_for(lambda: committed(cluster, namespace), timeout=20, what="registry-credentials")
    wait_for(lambda: PULL_SECRET in pull_secrets_of_default(cluster, namespace), timeout=20, what="the SA")
    data = credentials(cluster, namespace)
    user, password = data["REGISTRY_USER"], data["REGISTRY_PASSWORD"]
    assert logs_in(registry, cluster, htpasswd_secret, user, password) == 200

    cluster.kubectl("label", "namespace", namespace, "smll.io/vpc-")

    wait_for(lambda: secret(cluster, namespace, CREDENTIALS) is None, timeout=20, what="registry-credentials to go")
    assert secret(cluster, namespace, PULL_SECRET) is None
    assert pull_secrets_of_default(cluster, namespace) == []
    assert f"{user}:" not in registry.sync_htpasswd(cluster, htpasswd_secret)
    assert logs_in(registry, cluster, htpasswd_secret, user, password) == 401


def test_deleting_a_vpc_namespace_removes_its_user_and_keeps_the_others(
    cluster: ControlPlane,
    namespace: str,
    registry: LocalRegistry,
    htpasswd_secret: str,
    controllers: list[LocalController],
    tmp_path: Path,
) -> None:
    other = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", other)
    try:
        start_controller(cluster, controllers, tmp_path, registry, htpasswd_secret, lease=lease())
        become_vpc(cluster, namespace)
        become_vpc(cluster, other)
        wait_for(
            lambda: committed(cluster, namespace) and committed(cluster, other),
            timeout=20,
            what="registry-credentials in both namespaces",
        )
        kept = credentials(cluster, namespace)

        cluster.kubectl("delete", "namespace", other, "--wait=false")

        def gone() -> bool:
            return f"vpc-{other}:" not in registry.sync_htpasswd(cluster, htpasswd_secret)

        wait_for(gone, timeout=20, what="the deleted namespace's htpasswd entry to go")
        assert logs_in(registry, cluster, htpasswd_secret, kept["REGISTRY_USER"], kept["REGISTRY_PASSWORD"]) == 200
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)


async def test_concurrent_htpasswd_writers_never_lose_an_entry(
    cluster: ControlPlane, kube_api: client.ApiClient, htpasswd_secret: str
) -> None:
    """Two writers (two locks: as two replicas would be during a handover), all starting from the same stale read."""
    cluster.kubectl("create", "namespace", CONTROLLER_NAMESPACE, check=False)
    namespace, name = parse_secret_ref(htpasswd_secret)
    config = RegistryConfig("registry.example", namespace, name, CONTROLLER_NAMESPACE)
    writers = [Registry(kube_api, config, Caches(WorkQueue())) for _ in range(2)]
    users = [f"vpc-n{i}" for i in range(8)]

    await asyncio.gather(*(writers[i % 2].update_htpasswd(None, user, f"hash-{user}") for i, user in enumerate(users)))

    found = secret(cluster, namespace, name)
    assert found is not None
    assert registry_rules.parse_htpasswd(values(found)["htpasswd"]) == {user: f"hash-{user}" for user in users}
    stale = found
    await asyncio.gather(
        writers[0].update_htpasswd(stale, users[0], None), writers[1].update_htpasswd(stale, users[1], None)
    )
    after = secret(cluster, namespace, name)
    assert after is not None
    assert set(registry_rules.parse_htpasswd(values(after)["htpasswd"])) == set(users[2:])
