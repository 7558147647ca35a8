"""e2e fixtures: the admission server running beside the control plane, registered as the chart registers it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devenv.cluster import ControlPlane, running_control_plane
from devenv.incluster import Installed, Platform, install
from devenv.node import leftovers
from devenv.webhook import LocalWebhook
from tests.leaks import GUARD


@pytest.fixture(scope="session")
def webhook(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalWebhook]:
    server = LocalWebhook(cluster, tmp_path_factory.mktemp("webhook"))
    server.start()
    try:
        server.register()
        yield server
    finally:
        server.unregister()
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def no_secret_value_leaks(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole e2e run: no canary in any log file, in kubectl's stderr (webhook answers), or wherever
    the tests scanned along the way (Events, statuses, metrics). Fails the run otherwise."""
    yield
    scanned = GUARD.scan_files(tmp_path_factory.getbasetemp(), "logs")
    for number, stderr in enumerate(cluster.stderr_seen):
        GUARD.scan(stderr, f"kubectl stderr #{number}")
    assert scanned > 0, "the leak check found no log files to read"
    assert GUARD.findings == [], "\n".join(GUARD.findings)


# ---- a cluster with a real node, and the product installed into it by its chart -------------------------------


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A second control plane, with kube-scheduler and a real node; started only by the tests that need pods, for
    one module at a time (one node per machine: the demo test starts its own). Its teardown checks that the host is
    as it was: no bridge, nftables table, cgroup, iptables rule, network namespace, mount or process left."""
    with running_control_plane(tmp_path_factory.mktemp("node-cluster"), with_node=True) as plane:
        yield plane
    assert leftovers() == [], leftovers()


@pytest.fixture(scope="module")
def platform(node_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """PostgreSQL and two registries beside the cluster, reachable from its pods."""
    services = Platform(tmp_path_factory.mktemp("platform"))
    services.start(node_cluster)
    try:
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="module")
def installed(node_cluster: ControlPlane, platform: Platform) -> Installed:
    """The product's image built and pushed, and the chart installed with it (one replica)."""
    return install(node_cluster, platform)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """When a test on the node fails, show the product's own logs from its pod (they never carry a value)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    plane = getattr(item, "funcargs", {}).get("node_cluster")
    if report.when == "call" and report.failed and plane is not None:
        for deployment, container in (
            ("smll-secrets", "controller"),
            ("smll-secrets-controller", "controller"),
            ("smll-secrets", "webhook"),
        ):
            logs = plane.kubectl(
                "-n", "smll-system", "logs", f"deploy/{deployment}", "-c", container, "--tail=40", check=False
            )
            report.sections.append((f"{deployment} {container} log", logs.stdout + logs.stderr))
