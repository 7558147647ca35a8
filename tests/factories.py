"""Factories for the objects and reviews tests build: Deployments, Pods, CronJobs, Secrets, AdmissionReviews."""

from __future__ import annotations

import copy
import uuid
from typing import Any

JsonObject = dict[str, Any]

GROUPS = {
    "Pod": ("", "v1"),
    "Secret": ("", "v1"),
    "Deployment": ("apps", "v1"),
    "StatefulSet": ("apps", "v1"),
    "DaemonSet": ("apps", "v1"),
    "ReplicaSet": ("apps", "v1"),
    "Job": ("batch", "v1"),
    "CronJob": ("batch", "v1"),
}


def container(name: str = "web", *, env: list[JsonObject] | None = None, **extra: Any) -> JsonObject:
    found: JsonObject = {"name": name, "image": f"registry.invalid/{name}:1", **extra}
    if env is not None:
        found["env"] = env
    return found


def pod_spec(*containers: JsonObject, init: list[JsonObject] | None = None, **extra: Any) -> JsonObject:
    spec: JsonObject = {"containers": list(containers) or [container()], **extra}
    if init is not None:
        spec["initContainers"] = init
    return spec


def workload(
    kind: str = "Deployment",
    name: str = "web",
    *,
    namespace: str = "shop",
    annotations: dict[str, str] | None = None,
    template_annotations: dict[str, str] | None = None,
    spec: JsonObject | None = None,
) -> JsonObject:
    group, version = GROUPS[kind]
    metadata: JsonObject = {"name": name, "namespace": namespace}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    template: JsonObject = {"metadata": {"labels": {"app": name}}, "spec": copy.deepcopy(spec or pod_spec())}
    if template_annotations is not None:
        template["metadata"]["annotations"] = dict(template_annotations)
    obj: JsonObject = {"apiVersion": f"{group}/{version}".lstrip("/"), "kind": kind, "metadata": metadata}
    if kind == "Pod":
        obj["spec"] = template["spec"]
    elif kind == "CronJob":
        obj["spec"] = {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        obj["spec"] = {"selector": {"matchLabels": {"app": name}}, "template": template}
    return obj


def secret(name: str, namespace: str = "shop", **data: str) -> JsonObject:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "data": data}


def admission_review(
    obj: JsonObject | None, *, operation: str = "CREATE", old: JsonObject | None = None, kind: str | None = None
) -> JsonObject:
    subject = obj or old or {}
    kind = kind or subject.get("kind", "Deployment")
    group, version = GROUPS[kind]
    metadata = subject.get("metadata", {})
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
            "namespace": metadata.get("namespace", "shop"),
            "name": metadata.get("name", ""),
            "operation": operation,
            "object": obj,
            "oldObject": old,
            "userInfo": {"username": "tester"},
        },
    }
