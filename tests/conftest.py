"""Fixtures shared by every test: the real control plane (session-scoped) and a fresh namespace per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.config.kube_config import new_client_from_config

from devenv.cluster import ControlPlane, running_control_plane, wait_for
from tests.leaks import GUARD


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager, built from Go modules on first use."""
    with running_control_plane(tmp_path_factory.mktemp("cluster")) as plane:
        yield plane


@contextlib.contextmanager
def fresh_namespace(cluster: ControlPlane, prefix: str = "t") -> Iterator[str]:
    """A namespace of its own, with its default ServiceAccount in place; deleted afterwards, once what the product
    wrote into it (Events, Database statuses) has been checked for Secret values."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    yield name
    GUARD.scan(cluster.kubectl("get", "events", "-n", name, "-o", "json", check=False).stdout, f"events in {name}")
    databases = cluster.kubectl("get", "databases.smll.io", "-n", name, "-o", "json", check=False).stdout
    GUARD.scan(databases, f"Database statuses in {name}")
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: ControlPlane) -> Iterator[str]:
    """A namespace of its own for one test."""
    with fresh_namespace(cluster) as name:
        yield name


@pytest.fixture
async def kube_api(cluster: ControlPlane) -> AsyncIterator[client.ApiClient]:
    """A kubernetes-asyncio client logged in as the cluster admin."""
    api = await new_client_from_config(config_file=str(cluster.kubeconfig))
    async with api:
        yield api
