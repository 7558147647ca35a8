"""The Helm chart on the real control plane: what it renders is accepted by the API server, an install and an
uninstall leave nothing behind, and the write-only role holds up under impersonation."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.binaries import ensure_helm
from devenv.cluster import ControlPlane, wait_for
from tests.unit.test_chart import CHART, COMBINATIONS

pytestmark = pytest.mark.e2e

# Not "smll-secrets": the local webhook of the other e2e tests is registered under that name.
RELEASE = "chart-e2e"
FULLNAME = f"{RELEASE}-smll-secrets"
CRD = CHART / "crds" / "databases.smll.io.yaml"
# Kinds whose CRDs (cert-manager's) this control plane does not have.
NOT_VALIDATED = {"Certificate", "Issuer"}


@pytest.fixture(scope="session")
def helm() -> Path:
    return ensure_helm()


def run_helm(
    helm: Path, cluster: ControlPlane, *args: str, values: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    values_from_stdin = ["-f", "-"] if values is not None else []
    proc = subprocess.run(
        [str(helm), f"--kubeconfig={cluster.kubeconfig}", *args, *values_from_stdin],
        input=yaml.safe_dump(values or {}),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def install_crd(cluster: ControlPlane) -> None:
    if CRD.exists():
        cluster.kubectl("apply", "-f", str(CRD))
        cluster.kubectl("wait", "--for=condition=Established", "crd/databases.smll.io", "--timeout=30s")


def labelled(cluster: ControlPlane, kinds: str, *scope: str) -> list[str]:
    found = cluster.kubectl(
        "get", kinds, *scope, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name", "--ignore-not-found"
    )
    return found.stdout.split()


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_every_rendered_manifest_is_accepted_by_the_apiserver(
    helm: Path, cluster: ControlPlane, namespace: str, combination: str
) -> None:
    install_crd(cluster)
    rendered = run_helm(
        helm, cluster, "template", RELEASE, str(CHART), "-n", namespace, values=COMBINATIONS[combination]
    )
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] not in NOT_VALIDATED]
    assert docs
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )
    accepted = result.stdout.splitlines()
    assert len(accepted) == len(docs), result.stdout
    assert all("(server dry run)" in line for line in accepted), result.stdout


@pytest.fixture
def release(helm: Path, cluster: ControlPlane, namespace: str) -> Iterator[str]:
    """The chart installed with its defaults (its pods stay Pending: there is no kubelet); uninstalled afterwards."""
    installed = run_helm(helm, cluster, "install", RELEASE, str(CHART), "-n", namespace, values={})
    try:
        yield installed.stdout
    finally:
        subprocess.run(
            [
                str(helm),
                f"--kubeconfig={cluster.kubeconfig}",
                "uninstall",
                RELEASE,
                "-n",
                namespace,
                "--ignore-not-found",
            ],
            capture_output=True,
            timeout=180,
            check=False,
        )


def test_install_upgrade_and_uninstall_leave_nothing_behind(
    helm: Path, cluster: ControlPlane, namespace: str, release: str
) -> None:
    assert "kubectl annotate deployment/web env.secrets.smll.io/API_KEY=stripe/STRIPE_SECRET_KEY" in release
    assert set(labelled(cluster, "deployment,service,serviceaccount,role,rolebinding,pdb", "-n", namespace)) == {
        f"deployment.apps/{FULLNAME}",
        f"service/{FULLNAME}-webhook",
        f"serviceaccount/{FULLNAME}",
        f"role.rbac.authorization.k8s.io/{FULLNAME}-controller",
        f"role.rbac.authorization.k8s.io/{FULLNAME}-webhook-tls",
        f"rolebinding.rbac.authorization.k8s.io/{FULLNAME}-controller",
        f"rolebinding.rbac.authorization.k8s.io/{FULLNAME}-webhook-tls",
        f"poddisruptionbudget.policy/{FULLNAME}",
    }
    cluster_scoped = (
        "clusterrole,clusterrolebinding,mutatingwebhookconfiguration,validatingwebhookconfiguration,apiservice"
    )
    # 4 ClusterRoles (webhook, controller, writer, viewer) and the write-only API's own; 4 bindings; 2 webhook
    # configurations; the APIService.
    assert len(labelled(cluster, cluster_scoped)) == 12
    assert labelled(cluster, "rolebinding", "-n", "kube-system") == [
        f"rolebinding.rbac.authorization.k8s.io/{FULLNAME}-api-authentication-reader"
    ]
    if CRD.exists():
        cluster.kubectl("get", "crd", "databases.smll.io")

    # The self-managed webhook writes caBundle; an upgrade must keep it (the chart reads the live value).
    bundle = base64.b64encode(cluster.ca_pem).decode()
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        patch = [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]
        cluster.kubectl("patch", kind, FULLNAME, "--type=json", "-p", json.dumps(patch))
    api_service = "apiservice/v1alpha1.secrets.smll.io"
    cluster.kubectl("patch", api_service, "--type=merge", "-p", json.dumps({"spec": {"caBundle": bundle}}))
    run_helm(
        helm, cluster, "upgrade", RELEASE, str(CHART), "-n", namespace, values={"controller": {"settleSeconds": 3}}
    )
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        live = json.loads(cluster.kubectl("get", kind, FULLNAME, "-o", "json").stdout)
        assert live["webhooks"][0]["clientConfig"]["caBundle"] == bundle, kind
    live_api = json.loads(cluster.kubectl("get", api_service, "-o", "json").stdout)
    assert live_api["spec"]["caBundle"] == bundle, "the write-only API's APIService keeps the webhook's CA"
    args = json.loads(cluster.kubectl("get", "deployment", FULLNAME, "-n", namespace, "-o", "json").stdout)
    assert "--settle-seconds=3" in args["spec"]["template"]["spec"]["containers"][1]["args"]

    run_helm(helm, cluster, "uninstall", RELEASE, "-n", namespace, "--wait")
    wait_for(
        lambda: (
            not labelled(cluster, "all,configmap,secret,serviceaccount,role,rolebinding,pdb,lease", "-n", namespace)
        ),
        timeout=60,
        what="the release's namespaced objects to go",
    )
    assert labelled(cluster, cluster_scoped) == []
    assert labelled(cluster, "rolebinding", "-n", "kube-system") == []
    assert cluster.kubectl("get", "clusterrole", "smll-secrets-secret-writer", "--ignore-not-found").stdout == ""
    assert cluster.kubectl("get", "secrets", "-n", namespace, "-l", "owner=helm", "-o", "name").stdout == ""
    if CRD.exists():
        cluster.kubectl("get", "crd", "databases.smll.io")  # helm never deletes CRDs


@pytest.fixture
def writer(helm: Path, cluster: ControlPlane, namespace: str) -> Iterator[str]:
    """A user bound to the chart's write-only ClusterRole in the test namespace."""
    role = f"secret-writer-{uuid.uuid4().hex[:8]}"
    user = f"writer-{uuid.uuid4().hex[:8]}@example.com"
    rendered = run_helm(
        helm,
        cluster,
        "template",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--show-only",
        "templates/secret-writer-clusterrole.yaml",
        values={"secretWriter": {"name": role}},
    )
    cluster.kubectl("apply", "-f", "-", input=rendered.stdout)
    cluster.kubectl("create", "rolebinding", "writer", "-n", namespace, f"--clusterrole={role}", f"--user={user}")
    yield user
    # Every role the template renders (the viewer role beside the writer's), so no later install finds one Helm
    # does not own.
    cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=rendered.stdout)


