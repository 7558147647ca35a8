"""Protection through the real apiserver, with kubectl as a user would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from devenv.cluster import ControlPlane, wait_for
from devenv.controller import LocalController
from kubeio.rest import ApiException, json_request
from tests.leaks import GUARD

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("webhook")]


def create_secret(cluster: ControlPlane, namespace: str, name: str, *keys: str) -> None:
    literals = [f"--from-literal={key}={GUARD.canary()}" for key in keys or ("KEY",)]
    cluster.kubectl("create", "secret", "generic", name, *literals, "-n", namespace)


def apply(cluster: ControlPlane, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def deployment(name: str, pod_spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def containers(**extra: Any) -> list[dict[str, Any]]:
    return [{"name": "main", "image": "registry.invalid/app:1", **extra}]


def delete_secret(cluster: ControlPlane, namespace: str, name: str) -> tuple[int, str]:
    result = cluster.kubectl("delete", "secret", name, "-n", namespace, check=False)
    return result.returncode, result.stderr


ENV_REF = {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "stripe", "key": "KEY"}}}


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        pytest.param(
            deployment("web", {"containers": containers(env=[ENV_REF])}),
            'secret "stripe" is used by deployment/web (env API_KEY); remove these references first',
            id="deployment",
        ),
        pytest.param(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "report"},
                "spec": {
                    "schedule": "0 3 * * *",
                    "jobTemplate": {
                        "spec": {
                            "template": {
                                "spec": {
                                    "restartPolicy": "Never",
                                    "containers": containers(envFrom=[{"secretRef": {"name": "stripe"}}]),
                                }
                            }
                        }
                    },
                },
            },
            'secret "stripe" is used by cronjob/report (envFrom); remove these references first',
            id="cronjob",
        ),
        pytest.param(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "tool"},
                "spec": {
                    "containers": containers(volumeMounts=[{"name": "s", "mountPath": "/s"}]),
                    "volumes": [{"name": "s", "secret": {"secretName": "stripe"}}],
                },
            },
            'secret "stripe" is used by pod/tool (volume s); remove these references first',
            id="bare-pod",
        ),
        pytest.param(
            deployment("puller", {"containers": containers(), "imagePullSecrets": [{"name": "stripe"}]}),
            'secret "stripe" is used by deployment/puller (imagePullSecrets); remove these references first',
            id="imagePullSecrets",
        ),
    ],
)
def test_deleting_a_used_secret_is_denied_until_the_reference_is_removed(
    cluster: ControlPlane, namespace: str, referrer: dict[str, Any], expected: str
) -> None:
    create_secret(cluster, namespace, "stripe")
    apply(cluster, namespace, referrer)

    code, stderr = delete_secret(cluster, namespace, "stripe")

    assert code != 0
    assert 'admission webhook "protect.secrets.smll.io" denied the request: ' + expected in stderr

    # Foreground: the Deployment goes only after its ReplicaSet and Pods, which use the Secret too.
    cluster.kubectl(
        "delete",
        referrer["kind"].lower(),
        referrer["metadata"]["name"],
        "-n",
        namespace,
        "--cascade=foreground",
        "--wait=true",
    )
    assert delete_secret(cluster, namespace, "stripe")[0] == 0


def test_removing_a_used_key_is_denied_and_an_unused_key_is_allowed(cluster: ControlPlane, namespace: str) -> None:
    create_secret(cluster, namespace, "stripe", "KEY", "SPARE")
    apply(cluster, namespace, deployment("web", {"containers": containers(env=[ENV_REF])}))

    def remove(key: str) -> Any:
        patch = json.dumps([{"op": "remove", "path": f"/data/{key}"}])
        return cluster.kubectl("patch", "secret", "stripe", "-n", namespace, "--type=json", "-p", patch, check=False)

    used = remove("KEY")
    assert used.returncode != 0
    assert 'key KEY of secret "stripe" is used by deployment/web (env API_KEY)' in used.stderr
    assert remove("SPARE").returncode == 0


def test_a_linked_deployment_protects_its_secret(cluster: ControlPlane, namespace: str) -> None:
    create_secret(cluster, namespace, "stripe", "STRIPE_SECRET_KEY")
    cluster.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1", "-n", namespace)
    cluster.kubectl(
        "annotate", "deployment/web", "env.secrets.smll.io/API_KEY=stripe/STRIPE_SECRET_KEY", "-n", namespace
    )

    code, stderr = delete_secret(cluster, namespace, "stripe")

    assert code != 0
    assert 'secret "stripe" is used by deployment/web (env API_KEY); remove these references first' in stderr


def test_the_escape_hatch_allows_deleting_a_used_secret(cluster: ControlPlane, namespace: str) -> None:
    create_secret(cluster, namespace, "stripe")
    apply(cluster, namespace, deployment("web", {"containers": containers(env=[ENV_REF])}))
    cluster.kubectl("annotate", "secret/stripe", "secrets.smll.io/protection=disabled", "-n", namespace)

    assert delete_secret(cluster, namespace, "stripe")[0] == 0


def test_deleting_a_namespace_with_protected_secrets_completes(cluster: ControlPlane) -> None:
    namespace = "doomed-" + str(abs(hash(cluster.workdir)) % 10_000)
    cluster.kubectl("create", "namespace", namespace)
    create_secret(cluster, namespace, "stripe")
    apply(cluster, namespace, deployment("web", {"containers": containers(env=[ENV_REF])}))
    assert delete_secret(cluster, namespace, "stripe")[0] != 0

    cluster.kubectl("delete", "namespace", namespace, "--timeout=90s")

    gone = cluster.kubectl("get", "namespace", namespace, check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr


async def test_a_referrer_created_an_instant_before_the_delete_always_blocks_it(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """Create a Deployment that uses S and delete S at once, round after round: zero false allows."""
    rounds = 40
    false_allows: list[str] = []
    refusals: list[tuple[int, bool]] = []
    for i in range(rounds):
        name = f"race-{i}"
        await json_request(
            kube_api,
            "POST",
            f"/api/v1/namespaces/{namespace}/secrets",
            body={"metadata": {"name": name}, "stringData": {"KEY": GUARD.canary()}},
        )
        env = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": name, "key": "KEY"}}}]
        await json_request(
            kube_api,
            "POST",
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            body=deployment(name, {"containers": containers(env=env)}),
        )
        try:
            await json_request(kube_api, "DELETE", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ApiException as refused:
            refusals.append((refused.status, f"deployment/{name} (env K)" in str(refused.body)))
        else:
            false_allows.append(name)

    assert false_allows == []
    assert refusals == [(403, True)] * rounds


# Pods never become available on this plane (no kubelet), so a rolling update that waits for availability never
# scales its old ReplicaSets down. This strategy does not wait: the Deployment controller scales the old ReplicaSet
# down first, and an unscheduled pod is deleted at once — a rollout the Deployment controller completes by itself.
NO_WAIT = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


@pytest.fixture
def rollout_controller(cluster: ControlPlane, tmp_path: Path) -> Iterator[LocalController]:
    controller = LocalController(
        cluster, tmp_path / "controller", settle_seconds=1, lease_seconds=6, lease_name=f"lease-{uuid.uuid4().hex[:8]}"
    )
    controller.start()
    try:
        controller.wait_leading()
        yield controller
    finally:
        controller.stop()


def replicasets(cluster: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        cluster.kubectl("get", "replicasets", "-n", namespace, "-o", "json").stdout
    )["items"]
    return sorted(items, key=lambda rs: int(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))


def names_stripe(rs: dict[str, Any]) -> bool:
    return "stripe" in json.dumps(rs["spec"]["template"])


def rollout_done(cluster: ControlPlane, namespace: str) -> bool:
    """The Deployment's controller has caught up with its template and every old ReplicaSet runs no pod."""
    web = json.loads(cluster.kubectl("get", "deployment/web", "-n", namespace, "-o", "json").stdout)
    revision = web["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision")
    sets = replicasets(cluster, namespace)
    old = [rs for rs in sets if rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] != revision]
    return (
        web["status"].get("observedGeneration") == web["metadata"]["generation"]
        and web["status"].get("updatedReplicas") == 1
        and all(rs["spec"]["replicas"] == 0 and not rs.get("status", {}).get("replicas") for rs in old)
    )


