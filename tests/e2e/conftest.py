"""e2e fixtures: the admission server running beside the control plane, registered as the chart registers it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devenv.cluster import ControlPlane
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