@pytest.mark.parametrize("verb", ["create", "update", "patch", "delete", "get", "list", "watch", "deletecollection"])
def test_the_secret_writer_holds_no_verb_on_secrets(
    cluster: ControlPlane, namespace: str, writer: str, verb: str
) -> None:
    """It writes through the write-only API (tests/e2e/test_secrets_api_e2e.py uses it through the aggregation layer):
    no request of its own can answer with a value."""
    answer = cluster.kubectl("auth", "can-i", verb, "secrets", "-n", namespace, f"--as={writer}", check=False)
    assert answer.stdout.strip() == "no"


@pytest.mark.parametrize(
    ("verb", "resource", "expected"),
    [
        ("create", "secretwrites", True),
        ("get", "writeonlysecrets", True),
        ("list", "writeonlysecrets", True),
        ("delete", "writeonlysecrets", True),
        ("update", "writeonlysecrets", True),  # a SecretWrite's review of its Secret, by name
        ("patch", "writeonlysecrets", False),
        ("get", "secretwrites", False),
    ],
)
def test_the_secret_writer_uses_the_write_only_api_where_it_is_bound(
    cluster: ControlPlane, namespace: str, writer: str, verb: str, resource: str, expected: bool
) -> None:
    # The SubjectAccessReview the API's server makes for each request (kubectl auth can-i needs the resource in
    # discovery, which only a cluster with the product's pods running has).
    def allowed(where: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": writer,
                "groups": ["system:authenticated"],
                "resourceAttributes": {"namespace": where, "verb": verb, "group": "secrets.smll.io",
                                       "version": "v1alpha1", "resource": resource},
            },
        }  # fmt: skip
        answer = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
        return bool(json.loads(answer.stdout)["status"].get("allowed"))

    assert allowed(namespace) is expected
    assert not allowed("default"), "bound in one namespace only"
