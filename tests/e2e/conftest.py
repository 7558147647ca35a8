"""e2e fixtures: the admission server running beside the control plane, registered as the chart registers it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devenv.cluster import ControlPlane
from devenv.webhook import LocalWebhook


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
