"""The product in a living cluster: a real node (containerd, runc, kubelet, kube-proxy), the product installed by its
chart from its own image, and containers that read the values the product links for them.

These tests share one cluster with a node (session-scoped, see ``node_cluster``) and one install of the product;
they run after the tests of the node-less cluster only because pytest orders them by file name.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator

import pytest

from devenv.cluster import ControlPlane, wait_for
from devenv.images import buildah, push
from devenv.incluster import (
    CHART,
    NAMESPACE,
    RELEASE,
    Installed,
    Platform,
    chart_values,
    database_client_pod,
    helm,
    uninstall,
    wait_pod_finished,
)
from devenv.node import NODE_NAME
from tests.conftest import fresh_namespace
from tests.leaks import GUARD

pytestmark = pytest.mark.e2e


@pytest.fixture
def ns(node_cluster: ControlPlane) -> Iterator[str]:
    """A namespace of its own on the cluster with a node."""
    with fresh_namespace(node_cluster, "n") as name:
        yield name


def kubectl_json(plane: ControlPlane, *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(plane.kubectl(*args, "-o", "json").stdout)  # type: ignore[no-any-return]


def deployment(name: str, image: str, *, annotations: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": image}],
                },
            },
        },
    }


def rollout_status(plane: ControlPlane, ns: str, name: str, timeout: str = "120s") -> None:
    plane.kubectl("-n", ns, "rollout", "status", f"deployment/{name}", f"--timeout={timeout}")


def wait_rolled_by_the_controller(plane: ControlPlane, ns: str, name: str) -> None:
    """The controller stamped the template (a rollout), and the rollout finished."""
    restarted = "jsonpath={.spec.template.metadata.annotations.secrets\\.smll\\.io/restarted-at}"
    wait_for(
        lambda: bool(plane.kubectl("-n", ns, "get", f"deployment/{name}", "-o", restarted).stdout),
        timeout=60,
        what=f"the controller to roll {name}",
    )
    rollout_status(plane, ns, name)


def running_pods(plane: ControlPlane, ns: str, app: str) -> list[str]:
    pods = kubectl_json(plane, "-n", ns, "get", "pods", "-l", f"app={app}")["items"]
    return [
        pod["metadata"]["name"]
        for pod in pods
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
    ]


def printenv(plane: ControlPlane, ns: str, target: str, var: str) -> str:
    return plane.kubectl("-n", ns, "exec", target, "--", "printenv", var).stdout.strip()


# ---- the node ----------------------------------------------------------------------------------------------------


def test_the_node_is_ready_and_a_pod_runs_and_logs(node_cluster: ControlPlane, installed: Installed, ns: str) -> None:
    ready = node_cluster.kubectl(
        "get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    ).stdout
    assert ready == "True"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": installed.test_app_image, "env": [{"name": "GREETING"}]}],
        },
    }
    node_cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(pod))
    node_cluster.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/hello", "--timeout=120s")
    wait_for(
        lambda: "test-app ready" in node_cluster.kubectl("-n", ns, "logs", "hello", check=False).stdout,
        timeout=30,
        what="the test app's log",
    )
    logs = node_cluster.kubectl("-n", ns, "logs", "hello").stdout
    assert "GREETING" in logs.splitlines()
    # The pod reaches the API through the `kubernetes` Service (kube-proxy), as the product's own pod does.
    host = printenv(node_cluster, ns, "hello", "KUBERNETES_SERVICE_HOST")
    answer = node_cluster.kubectl(
        "-n", ns, "exec", "hello", "--", "sh", "-c", f"echo | nc -w 3 {host} 443 >/dev/null && echo reached"
    ).stdout
    assert "reached" in answer


# ---- the product, installed by its chart ---------------------------------------------------------------------


def test_the_chart_runs_the_product_pod_with_webhook_and_controller(
    node_cluster: ControlPlane, installed: Installed
) -> None:
    pods = kubectl_json(node_cluster, "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}")
    assert pods["items"], "no product pod"
    for pod in pods["items"]:
        statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
        assert set(statuses) == {"webhook", "controller"}
        assert all(c["ready"] for c in statuses.values()), statuses
        assert all(c["restartCount"] == 0 for c in statuses.values()), statuses
        assert pod["spec"]["containers"][0]["image"] == installed.product_image


def test_a_linked_value_reaches_the_container_and_a_change_rolls_it(
    node_cluster: ControlPlane, installed: Installed, ns: str
) -> None:
    plane = node_cluster
    first, second = GUARD.canary("first"), GUARD.canary("second")
    plane.kubectl("-n", ns, "create", "secret", "generic", "stripe", f"--from-literal=STRIPE_SECRET_KEY={first}")
    web = deployment(
        "web", installed.test_app_image, annotations={"env.secrets.smll.io/API_KEY": "stripe/STRIPE_SECRET_KEY"}
    )
    plane.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(web))
    rollout_status(plane, ns, "web")
    assert printenv(plane, ns, "deployment/web", "API_KEY") == first
    [old_pod] = running_pods(plane, ns, "web")

    patch = {"stringData": {"STRIPE_SECRET_KEY": second}}
    plane.kubectl("-n", ns, "patch", "secret", "stripe", "-p", json.dumps(patch))
    wait_rolled_by_the_controller(plane, ns, "web")
    wait_for(lambda: running_pods(plane, ns, "web") != [old_pod], timeout=60, what="the old pod to go")
    [new_pod] = running_pods(plane, ns, "web")
    assert new_pod != old_pod
    assert printenv(plane, ns, f"pod/{new_pod}", "API_KEY") == second
    wait_for(
        lambda: old_pod not in plane.kubectl("-n", ns, "get", "pods", "-o", "name").stdout,
        timeout=60,
        what="the old pod to be deleted",
    )
    replica_sets = kubectl_json(plane, "-n", ns, "get", "replicasets", "-l", "app=web")["items"]
    assert len(replica_sets) >= 2
    current = [rs for rs in replica_sets if rs["status"].get("replicas", 0) > 0]
    assert len(current) == 1, "exactly one ReplicaSet runs pods after the rollout"
    assert all(rs["spec"]["replicas"] == 0 for rs in replica_sets if rs is not current[0])
    events = plane.kubectl("-n", ns, "get", "events", "--field-selector=reason=SecretChanged", "-o", "json").stdout
    assert "deployment/web" in events or "web" in events


def test_unlink_then_delete_goes_through_once_the_rollout_finished(
    node_cluster: ControlPlane, installed: Installed, ns: str
) -> None:
    """The product page's "remove the references first, then delete the secret", with pods that really run: the
    Deployment's revision history still names the Secret, and says so in a warning, but blocks nothing."""
    plane = node_cluster
    plane.kubectl("-n", ns, "create", "secret", "generic", "stripe", f"--from-literal=KEY={GUARD.canary('unlink')}")
    web = deployment("web", installed.test_app_image, annotations={"env.secrets.smll.io/API_KEY": "stripe/KEY"})
    plane.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(web))
    rollout_status(plane, ns, "web")
    plane.kubectl("-n", ns, "patch", "secret", "stripe", "-p", json.dumps({"stringData": {"KEY": GUARD.canary("2")}}))
    wait_rolled_by_the_controller(plane, ns, "web")
    refused = plane.kubectl("-n", ns, "delete", "secret", "stripe", "--dry-run=server", check=False)
    assert refused.returncode != 0
    assert "deployment/web (env API_KEY)" in refused.stderr, refused.stderr

    plane.kubectl("-n", ns, "annotate", "deployment/web", "env.secrets.smll.io/API_KEY-")
    rollout_status(plane, ns, "web")
    wait_for(
        lambda: (
            len(running_pods(plane, ns, "web")) == 1
            and plane.kubectl("-n", ns, "get", "pods", "-l", "app=web", "-o", "name").stdout.count("pod/") == 1
        ),
        timeout=60,
        what="the old pods to go",
    )
    deleted = plane.kubectl("-n", ns, "delete", "secret", "stripe")
    assert "rollout undo" in deleted.stderr, deleted.stderr


