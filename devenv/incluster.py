"""The product installed into the local cluster the way a user installs it: its image in a registry, the chart with
Helm, a PostgreSQL server and a Distribution registry that pods reach on the node's bridge.

``Platform`` starts the services beside the cluster (on the host, as a cloud's managed database and registry would
be beside a real one); ``install`` builds and pushes the images and runs ``helm upgrade --install``. The demo and the
e2e tests that need running pods use both.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devenv.binaries import ensure_helm
from devenv.cluster import ADMISSION_CLIENT, ControlPlane, wait_for
from devenv.images import BuiltImages, build_images, build_registry_image, push
from devenv.node import GATEWAY, POD_CIDR
from devenv.postgres import ADMIN_SECRET, LocalPostgres
from devenv.registry import ClusterRegistry, LocalRegistry
from devenv.webhook import wait_until_judging
from rules.names import PRODUCT_NAMESPACE

CHART = Path(__file__).resolve().parent.parent / "charts" / "smll-secrets"
RELEASE = "smll-secrets"
NAMESPACE = PRODUCT_NAMESPACE
HTPASSWD_SECRET = "registry-htpasswd"


@dataclass
class Platform:
    """PostgreSQL, an open registry for the platform's images and a VPC registry with basic auth, on the host."""

    workdir: Path
    detach: bool = False
    postgres: LocalPostgres = field(init=False)
    images: LocalRegistry = field(init=False)
    vpc_registry: LocalRegistry = field(init=False)
    # The VPC registry as a platform runs it (make demo): a Deployment of Distribution with token auth against the
    # product, instead of the host's basic-auth one.
    registry_in_cluster: bool = False
    cluster_registry: ClusterRegistry | None = field(init=False, default=None)
    # The CA of the client certificate the cluster's apiserver presents to webhooks: the install requires it.
    apiserver_client_ca: str = field(init=False, default="")

    def __post_init__(self) -> None:
        # PostgreSQL keeps its own temporary directory: it runs as the postgres user, who may not enter workdir.
        self.postgres = LocalPostgres(pod_network=(GATEWAY, POD_CIDR))
        self.images = LocalRegistry(self.workdir / "images-registry", auth=False, name="registry-images")
        self.vpc_registry = LocalRegistry(self.workdir / "vpc-registry", address=GATEWAY, name="registry-vpc")
        if self.registry_in_cluster:
            self.cluster_registry = ClusterRegistry(GATEWAY, NAMESPACE, f"{RELEASE}-registry-token-ca")

    def start(self, plane: ControlPlane) -> None:
        assert plane.node is not None, "the platform's services are for a cluster with a node"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.postgres.start(detach=self.detach)
        self.images.start(detach=self.detach)
        if self.cluster_registry is None:
            self.vpc_registry.start(detach=self.detach)
        for registry in (self.images, self.cluster_registry or self.vpc_registry):
            plane.node.trust_plain_http_registry(registry.host)
        self.apiserver_client_ca = plane.admission_client_ca.read_text()

    def stop(self) -> None:
        self.vpc_registry.stop()
        self.images.stop()
        self.postgres.remove()

    def sync_htpasswd(self, plane: ControlPlane) -> str:
        """Play the kubelet that would mount the controller's htpasswd Secret into the registry's pod."""
        return self.vpc_registry.sync_htpasswd(plane, f"{NAMESPACE}/{HTPASSWD_SECRET}")