def history_warning(sets: list[dict[str, Any]]) -> str:
    targets = " or ".join(
        f"revision {rs['metadata']['annotations']['deployment.kubernetes.io/revision']} "
        f"(ReplicaSet {rs['metadata']['name']})"
        for rs in sets
    )
    return (
        'Warning: the revision history of deployment/web still names secret "stripe": rolling back with kubectl '
        f"rollout undo to {targets} would fail to start"
    )


def test_link_change_the_key_unlink_and_after_the_rollout_the_secret_can_be_deleted(
    cluster: ControlPlane, namespace: str, rollout_controller: LocalController
) -> None:
    create_secret(cluster, namespace, "stripe", "STRIPE_SECRET_KEY")
    web = deployment("web", {"containers": containers()})
    web["spec"]["strategy"] = NO_WAIT
    apply(cluster, namespace, web)
    link = "env.secrets.smll.io/API_KEY=stripe/STRIPE_SECRET_KEY"
    cluster.kubectl("annotate", "deployment/web", link, "-n", namespace)
    wait_for(
        lambda: (
            "secrets.smll.io/rolled-for"
            in cluster.kubectl("get", "deployment/web", "-n", namespace, "-o", "json").stdout
        ),
        timeout=20,
        what="the controller to record what web reads",
    )
    # The linked revision must exist before the key changes: the Deployment controller makes one ReplicaSet of two
    # template changes it sees at once, and the controller records its state in well under a second.
    wait_for(
        lambda: sum(names_stripe(rs) for rs in replicasets(cluster, namespace)) == 1,
        timeout=30,
        what="the linked ReplicaSet",
    )
    patch = json.dumps({"stringData": {"STRIPE_SECRET_KEY": GUARD.canary()}})
    cluster.kubectl("patch", "secret", "stripe", "-n", namespace, "-p", patch)
    wait_for(
        lambda: sum(names_stripe(rs) for rs in replicasets(cluster, namespace)) == 2,
        timeout=30,
        what="the rollout for the changed key: a second ReplicaSet that reads stripe",
    )
    assert delete_secret(cluster, namespace, "stripe")[0] != 0

    cluster.kubectl("annotate", "deployment/web", "env.secrets.smll.io/API_KEY-", "-n", namespace)
    wait_for(lambda: rollout_done(cluster, namespace), timeout=60, what="the rollout that drops the link")

    history = [rs for rs in replicasets(cluster, namespace) if names_stripe(rs)]
    assert len(history) == 2  # the revision history still names the Secret...
    code, stderr = delete_secret(cluster, namespace, "stripe")
    assert code == 0, stderr  # ...and no longer blocks the delete,
    assert history_warning(history) in stderr  # but the user learns that rolling back to it would fail.