def test_a_pod_connects_to_postgresql_with_a_generated_database_url(
    node_cluster: ControlPlane, installed: Installed, ns: str
) -> None:
    plane = node_cluster
    database = {
        "apiVersion": "smll.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": "orders"},
        "spec": {"engine": "postgres", "server": "default", "deletionPolicy": "Delete"},
    }
    plane.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(database))
    plane.kubectl("-n", ns, "wait", "--for=condition=Ready", "database/orders", "--timeout=90s")
    pod = database_client_pod(installed.product_image, "orders-credentials")
    plane.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(pod))
    logs = wait_pod_finished(plane, ns, "db-client")
    user = base64.b64decode(
        plane.kubectl("-n", ns, "get", "secret", "orders-credentials", "-o", "jsonpath={.data.POSTGRES_USER}").stdout
    ).decode()
    assert f"connected as {user}" in logs, logs


def test_a_vpc_namespace_pulls_from_the_registry_and_another_cannot(
    node_cluster: ControlPlane, installed: Installed, platform: Platform, ns: str
) -> None:
    plane = node_cluster
    plane.kubectl("label", "namespace", ns, "smll.io/vpc=main")
    wait_for(
        lambda: (
            "registry-pull-secret"
            in plane.kubectl("-n", ns, "get", "serviceaccount", "default", "-o", "jsonpath={.imagePullSecrets}").stdout
        ),
        timeout=60,
        what="the pull secret on the default ServiceAccount",
    )

    def key(name: str) -> str:
        encoded = plane.kubectl("-n", ns, "get", "secret", "registry-credentials", "-o", f"jsonpath={{.data.{name}}}")
        return base64.b64decode(encoded.stdout).decode()

    url, user, password = key("REGISTRY_URL"), key("REGISTRY_USER"), key("REGISTRY_PASSWORD")
    GUARD.register(password)
    platform.sync_htpasswd(plane)
    # The VPC's own credentials push (as a CI job would), and its pods pull with the generated pull secret.
    image = push(installed.images.test_app, platform.vpc_registry.host, creds=f"{user}:{password}")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "private"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": image}]},
    }
    plane.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(pod))
    plane.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/private", "--timeout=120s")

    with fresh_namespace(plane, "o") as outsider:
        plane.kubectl("-n", outsider, "apply", "-f", "-", input=json.dumps(pod))

        def refused() -> bool:
            state = plane.kubectl(
                "-n",
                outsider,
                "get",
                "pod/private",
                "-o",
                "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
            ).stdout
            return state in ("ErrImagePull", "ImagePullBackOff")

        wait_for(refused, timeout=60, what="the pull outside the VPC to be refused")
    assert url == platform.vpc_registry.host, "REGISTRY_URL is what docker login and image references take"


