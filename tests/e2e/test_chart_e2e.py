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
    cluster_scoped = "clusterrole,clusterrolebinding,mutatingwebhookconfiguration,validatingwebhookconfiguration"
    assert len(labelled(cluster, cluster_scoped)) == 7
    if CRD.exists():
        cluster.kubectl("get", "crd", "databases.smll.io")

    # The self-managed webhook writes caBundle; an upgrade must keep it (the chart reads the live value).
    bundle = base64.b64encode(cluster.ca_pem).decode()
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        patch = [{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]
        cluster.kubectl("patch", kind, FULLNAME, "--type=json", "-p", json.dumps(patch))
    run_helm(
        helm, cluster, "upgrade", RELEASE, str(CHART), "-n", namespace, values={"controller": {"settleSeconds": 3}}
    )
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        live = json.loads(cluster.kubectl("get", kind, FULLNAME, "-o", "json").stdout)
        assert live["webhooks"][0]["clientConfig"]["caBundle"] == bundle, kind
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
    cluster.kubectl("delete", "clusterrole", role, "--ignore-not-found")


@pytest.mark.parametrize(
    ("verb", "allowed"),
    [
        ("create", True),
        ("update", True),
        ("patch", True),
        ("delete", True),
        ("get", False),
        ("list", False),
        ("watch", False),
    ],
)
def test_the_secret_writer_can_i(cluster: ControlPlane, namespace: str, writer: str, verb: str, allowed: bool) -> None:
    answer = cluster.kubectl("auth", "can-i", verb, "secrets", "-n", namespace, f"--as={writer}", check=False)
    assert answer.stdout.strip() == ("yes" if allowed else "no")
    elsewhere = cluster.kubectl("auth", "can-i", verb, "secrets", "-n", "default", f"--as={writer}", check=False)
    assert elsewhere.stdout.strip() == "no", "bound in one namespace only"


def test_the_secret_writer_writes_with_create_apply_replace_delete_and_cannot_read(
    cluster: ControlPlane, namespace: str, writer: str
) -> None:
    def as_writer(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl(*args, "-n", namespace, f"--as={writer}", input=input, check=False)

    def stored() -> dict[str, str]:
        secret = json.loads(cluster.kubectl("get", "secret", "api", "-n", namespace, "-o", "json").stdout)
        return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}

    def manifest(**data: str) -> str:
        return json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api"}, "stringData": data})

    created = as_writer("create", "secret", "generic", "api", "--from-literal=KEY=one")
    assert created.returncode == 0, created.stderr
    # Server-side apply is a PATCH: it sets some keys without reading the Secret first.
    applied = as_writer("apply", "--server-side", "-f", "-", input=manifest(OTHER="two"))
    assert applied.returncode == 0, applied.stderr
    assert stored() == {"KEY": "one", "OTHER": "two"}
    replaced = as_writer("replace", "-f", "-", input=manifest(KEY="three"))
    assert replaced.returncode == 0, replaced.stderr
    assert stored() == {"KEY": "three"}

    reads = (
        ("get", "secret", "api"),
        ("get", "secrets"),
        ("get", "--raw", f"/api/v1/namespaces/{namespace}/secrets?watch=1"),
    )
    for read in reads:
        refused = as_writer(*read)
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr.lower(), refused.stderr
    # kubectl apply (client-side) and kubectl patch read the live object first: both are refused.
    for needs_get in (("apply", "-f", "-"), ("patch", "secret", "api", "-p", "{}")):
        refused = as_writer(*needs_get, input=manifest(KEY="four"))
        assert refused.returncode != 0
        assert "cannot get resource" in refused.stderr, refused.stderr
    assert stored() == {"KEY": "three"}

    # What RBAC cannot hide (docs/write-only-secrets.md): the answer to a write carries the stored data, keys the
    # writer did not send included.
    echoed = as_writer("apply", "--server-side", "-f", "-", "-o", "json", input=manifest(OTHER="five"))
    assert echoed.returncode == 0, echoed.stderr
    answer = json.loads(echoed.stdout)["data"]
    assert base64.b64decode(answer["KEY"]).decode() == "three"

    deleted = as_writer("delete", "secret", "api")
    assert deleted.returncode == 0, deleted.stderr
    assert cluster.kubectl("get", "secret", "api", "-n", namespace, "--ignore-not-found").stdout == ""
