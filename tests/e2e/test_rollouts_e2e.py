"""Rollouts on the real control plane: the controller as a process, Secrets changed with kubectl."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from devenv.cluster import ControlPlane, wait_for
from devenv.controller import CONTROLLER_NAMESPACE, LocalController
from kubeio.rest import MERGE_PATCH, json_request
from tests.conftest import fresh_namespace
from tests.leaks import GUARD

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("webhook")]

SETTLE = 1.0
RESTARTED_AT = "secrets.smll.io/restarted-at"
ROLLED_FOR = "secrets.smll.io/rolled-for"
HMAC_SECRET = "smll-secrets-rollout-key"


@pytest.fixture
def controllers(cluster: ControlPlane, tmp_path: Path) -> Iterator[list[LocalController]]:
    """Controllers a test starts; all stopped afterwards. Each test has a Lease of its own."""
    started: list[LocalController] = []
    yield started
    for controller in started:
        GUARD.scan(controller.metrics() if controller.leading() else "", f"metrics of {controller.identity}")
        controller.stop()


def start_controller(
    cluster: ControlPlane,
    controllers: list[LocalController],
    tmp_path: Path,
    *,
    lease: str,
    identity: str = "c1",
    settle: float = SETTLE,
) -> LocalController:
    controller = LocalController(
        cluster, tmp_path / identity, identity=identity, settle_seconds=settle, lease_seconds=6, lease_name=lease
    )
    controllers.append(controller)
    controller.start()
    controller.wait_leading()
    return controller


def linked_deployment(cluster: ControlPlane, namespace: str, name: str = "web", link: str = "stripe/KEY") -> None:
    cluster.kubectl("create", "deployment", name, "--image=registry.invalid/web:1", "-n", namespace)
    cluster.kubectl("annotate", f"deployment/{name}", f"env.secrets.smll.io/API_KEY={link}", "-n", namespace)


def set_key(cluster: ControlPlane, namespace: str, key: str, value: str, secret: str = "stripe") -> None:
    value = GUARD.canary(value)
    cluster.kubectl("patch", "secret", secret, "-n", namespace, "-p", json.dumps({"stringData": {key: value}}))


def rollout_events(cluster: ControlPlane, namespace: str, name: str = "web") -> list[str]:
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [e["message"] for e in events if e["reason"] == "SecretChanged" and e["involvedObject"]["name"] == name]


def restarted_at(cluster: ControlPlane, namespace: str, name: str = "web") -> str | None:
    deployment: Any = json.loads(cluster.kubectl("get", f"deployment/{name}", "-n", namespace, "-o", "json").stdout)
    return (deployment["spec"]["template"]["metadata"].get("annotations") or {}).get(RESTARTED_AT)


def recorded(cluster: ControlPlane, namespace: str, name: str = "web") -> bool:
    deployment: Any = json.loads(cluster.kubectl("get", f"deployment/{name}", "-n", namespace, "-o", "json").stdout)
    return "secrets.smll.io/rolled-for" in (deployment["metadata"].get("annotations") or {})


def web_reading_one_of_two_keys(
    cluster: ControlPlane, namespace: str, controllers: list[LocalController], tmp_path: Path
) -> None:
    """Secret stripe with KEY and OTHER; Deployment web linked to KEY; a controller that has recorded it."""
    keys = [f"--from-literal={key}={GUARD.canary()}" for key in ("KEY", "OTHER")]
    cluster.kubectl("create", "secret", "generic", "stripe", *keys, "-n", namespace)
    linked_deployment(cluster, namespace)
    start_controller(cluster, controllers, tmp_path, lease=lease())
    wait_for(lambda: recorded(cluster, namespace), timeout=20, what="the controller to record what web reads")


def quiet_period() -> None:
    """Long enough for a rollout that should not happen to have happened: the settling window and then some."""
    time.sleep(SETTLE + 3)


def lease() -> str:
    return f"lease-{uuid.uuid4().hex[:8]}"


def test_updating_a_linked_key_rolls_the_deployment_once_with_an_event(
    cluster: ControlPlane, namespace: str, controllers: list[LocalController], tmp_path: Path
) -> None:
    web_reading_one_of_two_keys(cluster, namespace, controllers, tmp_path)
    assert restarted_at(cluster, namespace) is None

    set_key(cluster, namespace, "KEY", "v2")

    wait_for(lambda: restarted_at(cluster, namespace) is not None, timeout=20, what="the rollout")
    stamp = restarted_at(cluster, namespace)

    def a_replicaset_carries_it() -> bool:
        sets = json.loads(cluster.kubectl("get", "replicasets", "-n", namespace, "-o", "json").stdout)["items"]
        return any(
            (rs["spec"]["template"]["metadata"].get("annotations") or {}).get(RESTARTED_AT) == stamp for rs in sets
        )

    wait_for(a_replicaset_carries_it, timeout=20, what="a new ReplicaSet with the restart annotation")
    wait_for(lambda: len(rollout_events(cluster, namespace)) == 1, timeout=10, what="the rollout Event")
    assert rollout_events(cluster, namespace) == ["Rolled out: secret 'stripe' changed keys KEY"]


def test_updating_a_key_the_service_does_not_use_rolls_nothing(
    cluster: ControlPlane, namespace: str, controllers: list[LocalController], tmp_path: Path
) -> None:
    web_reading_one_of_two_keys(cluster, namespace, controllers, tmp_path)

    set_key(cluster, namespace, "OTHER", "o2")
    quiet_period()

    assert restarted_at(cluster, namespace) is None
    assert rollout_events(cluster, namespace) == []


async def test_a_burst_of_updates_becomes_one_rollout(
    cluster: ControlPlane,
    namespace: str,
    controllers: list[LocalController],
    tmp_path: Path,
    kube_api: client.ApiClient,
) -> None:
    cluster.kubectl("create", "secret", "generic", "stripe", f"--from-literal=KEY={GUARD.canary()}", "-n", namespace)
    cluster.kubectl("create", "secret", "generic", "other", f"--from-literal=KEY={GUARD.canary()}", "-n", namespace)
    linked_deployment(cluster, namespace)
    cluster.kubectl("annotate", "deployment/web", "env.secrets.smll.io/OTHER=other/KEY", "-n", namespace)
    start_controller(cluster, controllers, tmp_path, lease=lease(), settle=3)
    wait_for(lambda: recorded(cluster, namespace), timeout=20, what="the controller to record what web reads")

    # Five changes to two Secrets, back to back through the API (milliseconds), well inside the 3 s window.
    for i, secret in enumerate(["stripe", "other", "stripe", "other", "stripe"]):
        body = {"stringData": {"KEY": GUARD.canary(str(i))}}
        path = f"/api/v1/namespaces/{namespace}/secrets/{secret}"
        await json_request(kube_api, "PATCH", path, body=body, content_type=MERGE_PATCH)
    wait_for(lambda: restarted_at(cluster, namespace) is not None, timeout=20, what="the rollout")
    quiet_period()

    assert len(rollout_events(cluster, namespace)) == 1


async def test_a_burst_longer_than_the_window_with_changes_closer_than_it_becomes_one_rollout(
    cluster: ControlPlane,
    namespace: str,
    controllers: list[LocalController],
    tmp_path: Path,
    kube_api: client.ApiClient,
) -> None:
    cluster.kubectl("create", "secret", "generic", "stripe", f"--from-literal=KEY={GUARD.canary()}", "-n", namespace)
    linked_deployment(cluster, namespace)
    start_controller(cluster, controllers, tmp_path, lease=lease(), settle=2.5)
    wait_for(lambda: recorded(cluster, namespace), timeout=20, what="the controller to record what web reads")

    # Seven changes 0.8 s apart: the burst lasts 4.8 s, almost twice the window, each change well inside it.
    path = f"/api/v1/namespaces/{namespace}/secrets/stripe"
    for i in range(7):
        if i:
            await asyncio.sleep(0.8)
        body = {"stringData": {"KEY": GUARD.canary(f"burst-{i}")}}
        await json_request(kube_api, "PATCH", path, body=body, content_type=MERGE_PATCH)
    wait_for(lambda: restarted_at(cluster, namespace) is not None, timeout=20, what="the rollout")
    await asyncio.sleep(2.5 + 3)

    assert rollout_events(cluster, namespace) == ["Rolled out: secret 'stripe' changed keys KEY"]


def test_restarting_the_controller_rolls_nothing_and_a_change_made_while_it_was_down_rolls_once(
    cluster: ControlPlane, namespace: str, controllers: list[LocalController], tmp_path: Path
) -> None:
    cluster.kubectl("create", "secret", "generic", "stripe", f"--from-literal=KEY={GUARD.canary()}", "-n", namespace)
    linked_deployment(cluster, namespace)
    name = lease()
    first = start_controller(cluster, controllers, tmp_path, lease=name)
    wait_for(lambda: recorded(cluster, namespace), timeout=20, what="the controller to record what web reads")

    first.stop()
    start_controller(cluster, controllers, tmp_path, lease=name, identity="c2")
    quiet_period()
    assert restarted_at(cluster, namespace) is None

    controllers[-1].stop()
    set_key(cluster, namespace, "KEY", "changed-while-down")
    start_controller(cluster, controllers, tmp_path, lease=name, identity="c3")

    wait_for(lambda: restarted_at(cluster, namespace) is not None, timeout=20, what="the rollout after the restart")
    quiet_period()
    assert len(rollout_events(cluster, namespace)) == 1


def test_a_standby_takes_over_within_the_lease_time_when_the_leader_dies_and_nothing_rolls_twice(
    cluster: ControlPlane, namespace: str, controllers: list[LocalController], tmp_path: Path
) -> None:
    cluster.kubectl("create", "secret", "generic", "stripe", f"--from-literal=KEY={GUARD.canary()}", "-n", namespace)
    linked_deployment(cluster, namespace)
    name = lease()
    leader = start_controller(cluster, controllers, tmp_path, lease=name, identity="a")
    standby = LocalController(
        cluster, tmp_path / "b", identity="b", settle_seconds=SETTLE, lease_seconds=6, lease_name=name
    )
    controllers.append(standby)
    standby.start()
    time.sleep(3)
    assert leader.leading()
    assert not standby.leading()
    set_key(cluster, namespace, "KEY", "v2")
    wait_for(lambda: len(rollout_events(cluster, namespace)) == 1, timeout=20, what="the leader's rollout")

    leader.stop(kill=True)
    killed = time.monotonic()
    wait_for(standby.leading, timeout=30, what="the standby to take the lease", interval=0.1)
    took_over_after = time.monotonic() - killed
    standby.wait_leading(timeout=30)  # and its caches synced
    quiet_period()

    # The lease lapses 6 s after the last renewal; the standby retries every second: with slack for a busy machine.
    assert took_over_after < 6 + 4
    assert len(rollout_events(cluster, namespace)) == 1


def test_every_change_is_rolled_exactly_once_across_an_apiserver_crash(
    cluster: ControlPlane, namespace: str, controllers: list[LocalController], tmp_path: Path
) -> None:
    for i in (1, 2, 3):
        cluster.kubectl("create", "secret", "generic", f"s{i}", f"--from-literal=KEY={GUARD.canary()}", "-n", namespace)
        linked_deployment(cluster, namespace, name=f"d{i}", link=f"s{i}/KEY")
    start_controller(cluster, controllers, tmp_path, lease=lease())
    wait_for(lambda: all(recorded(cluster, namespace, f"d{i}") for i in (1, 2, 3)), timeout=20, what="all recorded")

    controller = controllers[-1]
    set_key(cluster, namespace, "KEY", "v2", secret="s1")
    cluster.stop_apiserver(sig=signal.SIGKILL)  # within the settling window: the rollout must wait for it
    time.sleep(SETTLE + 2)
    cluster.start_apiserver()
    # A leader that could not renew its Lease within the renew deadline exits 1 (docs/operations.md); the kubelet
    # starts it again, and so does this test, playing the kubelet.
    assert controller.component is not None
    if not controller.component.alive():
        assert controller.component.process is not None
        assert controller.component.process.returncode == 1
        controller.start()
        controller.wait_leading()
    set_key(cluster, namespace, "KEY", "v2", secret="s2")

    wait_for(
        lambda: all(rollout_events(cluster, namespace, f"d{i}") for i in (1, 2)), timeout=60, what="d1 and d2 rolled"
    )
    quiet_period()
    assert [len(rollout_events(cluster, namespace, f"d{i}")) for i in (1, 2, 3)] == [1, 1, 0]


def apply_deployment(cluster: ControlPlane, namespace: str, name: str, pod_spec: dict[str, Any]) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"secrets.smll.io/auto-rollout": "true"}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(deployment))


def held_events(cluster: ControlPlane, namespace: str, name: str) -> list[str]:
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [
        e["message"]
        for e in events
        if e["reason"] == "RolloutHeld" and e["involvedObject"]["name"] == name and e["type"] == "Warning"
    ]


def test_a_secret_that_disappears_rolls_only_the_services_whose_use_is_optional(
    cluster: ControlPlane, namespace: str, controllers: list[LocalController], tmp_path: Path
) -> None:
    cluster.kubectl("create", "secret", "generic", "stripe", f"--from-literal=KEY={GUARD.canary()}", "-n", namespace)
    linked_deployment(cluster, namespace)  # web: a link, never optional
    image = "registry.invalid/app:1"
    optional_ref = {"name": "K", "valueFrom": {"secretKeyRef": {"name": "stripe", "key": "KEY", "optional": True}}}
    apply_deployment(
        cluster, namespace, "opt-env", {"containers": [{"name": "c", "image": image, "env": [optional_ref]}]}
    )
    optional_from = [{"secretRef": {"name": "stripe", "optional": True}}]
    apply_deployment(
        cluster, namespace, "opt-from", {"containers": [{"name": "c", "image": image, "envFrom": optional_from}]}
    )
    apply_deployment(
        cluster,
        namespace,
        "opt-volume",
        {
            "containers": [{"name": "c", "image": image}],
            "volumes": [{"name": "s", "secret": {"secretName": "stripe", "optional": True}}],
        },
    )
    required_from = [{"secretRef": {"name": "stripe"}}]
    apply_deployment(
        cluster, namespace, "from", {"containers": [{"name": "c", "image": image, "envFrom": required_from}]}
    )
    optional = ["opt-env", "opt-from", "opt-volume"]
    required = ["web", "from"]
    start_controller(cluster, controllers, tmp_path, lease=lease())
    wait_for(
        lambda: all(recorded(cluster, namespace, name) for name in optional + required),
        timeout=20,
        what="the controller to record what every service reads",
    )

    # Protection disabled (the escape hatch): the Secret goes although web and from need it.
    cluster.kubectl("annotate", "secret/stripe", "secrets.smll.io/protection=disabled", "-n", namespace)
    cluster.kubectl("delete", "secret", "stripe", "-n", namespace)

    wait_for(
        lambda: all(restarted_at(cluster, namespace, name) for name in optional),
        timeout=20,
        what="the services whose use is optional to roll",
    )
    wait_for(
        lambda: all(held_events(cluster, namespace, name) for name in required),
        timeout=20,
        what="a RolloutHeld Event on the services that need the Secret",
    )
    quiet_period()
    assert [restarted_at(cluster, namespace, name) for name in required] == [None, None]
    assert held_events(cluster, namespace, "web") == [
        "Not rolled out: secret 'stripe' changed keys KEY, but secret 'stripe' does not exist; new pods could not "
        "start, the running ones keep their values"
    ]

    # Back with a new value: the held change is still seen, and rolls once.
    cluster.kubectl("create", "secret", "generic", "stripe", f"--from-literal=KEY={GUARD.canary()}", "-n", namespace)
    wait_for(
        lambda: all(restarted_at(cluster, namespace, name) for name in required),
        timeout=20,
        what="the services that need the Secret to roll once it is back",
    )
    quiet_period()
    assert [len(rollout_events(cluster, namespace, name)) for name in required] == [1, 1]


def rolled_for(cluster: ControlPlane, namespace: str, name: str = "web") -> str:
    deployment: Any = json.loads(cluster.kubectl("get", f"deployment/{name}", "-n", namespace, "-o", "json").stdout)
    return str((deployment["metadata"].get("annotations") or {}).get(ROLLED_FOR, ""))


def recorded_digest(cluster: ControlPlane, namespace: str, name: str, secret: str, key: str) -> str:
    """The digest a holder of view reads off a workload (whatever the format's prefix)."""
    text = rolled_for(cluster, namespace, name)
    return str(json.loads(text[text.index("{") :])[secret][key])


def test_a_view_holder_cannot_tell_equal_values_across_secrets_or_namespaces_from_the_recorded_digests(
    cluster: ControlPlane, namespace: str, controllers: list[LocalController], tmp_path: Path
) -> None:
    # edit in the dev namespace, view in prod: the developer puts a guess in a dev Secret, lets the dev Deployment
    # record it, and compares its digest with prod's; and so for two Secrets of one namespace.
    value = GUARD.canary()
    with fresh_namespace(cluster, "prod") as prod:
        places = [(namespace, "stripe"), (prod, "stripe"), (prod, "stripe-copy")]
        for where, secret in places:
            cluster.kubectl("create", "secret", "generic", secret, f"--from-literal=KEY={value}", "-n", where)
            linked_deployment(cluster, where, name=secret, link=f"{secret}/KEY")
        start_controller(cluster, controllers, tmp_path, lease=lease())
        for where, secret in places:
            wait_for(lambda: recorded(cluster, where, secret), timeout=20, what=f"{where}/{secret} recorded")  # noqa: B023

        digests = [recorded_digest(cluster, where, secret, secret, "KEY") for where, secret in places]

        assert len(set(digests)) == len(places), digests


def test_an_upgrade_from_unbound_digests_rolls_only_what_changed_while_the_controller_was_down(
    cluster: ControlPlane, namespace: str, controllers: list[LocalController], tmp_path: Path
) -> None:
    name = lease()
    start_controller(cluster, controllers, tmp_path, lease=name).stop()  # the rollout key exists from here on
    key_secret: Any = json.loads(
        cluster.kubectl("get", "secret", HMAC_SECRET, "-n", CONTROLLER_NAMESPACE, "-o", "json").stdout
    )
    hmac_key = base64.b64decode(key_secret["data"]["key"])

    def legacy(secret: str, key: str, value: str) -> str:
        """rolled-for as the versions before wrote it: HMAC(key, key NUL value), no format prefix."""
        digest = hmac.new(hmac_key, f"{key}\0{value}".encode(), "sha256").hexdigest()[:16]
        return json.dumps({secret: {key: digest}}, separators=(",", ":"))

    now, before = GUARD.canary(), GUARD.canary()
    cluster.kubectl("create", "secret", "generic", "stripe", f"--from-literal=KEY={now}", "-n", namespace)
    for deployment, record in (("web", legacy("stripe", "KEY", now)), ("api", legacy("stripe", "KEY", before))):
        linked_deployment(cluster, namespace, name=deployment)
        cluster.kubectl("annotate", f"deployment/{deployment}", f"{ROLLED_FOR}={record}", "-n", namespace)

    start_controller(cluster, controllers, tmp_path, lease=name, identity="c2")  # the upgraded controller

    wait_for(lambda: rolled_for(cluster, namespace).startswith("v2:"), timeout=20, what="web re-recorded")
    wait_for(lambda: restarted_at(cluster, namespace, "api") is not None, timeout=20, what="api rolled")
    quiet_period()
    assert restarted_at(cluster, namespace, "web") is None  # unchanged: re-recorded, not rolled
    assert rollout_events(cluster, namespace, "web") == []
    assert rollout_events(cluster, namespace, "api") == ["Rolled out: secret 'stripe' changed keys KEY"]
    assert rolled_for(cluster, namespace, "api").startswith("v2:")
