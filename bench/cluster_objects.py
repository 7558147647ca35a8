"""Workloads as a cluster holds them: a Deployment, its ReplicaSet and its Pods, owned one by the next."""

from __future__ import annotations

import copy
import uuid

from bench.common import JsonObject

USED = "stripe"  # the Secret whose delete is checked


def _pod_spec(secret: str) -> JsonObject:
    return {
        "containers": [
            {
                "name": "app",
                "image": "registry.invalid/app:1",
                "env": [
                    {"name": "MODE", "value": "production"},
                    {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "API_KEY"}}},
                ],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
            }
        ],
        "volumes": [{"name": "config", "configMap": {"name": "app-config"}}],
    }


def _owner(kind: str, owner: JsonObject) -> list[JsonObject]:
    metadata = owner["metadata"]
    return [
        {
            "apiVersion": "apps/v1",
            "kind": kind,
            "name": metadata["name"],
            "uid": metadata["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def deployment(name: str, namespace: str, secret: str) -> JsonObject:
    """A Deployment whose pods read API_KEY from ``secret``."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": _pod_spec(secret)},
        },
    }


def replica_set(owner: JsonObject) -> JsonObject:
    name = owner["metadata"]["name"]
    template = copy.deepcopy(owner["spec"]["template"])
    template["metadata"]["labels"]["pod-template-hash"] = "5d8f7c9b6"
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{name}-5d8f7c9b6",
            "namespace": owner["metadata"]["namespace"],
            "uid": str(uuid.uuid4()),
            "ownerReferences": _owner("Deployment", owner),
        },
        "spec": {"replicas": 1, "selector": {"matchLabels": template["metadata"]["labels"]}, "template": template},
    }


def pod(owner: JsonObject, suffix: str) -> JsonObject:
    template = owner["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{owner['metadata']['name']}-{suffix}",
            "namespace": owner["metadata"]["namespace"],
            "uid": str(uuid.uuid4()),
            "labels": dict(template["metadata"]["labels"]),
            "ownerReferences": _owner("ReplicaSet", owner),
        },
        "spec": copy.deepcopy(template["spec"]),
    }


def workloads(count: int, users: int, namespace: str, *, pods: int = 2) -> dict[str, list[JsonObject]]:
    """``count`` Deployments with a ReplicaSet and ``pods`` Pods each; the first ``users`` use USED, the others a
    Secret of their own. Kind → objects."""
    found: dict[str, list[JsonObject]] = {"Deployment": [], "ReplicaSet": [], "Pod": []}
    for i in range(count):
        owner = deployment(f"svc-{i:05d}", namespace, USED if i < users else f"svc-{i:05d}-secrets")
        owned = replica_set(owner)
        found["Deployment"].append(owner)
        found["ReplicaSet"].append(owned)
        found["Pod"] += [pod(owned, f"{j:05x}") for j in range(pods)]
    return found