def helm(plane: ControlPlane, *args: str, values: dict[str, Any] | None = None, timeout: float = 300) -> str:
    """Run helm against the local cluster; values (if any) arrive on stdin, never on the command line."""
    command = [str(ensure_helm()), f"--kubeconfig={plane.kubeconfig}", *args, *(["-f", "-"] if values else [])]
    result = subprocess.run(
        command, input=yaml.safe_dump(values or {}), capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def chart_values(platform: Platform, image: str, *, replicas: int = 1, settle_seconds: float = 1) -> dict[str, Any]:
    repository, tag = image.rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "replicaCount": replicas,
        "logLevel": "INFO",
        # The admission port answers the apiserver only: its webhook client certificate (devenv/cluster.py), from
        # where it calls (the node bridge's gateway; the bridge CNI enforces no NetworkPolicy, but it is rendered).
        "webhook": {
            "clientAuth": {
                "enabled": True,
                "caBundle": platform.apiserver_client_ca,
                "allowedNames": [ADMISSION_CLIENT],
            }
        },
        "networkPolicy": {"enabled": True, "apiserverCIDRs": [f"{GATEWAY}/32"]},
        "controller": {
            "settleSeconds": settle_seconds,
            "registry": {
                **(
                    {"url": platform.vpc_registry.url}
                    if platform.cluster_registry is None
                    else platform.cluster_registry.chart_values()
                ),
                "htpasswdSecret": {"name": HTPASSWD_SECRET},
            },
            "databases": {
                "servers": {
                    "default": {
                        "host": GATEWAY,
                        "port": platform.postgres.port,
                        "sslmode": "disable",
                        "adminSecret": ADMIN_SECRET,
                    }
                }
            },
        },
    }


@dataclass
class Installed:
    images: BuiltImages
    product_image: str  # as the node pulls it
    test_app_image: str  # as the node pulls it, from the open registry


def push_images(platform: Platform) -> Installed:
    built = build_images()
    return Installed(
        images=built,
        product_image=push(built.product, platform.images.host),
        test_app_image=push(built.test_app, platform.images.host),
    )


def install(plane: ControlPlane, platform: Platform, *, replicas: int = 1, settle_seconds: float = 1) -> Installed:
    """Build and push the images, then install (or upgrade) the chart and wait until the product serves."""
    installed = push_images(platform)
    plane.kubectl("create", "namespace", NAMESPACE, check=False)
    admin = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": ADMIN_SECRET, "namespace": NAMESPACE},
        "stringData": {"username": platform.postgres.admin_user, "password": platform.postgres.admin_password},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(admin))
    values = chart_values(platform, installed.product_image, replicas=replicas, settle_seconds=settle_seconds)
    helm(plane, "upgrade", "--install", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout=5m", values=values)
    wait_until_judging(plane, timeout=60)
    if platform.cluster_registry is not None:  # it trusts the chart's token CA: after the chart
        platform.cluster_registry.deploy(plane, push(build_registry_image(), platform.images.host))
    return installed


def uninstall(plane: ControlPlane) -> None:
    helm(plane, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout=2m")


def wait_pod_finished(plane: ControlPlane, namespace: str, pod: str, *, timeout: float = 120) -> str:
    """Wait until a pod has Succeeded or Failed; return its log."""
    phase = "jsonpath={.status.phase}"
    wait_for(
        lambda: plane.kubectl("-n", namespace, "get", f"pod/{pod}", "-o", phase).stdout in ("Succeeded", "Failed"),
        timeout=timeout,
        what=f"pod {namespace}/{pod} to finish",
    )
    return plane.kubectl("-n", namespace, "logs", pod).stdout


def database_client_pod(image: str, secret: str) -> dict[str, object]:
    """A pod that connects with DATABASE_URL from ``secret`` and prints the login it got (the product's image has
    Python and asyncpg)."""
    script = (
        "import asyncio, os, asyncpg\n"
        "async def main():\n"
        "    c = await asyncpg.connect(os.environ['DATABASE_URL'], timeout=10)\n"
        "    print('connected as', await c.fetchval('SELECT session_user'))\n"
        "    await c.close()\n"
        "asyncio.run(main())\n"
    )
    reference = {"secretKeyRef": {"name": secret, "key": "DATABASE_URL"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "db-client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "command": ["python", "-c", script],
                    "env": [{"name": "DATABASE_URL", "valueFrom": reference}],
                }
            ],
        },
    }
