"""Kubernetes Events: how the controller tells users what it did. Best effort — a failed Event is logged, never
raised, since what it reports has already happened. Messages name objects and keys, never values."""

from __future__ import annotations

import datetime
import logging

from kubernetes_asyncio import client

from kubeio.rest import ApiException, json_request

log = logging.getLogger(__name__)

COMPONENT = "smll-secrets-controller"


async def record_event(
    api: client.ApiClient,
    *,
    api_version: str,
    kind: str,
    name: str,
    namespace: str,
    uid: str,
    reason: str,
    message: str,
    warning: bool = False,
) -> None:
    """An Event about the object. One about a cluster-scoped object (a Namespace) has no involvedObject namespace,
    and the apiserver then takes it only in ``default``: ``kubectl get events -n default`` shows it."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    involved = {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid}
    if kind == "Namespace":
        namespace = "default"
    else:
        involved["namespace"] = namespace
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}.", "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": "smll.io/secrets-controller",
        "reportingInstance": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await json_request(api, "POST", f"/api/v1/namespaces/{namespace}/events", body=body)
    except ApiException as error:
        log.warning("could not record the %s Event on %s %s/%s: %s", reason, kind, namespace, name, error.status)
