"""Helpers for the benchmarks that use the real local control plane: quiet it, and fill a namespace fast."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes_asyncio import client

from bench.common import JsonObject
from devenv.cluster import ControlPlane, wait_for
from kubeio.rest import json_request
from rules.workloads import resource_path


@contextmanager
def stopped_controller_manager(plane: ControlPlane, namespace: str) -> Iterator[None]:
    """Create ``namespace`` (and wait for its default ServiceAccount, which Pods need), then stop the
    kube-controller-manager, so that nothing else writes while the benchmark measures: no ReplicaSets or Pods
    made behind its back, no garbage collection. It stays stopped; the plane's own stop is a no-op for it."""
    plane.kubectl("create", "namespace", namespace)
    wait_for(
        lambda: plane.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False).returncode == 0,
        timeout=60,
        what=f"the default ServiceAccount of {namespace}",
    )
    plane.components["kube-controller-manager"].stop()
    yield


def apply_objects(plane: ControlPlane, objects: list[JsonObject]) -> None:
    for obj in objects:
        plane.kubectl("apply", "-f", "-", input=json.dumps(obj))


async def create_all(
    api: client.ApiClient, objects: dict[str, list[JsonObject]], *, concurrency: int = 16
) -> tuple[int, float]:
    """Create objects kind by kind (owners before what they own), rewriting owner uids to the ones the apiserver
    gave. Returns how many were created and the seconds it took."""
    uids: dict[str, str] = {}
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()
    created = 0

    async def create(kind: str, obj: JsonObject) -> None:
        nonlocal created
        body = copy.deepcopy(obj)
        local = body["metadata"].pop("uid", None)
        for reference in body["metadata"].get("ownerReferences", []):
            reference["uid"] = uids[reference["uid"]]
        path = resource_path(kind, body["metadata"]["namespace"])
        async with gate:
            answer = await json_request(api, "POST", path, body=body)
        if local:
            uids[local] = answer["metadata"]["uid"]
        created += 1

    for kind in ("Deployment", "ReplicaSet", "Pod"):
        await asyncio.gather(*(create(kind, obj) for obj in objects.get(kind, [])))
    return created, time.perf_counter() - started
