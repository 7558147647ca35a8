"""A kubernetes-asyncio client from a kubeconfig, or from the pod's service account."""

from __future__ import annotations

from pathlib import Path

from kubernetes_asyncio import client, config


async def kube_client(kubeconfig: Path | None) -> client.ApiClient:
    if kubeconfig is None:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    return await config.new_client_from_config(config_file=str(kubeconfig))
