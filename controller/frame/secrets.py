"""The one way the controller builds a whole Secret it writes (values and labels from ``rules.secretdata``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rules.secretdata import encode
from rules.workloads import api_version

JsonObject = dict[str, Any]


def secret_body(
    namespace: str,
    name: str,
    data: Mapping[str, str | bytes],
    *,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    secret_type: str = "Opaque",
    owner: JsonObject | None = None,
) -> JsonObject:
    """A Secret with ``data`` given as plain values; ``owner`` is its controller's ownerReference."""
    metadata: JsonObject = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": secret_type,
        "metadata": metadata,
        "data": {key: encode(value) for key, value in data.items()},
    }


def owner_reference(kind: str, owner: JsonObject) -> JsonObject:
    """The ownerReference that makes ``owner`` (of ``kind``) the controller of an object: garbage collection deletes
    the object with it."""
    metadata = owner["metadata"]
    return {
        "apiVersion": api_version(kind),
        "kind": kind,
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def delete_exactly(obj: JsonObject) -> JsonObject:
    """DeleteOptions that delete exactly the object looked at: the same uid, unchanged since (else a 409)."""
    metadata = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"uid": metadata["uid"], "resourceVersion": metadata["resourceVersion"]},
    }
