"""The kinds the product reads and writes: where the API serves them and where they keep their pod spec; who owns
whom; when a namespace is going. Plain dicts in, plain dicts out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rules.names import path_segment_problem

TEMPLATE = ("spec", "template")


@dataclass(frozen=True, slots=True)
class Kind:
    """Where the API serves a kind (``apiVersion`` and resource), and for kinds that run pods, the path to the
    object that holds their ``metadata`` and ``spec``: a pod template, or ``()`` for a Pod itself."""

    api_version: str
    resource: str
    template: tuple[str, ...] | None = None

    @property
    def group(self) -> str:
        return group_of(self.api_version)


# The one table of kinds: every path the product asks the API for, and every pod spec it reads, comes from here.
KINDS: Mapping[str, Kind] = {
    "Deployment": Kind("apps/v1", "deployments", TEMPLATE),
    "StatefulSet": Kind("apps/v1", "statefulsets", TEMPLATE),
    "DaemonSet": Kind("apps/v1", "daemonsets", TEMPLATE),
    "ReplicaSet": Kind("apps/v1", "replicasets", TEMPLATE),
    "Job": Kind("batch/v1", "jobs", TEMPLATE),
    "CronJob": Kind("batch/v1", "cronjobs", ("spec", "jobTemplate", "spec", "template")),
    "Pod": Kind("v1", "pods", ()),
    "Secret": Kind("v1", "secrets"),
    "ServiceAccount": Kind("v1", "serviceaccounts"),
    "Namespace": Kind("v1", "namespaces"),
    "Database": Kind("smll.io/v1alpha1", "databases"),
    "MutatingWebhookConfiguration": Kind("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations"),
    "ValidatingWebhookConfiguration": Kind("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations"),
    "APIService": Kind("apiregistration.k8s.io/v1", "apiservices"),
}
# Kinds that run pods: they are linked, and they are the referrers protection counts.
POD_KINDS = frozenset(kind for kind, found in KINDS.items() if found.template is not None)
# Kinds the controller rolls out when a Secret they use changes.
ROLLED_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})

JsonObject = dict[str, Any]


def group_of(api_version: str) -> str:
    """The API group of an apiVersion ("" for the core group's ``v1``)."""
    return api_version.rpartition("/")[0]


def api_version(kind: str) -> str:
    return KINDS[kind].api_version


def resource_path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    """The API path of a kind across namespaces, within one namespace, or of one object (a Namespace is named
    without ``namespace``). A namespace or name that is not one path segment (``../x``, ``a/b``, ``..``) raises
    ValueError: no caller can ever reach another path through a name."""
    found = KINDS[kind]
    for part, segment in (("namespace", namespace), ("name", name)):
        problem = None if segment is None else path_segment_problem(segment)
        if problem is not None:
            raise ValueError(f"no API path for a {kind} whose {part} {segment!r} {problem}")
    path = ("/api/" if "/" not in found.api_version else "/apis/") + found.api_version
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{found.resource}"
    return path if name is None else f"{path}/{name}"


def compact_json(value: object) -> str:
    """Canonical JSON text (sorted keys, no spaces): equal values are equal texts, in an annotation or a Secret."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def json_object(text: str) -> JsonObject | None:
    """The JSON object ``text`` holds; None when it holds anything else or is not JSON."""
    try:
        found = json.loads(text)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def dict_or_empty(value: object) -> JsonObject:
    """``value`` when it is a JSON object, else an empty one: reading a malformed object never raises."""
    return value if isinstance(value, dict) else {}


def dicts_in(value: object) -> list[JsonObject]:
    """The JSON objects of ``value`` when it is a list (anything else in it is skipped), else none."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _child(parent: Mapping[str, Any], key: str) -> JsonObject | None:
    value = parent.get(key)
    return value if isinstance(value, dict) else None


def pod_template(obj: JsonObject, kind: str | None = None) -> JsonObject | None:
    """The object that holds ``metadata`` and ``spec`` of the pods: the template, or the Pod itself.

    ``kind`` defaults to the object's own. None when the kind has no pod spec or the object is too malformed.
    """
    kind = kind if kind is not None else obj.get("kind")
    found = KINDS.get(kind) if isinstance(kind, str) else None
    path = found.template if found is not None else None
    if path is None:
        return None
    node: JsonObject | None = obj
    for key in path:
        node = _child(node, key) if node is not None else None
    return node


def _strings(obj: Mapping[str, Any] | None, field: str) -> dict[str, str]:
    metadata = _child(obj, "metadata") if obj is not None else None
    found = metadata.get(field) if metadata is not None else None
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}


def annotations_of(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return _strings(obj, "annotations")


def labels_of(obj: Mapping[str, Any] | None) -> dict[str, str]:
    return _strings(obj, "labels")


def controller_reference(obj: JsonObject) -> JsonObject | None:
    """The ownerReference of the object's managing controller, if it has one (the API allows one at most)."""
    metadata = _child(obj, "metadata") or {}
    return next((r for r in dicts_in(metadata.get("ownerReferences")) if r.get("controller") is True), None)


def controller_owner(obj: JsonObject) -> tuple[str, str, str] | None:
    """(API group, kind, name) of the object's managing controller, if it has one."""
    reference = controller_reference(obj)
    if reference is None:
        return None
    return (
        group_of(str(reference.get("apiVersion", ""))),
        str(reference.get("kind", "")),
        str(reference.get("name", "")),
    )


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


def is_terminating(namespace: Mapping[str, Any]) -> bool:
    """A Namespace being deleted: nothing in it is protected, nothing new is written to it."""
    metadata = namespace.get("metadata") or {}
    return bool(metadata.get("deletionTimestamp")) or (namespace.get("status") or {}).get("phase") == "Terminating"
