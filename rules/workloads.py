"""Where each kind keeps its pod spec, and who owns whom. Plain dicts in, plain dicts out."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import orjson

# Kinds with a pod template, and the path to it.
TEMPLATE_PATHS: Mapping[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
LINKABLE_KINDS = frozenset({*TEMPLATE_PATHS, "Pod"})
# Kinds the controller rolls out when a Secret they use changes.
ROLLED_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})

# kind → (apiVersion, resource): where the API serves each kind the product reads or writes.
RESOURCES: Mapping[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "DaemonSet": ("apps/v1", "daemonsets"),
    "ReplicaSet": ("apps/v1", "replicasets"),
    "Job": ("batch/v1", "jobs"),
    "CronJob": ("batch/v1", "cronjobs"),
    "Pod": ("v1", "pods"),
    "Secret": ("v1", "secrets"),
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Namespace": ("v1", "namespaces"),
    "Database": ("smll.io/v1alpha1", "databases"),
}

JsonObject = dict[str, Any]


def copy_json(value: JsonObject) -> JsonObject:
    """A deep copy of a JSON tree. An orjson round trip is exact for JSON and about seven times faster than
    ``copy.deepcopy`` (which was half the time of an admission review); values JSON cannot hold fall back to it."""
    try:
        copied: JsonObject = orjson.loads(orjson.dumps(value))
    except TypeError:
        return copy.deepcopy(value)
    return copied


def api_version(kind: str) -> str:
    return RESOURCES[kind][0]


def resource_path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    """The API path of a kind across namespaces, within one namespace, or of one object (a Namespace is named
    without ``namespace``)."""
    version, resource = RESOURCES[kind]
    path = ("/api/" if "/" not in version else "/apis/") + version
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{resource}"
    return path if name is None else f"{path}/{name}"


def _child(parent: JsonObject, key: str) -> JsonObject | None:
    value = parent.get(key)
    return value if isinstance(value, dict) else None


def pod_template(obj: JsonObject, kind: str | None = None) -> JsonObject | None:
    """The object that holds ``metadata`` and ``spec`` of the pods: the template, or the Pod itself.

    ``kind`` defaults to the object's own. None when the kind has no pod spec or the object is too malformed.
    """
    kind = kind if kind is not None else obj.get("kind")
    if kind == "Pod":
        return obj
    path = TEMPLATE_PATHS.get(kind) if isinstance(kind, str) else None
    if path is None:
        return None
    node: JsonObject | None = obj
    for key in path:
        node = _child(node, key) if node is not None else None
    return node


def pod_spec(obj: JsonObject, kind: str | None = None) -> JsonObject | None:
    template = pod_template(obj, kind)
    return _child(template, "spec") if template is not None else None


def annotations_of(obj: JsonObject | None) -> dict[str, str]:
    metadata = _child(obj, "metadata") if obj is not None else None
    found = metadata.get("annotations") if metadata is not None else None
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}


def controller_owner(obj: JsonObject) -> tuple[str, str, str] | None:
    """(API group, kind, name) of the object's managing controller, if it has one."""
    metadata = _child(obj, "metadata") or {}
    references = metadata.get("ownerReferences")
    if not isinstance(references, list):
        return None
    for reference in references:
        if isinstance(reference, dict) and reference.get("controller") is True:
            group = str(reference.get("apiVersion", "")).rpartition("/")[0]
            return group, str(reference.get("kind", "")), str(reference.get("name", ""))
    return None


def rollout_complete(obj: JsonObject, kind: str) -> bool:
    """Whether every pod of a service runs its current template (and is available): no old pod is left."""
    metadata = _child(obj, "metadata") or {}
    status = _child(obj, "status") or {}
    spec = _child(obj, "spec") or {}
    if int(status.get("observedGeneration") or 0) < int(metadata.get("generation") or 0):
        return False
    if kind == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        return (
            int(status.get("updatedNumberScheduled") or 0) >= desired
            and int(status.get("numberAvailable") or 0) >= desired
        )
    wanted = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if kind == "StatefulSet" and status.get("currentRevision") != status.get("updateRevision"):
        return False
    return replicas == updated == wanted and available >= wanted
