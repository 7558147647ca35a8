"""A kubernetes-asyncio client from a kubeconfig, or from the pod's service account."""

from __future__ import annotations

from pathlib import Path

from kubernetes_asyncio import client

# Every informer's watch holds a connection for minutes; the library's default pool (5 per CPU) would leave the
# workers queueing for a connection behind them.
CONNECTIONS = 64


async def kube_client(kubeconfig: Path | None, *, connections: int = CONNECTIONS) -> client.ApiClient:
    configuration = client.Configuration()
    # Each loader imported only where it is used: a pod never needs the kubeconfig loader (YAML, exec, OIDC).
    if kubeconfig is None:
        from kubernetes_asyncio.config.incluster_config import load_incluster_config

        load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        from kubernetes_asyncio.config.kube_config import load_kube_config

        await load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)
