"""The VPC registry as ``make demo`` runs it, on the real node: Distribution in a Deployment with token auth against
the installed product, reached through NodePorts by the kubelet's containerd and by a person on the host.

Needs the node: run as ``flock /tmp/smll-node.lock .venv/bin/pytest tests/e2e/test_registry_incluster_e2e.py``."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from devenv.cluster import ControlPlane, wait_for
from devenv.images import push
from devenv.incluster import NAMESPACE, Installed, Platform, install
from devenv.registry import RegistryClient
from devenv.tour import tour
from tests.conftest import fresh_namespace
from tests.leaks import GUARD

pytestmark = pytest.mark.e2e

REFUSED = (401, 403)


@pytest.fixture(scope="module")
def cluster_platform(node_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    services = Platform(tmp_path_factory.mktemp("platform"), registry_in_cluster=True)
    services.start(node_cluster)
    try:
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="module")
def cluster_installed(node_cluster: ControlPlane, cluster_platform: Platform) -> Installed:
    return install(node_cluster, cluster_platform)


def credentials(plane: ControlPlane, namespace: str) -> tuple[str, str, str]:
    wait_for(
        lambda: (
            "registry-pull-secret"
            in plane.kubectl(
                "-n", namespace, "get", "serviceaccount", "default", "-o", "jsonpath={.imagePullSecrets}"
            ).stdout
        ),
        timeout=60,
        what=f"the pull secret on the default ServiceAccount of {namespace}",
    )

    def key(name: str) -> str:
        found = plane.kubectl(
            "-n", namespace, "get", "secret", "registry-credentials", "-o", f"jsonpath={{.data.{name}}}"
        )
        return base64.b64decode(found.stdout).decode()

    url, user, password = key("REGISTRY_URL"), key("REGISTRY_USER"), key("REGISTRY_PASSWORD")
    GUARD.register(password)
    return url, user, password


def pod(image: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "private"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": image}]},
        }
    )


def pull_refused(plane: ControlPlane, namespace: str) -> bool:
    reason = "jsonpath={.status.containerStatuses[0].state.waiting.reason}"
    state = plane.kubectl("-n", namespace, "get", "pod/private", "-o", reason).stdout
    return state in ("ErrImagePull", "ImagePullBackOff")


def test_a_vpc_made_after_the_install_pushes_and_its_pods_pull_and_another_vpc_is_refused_both(
    node_cluster: ControlPlane, cluster_installed: Installed, cluster_platform: Platform
) -> None:
    plane = node_cluster
    registry = cluster_platform.cluster_registry
    assert registry is not None
    with fresh_namespace(plane, "a") as first, fresh_namespace(plane, "b") as second:
        plane.kubectl("label", "namespace", first, "smll.io/vpc=team-a")
        plane.kubectl("label", "namespace", second, "smll.io/vpc=team-b")
        url, user, password = credentials(plane, first)
        assert url == registry.host, "REGISTRY_URL is the registry's address on the node"

        # From the host, as a person or CI would: the VPC pushes under its own prefix (buildah: token auth).
        image = push(cluster_installed.images.test_app, url, creds=f"{user}:{password}", path="team-a/app:1")
        owner = RegistryClient(registry.url, user, password)  # a name: a failed assert shows no password
        assert owner.pull("team-a/app", "1") == 200
        # The kubelet pulls with the default ServiceAccount's pull secret, through the token endpoint's NodePort.
        plane.kubectl("-n", first, "apply", "-f", "-", input=pod(image))
        plane.kubectl("-n", first, "wait", "--for=condition=Ready", "pod/private", "--timeout=120s")

        _, other_user, other_password = credentials(plane, second)
        other = RegistryClient(registry.url, other_user, other_password)
        assert other.login() == 200
        assert other.pull("team-a/app", "1") in REFUSED
        assert other.push_image("team-a/app", "1", layer=b"not team-a's") in REFUSED
        assert other.push_image("team-b/app", "1") == 201
        plane.kubectl("-n", second, "apply", "-f", "-", input=pod(image))
        wait_for(lambda: pull_refused(plane, second), timeout=60, what="the kubelet's pull outside the VPC refused")

        # Without credentials: nothing.
        anonymous = RegistryClient(registry.url, None, None)
        assert anonymous.pull("team-a/app", "1") == 401
    logs = plane.kubectl("-n", NAMESPACE, "logs", "deploy/smll-secrets", "-c", "controller").stdout
    assert "registry tokens: caches synced" in logs
    assert password not in logs
    assert other_password not in logs


def test_the_demos_tour_passes_on_this_install(
    node_cluster: ControlPlane, cluster_installed: Installed, cluster_platform: Platform
) -> None:
    """The tour exactly as ``make demo`` runs it on this install (its registry part: VPC main pushes, its pod runs the
    image, VPC other is refused both ways), without the rest of ``make demo``."""
    registry = cluster_platform.cluster_registry
    assert registry is not None
    said: list[str] = []
    tour(
        node_cluster,
        said.append,
        image=cluster_installed.test_app_image,
        pods_run=True,
        python_image=cluster_installed.product_image,
        push_private=lambda repository, user, password: push(
            cluster_installed.images.test_app, registry.host, creds=f"{user}:{password}", path=repository
        ),
    )
    text = "\n".join(said)
    assert "The tour passed" in text
    assert "VPC other" in text