def test_helm_upgrade_to_a_new_image_with_two_replicas_fails_no_admission_request(
    node_cluster: ControlPlane, installed: Installed, platform: Platform, ns: str
) -> None:
    plane = node_cluster
    # A new tag of the same build stands for a new release of the image.
    buildah("tag", installed.images.product, "localhost/smll-secrets:upgrade")
    retagged = push("localhost/smll-secrets:upgrade", platform.images.host)
    values = chart_values(platform, retagged, replicas=2)

    failures: list[str] = []
    probe = deployment("probe", installed.test_app_image, annotations={"env.secrets.smll.io/PROBE": "not-a-link"})
    done = threading.Event()

    def hammer() -> None:
        # Bounded: at most 2,000 requests and 5 minutes.
        deadline = time.monotonic() + 300
        for _ in range(2000):
            if done.is_set() or time.monotonic() > deadline:
                return
            result = plane.kubectl(
                "-n", ns, "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
            )
            if "env.secrets.smll.io/PROBE" not in result.stderr:
                failures.append(result.stderr.strip())
            time.sleep(0.05)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        helm(plane, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout=5m", values=values)
        plane.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{RELEASE}", "--timeout=180s")
    finally:
        done.set()
        thread.join()
    assert failures == [], failures[:5]
    pods = kubectl_json(plane, "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    images = {pod["spec"]["containers"][0]["image"] for pod in pods if not pod["metadata"].get("deletionTimestamp")}
    assert images == {retagged}


def test_a_separate_controller_works_like_the_sidecar_and_the_webhook_loses_its_write_rights(
    node_cluster: ControlPlane, installed: Installed, platform: Platform, ns: str
) -> None:
    plane = node_cluster
    values = chart_values(platform, installed.product_image, replicas=1)
    values["controller"] = {**values["controller"], "separate": True, "replicaCount": 1}
    # The write-only API writes Secrets from the webhook's pods (docs/operations.md): off here, so that the
    # network-facing pods hold no write right at all.
    values["secretsApi"] = {"enabled": False}
    helm(plane, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout=5m", values=values)
    plane.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{RELEASE}-controller", "--timeout=180s")
    plane.kubectl("-n", NAMESPACE, "rollout", "status", f"deployment/{RELEASE}", "--timeout=180s")
    # The old sidecar hands over the Lease when its pod ends; the new controller leads once it has synced.
    holder = "jsonpath={.spec.holderIdentity}"
    wait_for(
        lambda: (
            plane.kubectl("-n", NAMESPACE, "get", "lease", f"{RELEASE}-controller", "-o", holder).stdout.startswith(
                f"{RELEASE}-controller-"
            )
            and "rollouts: caches synced"
            in plane.kubectl("-n", NAMESPACE, "logs", f"deployment/{RELEASE}-controller", check=False).stdout
        ),
        timeout=120,
        what="the separate controller to lead",
    )

    def can(account: str, *request: str) -> bool:
        subject = f"--as=system:serviceaccount:{NAMESPACE}:{account}"
        return plane.kubectl("auth", "can-i", subject, *request, check=False).stdout.strip() == "yes"

    for request in (
        ("patch", "deployments", "-n", ns),
        ("create", "secrets", "-n", ns),
        ("delete", "secrets", "-n", ns),
    ):
        assert not can(RELEASE, *request), f"the webhook's account may {' '.join(request)}"
        assert can(f"{RELEASE}-controller", *request), f"the controller's account may not {' '.join(request)}"
    assert can(RELEASE, "list", "secrets", "-n", ns), "the webhook keeps its index of key names"

    # The controller, in its own pod, still rolls a service whose Secret changed.
    value = GUARD.canary("separate")
    plane.kubectl("-n", ns, "create", "secret", "generic", "token", f"--from-literal=TOKEN={value}")
    app = deployment("app", installed.test_app_image, annotations={"env.secrets.smll.io/TOKEN": "token/TOKEN"})
    plane.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(app))
    rollout_status(plane, ns, "app")
    plane.kubectl("-n", ns, "patch", "secret", "token", "-p", json.dumps({"stringData": {"TOKEN": value + "2"}}))
    wait_for(
        lambda: (
            plane.kubectl("-n", ns, "exec", "deployment/app", "--", "printenv", "TOKEN", check=False).stdout.strip()
            == value + "2"
        ),
        timeout=120,
        what="the separate controller to roll app",
    )


def test_zz_helm_uninstall_leaves_nothing(node_cluster: ControlPlane, installed: Installed) -> None:
    uninstall(node_cluster)
    left = node_cluster.kubectl(
        "get",
        "deployments,services,serviceaccounts,roles,rolebindings,configmaps,leases",
        "-n",
        NAMESPACE,
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        "name",
    ).stdout.split()
    cluster_wide = node_cluster.kubectl(
        "get",
        "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations",
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        "name",
    ).stdout.split()
    assert left + cluster_wide == []
    # What the product wrote while it ran stays on purpose (docs/install.md), and nothing else. (The htpasswd
    # Secret exists once a VPC did.)
    remaining = node_cluster.kubectl("get", "secrets,leases,configmaps", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert set(remaining) <= set(
        [
            "secret/pg-admin",  # the admin's own, made before the install
            "secret/registry-htpasswd",
            f"secret/{RELEASE}-rollout-key",
            f"secret/{RELEASE}-webhook-tls",
            f"lease.coordination.k8s.io/{RELEASE}-controller",
            "configmap/kube-root-ca.crt",
        ]
    ), remaining