def test_an_old_replicaset_still_running_pods_blocks_the_delete_and_is_named_for_what_it_is(
    cluster: ControlPlane, namespace: str
) -> None:
    create_secret(cluster, namespace, "stripe", "STRIPE_SECRET_KEY")
    # The default strategy waits for new pods to be available, which never happens here: the rollout that drops
    # the link stays where a slow rollout would be, with the linked ReplicaSet's pod still running.
    cluster.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1", "-n", namespace)
    cluster.kubectl(
        "annotate", "deployment/web", "env.secrets.smll.io/API_KEY=stripe/STRIPE_SECRET_KEY", "-n", namespace
    )

    def linked_set_runs_a_pod() -> bool:
        return any(
            names_stripe(rs) and rs.get("status", {}).get("replicas") == 1 for rs in replicasets(cluster, namespace)
        )

    wait_for(linked_set_runs_a_pod, timeout=30, what="a pod of the linked ReplicaSet")
    cluster.kubectl("annotate", "deployment/web", "env.secrets.smll.io/API_KEY-", "-n", namespace)
    (linked,) = [rs for rs in replicasets(cluster, namespace) if names_stripe(rs)]

    code, stderr = delete_secret(cluster, namespace, "stripe")

    assert code != 0
    assert (
        f'secret "stripe" is used by deployment/web (old ReplicaSet {linked["metadata"]["name"]}, 1 pod, rolling out); '
        "remove these references first"
    ) in stderr
    assert "env API_KEY" not in stderr  # web no longer has that use

    # Let the rollout complete: allow the one pod to be unavailable, and the Deployment controller scales the old
    # ReplicaSet down.
    patch = json.dumps({"spec": {"strategy": NO_WAIT}})
    cluster.kubectl("patch", "deployment/web", "-n", namespace, "-p", patch)
    wait_for(lambda: rollout_done(cluster, namespace), timeout=60, what="the rollout to complete")

    code, stderr = delete_secret(cluster, namespace, "stripe")
    assert code == 0, stderr
    assert history_warning([linked]) in stderr
