"""Linking through the real apiserver, with kubectl as a user would."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devenv.cluster import ControlPlane, wait_for
from devenv.webhook import LocalWebhook
from tests.leaks import GUARD

pytestmark = pytest.mark.e2e


def get(cluster: ControlPlane, namespace: str, what: str) -> Any:
    return json.loads(cluster.kubectl("get", what, "-n", namespace, "-o", "json").stdout)


def env_of_template(obj: Any, container: str = "web") -> list[Any]:
    containers = obj["spec"]["template"]["spec"]["containers"]
    return list(next(c for c in containers if c["name"] == container).get("env", []))


def ref(var: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


@pytest.mark.usefixtures("webhook")
def test_kubectl_annotate_links_and_unlinks_an_env_var_and_the_new_replicaset_carries_it(
    cluster: ControlPlane, namespace: str
) -> None:
    cluster.kubectl(
        "create", "secret", "generic", "stripe", f"--from-literal=STRIPE_SECRET_KEY={GUARD.canary()}", "-n", namespace
    )
    cluster.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1", "-n", namespace)

    annotated = cluster.kubectl(
        "annotate", "deployment/web", "env.secrets.smll.io/API_KEY=stripe/STRIPE_SECRET_KEY", "-n", namespace
    )

    assert "Warning" not in annotated.stderr
    assert env_of_template(get(cluster, namespace, "deployment/web")) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]

    def a_replicaset_links_it() -> bool:
        return any(
            env_of_template(rs) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]
            for rs in get(cluster, namespace, "replicasets")["items"]
        )

    wait_for(a_replicaset_links_it, timeout=30, what="a ReplicaSet whose pods get API_KEY")

    cluster.kubectl("annotate", "deployment/web", "env.secrets.smll.io/API_KEY-", "-n", namespace)

    assert env_of_template(get(cluster, namespace, "deployment/web")) == []


@pytest.mark.usefixtures("webhook")
def test_a_link_that_collides_with_a_hand_set_env_var_is_denied_with_the_message(
    cluster: ControlPlane, namespace: str
) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1", "-n", namespace)
    cluster.kubectl("set", "env", "deployment/web", "API_KEY=hand-set", "-n", namespace)

    result = cluster.kubectl(
        "annotate",
        "deployment/web",
        "env.secrets.smll.io/API_KEY=stripe/STRIPE_SECRET_KEY",
        "-n",
        namespace,
        check=False,
    )

    assert result.returncode != 0
    assert "denied the request" in result.stderr
    assert "container 'web' already sets API_KEY by hand" in result.stderr
    assert env_of_template(get(cluster, namespace, "deployment/web")) == [{"name": "API_KEY", "value": "hand-set"}]


@pytest.mark.usefixtures("webhook")
def test_a_link_to_a_missing_secret_is_accepted_and_kubectl_prints_the_warning(
    cluster: ControlPlane, namespace: str
) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1", "-n", namespace)

    result = cluster.kubectl(
        "annotate", "deployment/web", "env.secrets.smll.io/API_KEY=stripe/STRIPE_SECRET_KEY", "-n", namespace
    )

    assert f"Warning: env.secrets.smll.io/API_KEY: Secret 'stripe' does not exist in namespace '{namespace}' yet" in (
        result.stderr
    )
    assert env_of_template(get(cluster, namespace, "deployment/web")) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]


@pytest.mark.usefixtures("webhook")
def test_a_malformed_link_is_denied_with_a_message_naming_the_annotation(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1", "-n", namespace)

    result = cluster.kubectl(
        "annotate", "deployment/web", "env.secrets.smll.io/API_KEY=stripe", "-n", namespace, check=False
    )

    assert result.returncode != 0
    assert "annotation env.secrets.smll.io/API_KEY: 'stripe' is not <secret>/<key>" in result.stderr


@pytest.mark.usefixtures("webhook")
def test_a_bare_pod_with_a_link_annotation_gets_the_env(cluster: ControlPlane, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "job", "annotations": {"env.secrets.smll.io/DB": "db/DATABASE_URL"}},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/job:1"}]},
    }
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(pod))

    stored = get(cluster, namespace, "pod/job")

    assert stored["spec"]["containers"][0]["env"] == [ref("DB", "db", "DATABASE_URL")]


@pytest.mark.usefixtures("webhook")
def test_objects_without_link_annotations_are_not_sent_to_the_webhook(
    cluster: ControlPlane, namespace: str, webhook: LocalWebhook
) -> None:
    def mutate_reviews() -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in webhook.get("/metrics").splitlines()
            if line.startswith("smll_admission_reviews_total{") and 'webhook="mutate"' in line
        )

    before = mutate_reviews()
    cluster.kubectl("create", "deployment", "plain", "--image=registry.invalid/web:1", "-n", namespace)
    wait_for(lambda: bool(get(cluster, namespace, "pods")["items"]), timeout=30, what="the pod of the Deployment")

    assert mutate_reviews() == before


# A custom resource kind of the kind an operator brings, to own workloads the way an operator does.
SHOP_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "shops.e2e.smll.io"},
    "spec": {
        "group": "e2e.smll.io",
        "names": {"kind": "Shop", "plural": "shops", "singular": "shop"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


def a_secret_and_a_shop(cluster: ControlPlane, namespace: str) -> str:
    """The Secret to link, and an operator's custom resource to own workloads; returns the resource's uid."""
    cluster.kubectl(
        "create", "secret", "generic", "stripe", f"--from-literal=STRIPE_SECRET_KEY={GUARD.canary()}", "-n", namespace
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(SHOP_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/shops.e2e.smll.io", "--timeout=30s")
    shop = {"apiVersion": "e2e.smll.io/v1", "kind": "Shop", "metadata": {"name": "shop"}}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(shop))
    return str(get(cluster, namespace, "shop.e2e.smll.io/shop")["metadata"]["uid"])


@pytest.mark.usefixtures("webhook")
def test_a_deployment_owned_by_a_custom_resource_is_linked_and_a_link_on_its_replicaset_is_reported_unapplied(
    cluster: ControlPlane, namespace: str
) -> None:
    uid = a_secret_and_a_shop(cluster, namespace)
    owner = {"apiVersion": "e2e.smll.io/v1", "kind": "Shop", "name": "shop", "uid": uid, "controller": True}
    web = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "ownerReferences": [owner],
            "annotations": {"env.secrets.smll.io/API_KEY": "stripe/STRIPE_SECRET_KEY"},
        },
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
            },
        },
    }

    applied = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(web))

    assert "Warning" not in applied.stderr
    deployment = get(cluster, namespace, "deployment/web")
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "Shop"
    assert env_of_template(deployment) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]

    # The Deployment's ReplicaSet is a copy of its linked template: a link put on it cannot be applied, and says so.
    wait_for(lambda: bool(get(cluster, namespace, "replicasets")["items"]), timeout=30, what="web's ReplicaSet")
    (replicaset,) = get(cluster, namespace, "replicasets")["items"]
    annotated = cluster.kubectl(
        "annotate",
        f"replicaset/{replicaset['metadata']['name']}",
        "env.secrets.smll.io/OTHER=stripe/STRIPE_SECRET_KEY",
        "-n",
        namespace,
    )

    assert (
        "Warning: link annotations on this ReplicaSet are not applied: deployment/web makes it from its own pod "
        "template; annotate deployment/web (or the workload that owns it) instead"
    ) in annotated.stderr
    after = get(cluster, namespace, f"replicaset/{replicaset['metadata']['name']}")
    assert env_of_template(after) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]


@pytest.mark.usefixtures("webhook")
def test_a_pod_that_an_operator_creates_is_linked(cluster: ControlPlane, namespace: str) -> None:
    """The chart's matchConditions send Pods of any controller but the built-in ones (whose template is linked)."""
    uid = a_secret_and_a_shop(cluster, namespace)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "worker",
            "ownerReferences": [
                {"apiVersion": "e2e.smll.io/v1", "kind": "Shop", "name": "shop", "uid": uid, "controller": True}
            ],
            "annotations": {"env.secrets.smll.io/API_KEY": "stripe/STRIPE_SECRET_KEY"},
        },
        "spec": {"containers": [{"name": "worker", "image": "registry.invalid/worker:1"}]},
    }

    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))

    created = get(cluster, namespace, "pod/worker")
    assert created["spec"]["containers"][0]["env"] == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]
