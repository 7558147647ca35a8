"""Protection through the real apiserver, with kubectl as a user would."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from devenv.cluster import ControlPlane
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
