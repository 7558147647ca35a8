"""Events the product records are accepted by the real apiserver, including those about a cluster-scoped Namespace
(which the apiserver only takes in ``default``)."""

from __future__ import annotations

import json

import pytest
from kubernetes_asyncio import client

from devenv.cluster import ControlPlane
from kubeio.events import record_event

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("kind", ["Namespace", "ConfigMap"])
async def test_an_event_about_a_namespace_or_a_namespaced_object_is_recorded(
    cluster: ControlPlane, namespace: str, kube_api: client.ApiClient, kind: str
) -> None:
    if kind == "Namespace":
        name, uid = namespace, json.loads(cluster.kubectl("get", "namespace", namespace, "-o", "json").stdout)
    else:
        cluster.kubectl("create", "configmap", "settings", "-n", namespace)
        name, uid = (
            "settings",
            json.loads(cluster.kubectl("get", "configmap/settings", "-n", namespace, "-o", "json").stdout),
        )
    reason = f"Probe{kind}"

    await record_event(
        kube_api,
        api_version="v1",
        kind=kind,
        name=name,
        namespace=namespace,
        uid=uid["metadata"]["uid"],
        reason=reason,
        message="names only",
        warning=True,
    )

    events = json.loads(
        cluster.kubectl("get", "events", "-A", "--field-selector", f"reason={reason}", "-o", "json").stdout
    )["items"]
    assert [(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in events] == [(kind, name)]
    assert events[0]["metadata"]["namespace"] == ("default" if kind == "Namespace" else namespace)
