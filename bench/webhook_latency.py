"""The latency the mutating webhook adds to creating a linked Deployment through the real apiserver.

    .venv/bin/python -m bench.webhook_latency [-n 300]

A local control plane (devenv.cluster.running_control_plane); the Deployment of bench/common.py (3 containers,
10 link annotations, about 7 KB); created one at a time through a kubernetes-asyncio ApiClient (admin client
certificate, keep-alive), so that no process start-up hides the signal. Three phases of N creates each: without the
webhook, with ``python -m webhook`` registered (devenv.webhook.LocalWebhook, the chart's definitions, TLS on
loopback), and without it again, to see drift. The kube-controller-manager is stopped after set-up so that no
ReplicaSets or Pods are made in the background while timing. A fourth phase creates, without the webhook, the
Deployment as the webhook would have returned it (30 more env entries), which separates the webhook call from the
cost of storing a bigger object. Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from bench.apiserver import apply_objects, stopped_controller_manager
from bench.common import NAMESPACE, linked_deployment, load_average, machine, secret_objects, summary_ms, table
from devenv.cluster import running_control_plane
from devenv.webhook import LocalWebhook
from kubeio.client import kube_client
from kubeio.rest import json_request
from rules.links import link_object
from webhook.secret_keys import SecretKeyIndex

PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
WARMUP = 20


def linked_vars(obj: dict[str, Any]) -> int:
    containers = obj["spec"]["template"]["spec"]["containers"]
    return sum(1 for c in containers for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {}))


def already_linked(name: str) -> dict[str, Any]:
    """The Deployment as the webhook would have stored it: the same size in etcd, without the webhook call."""
    keys = SecretKeyIndex()
    keys.replace(secret_objects())
    return link_object(linked_deployment(name), kind="Deployment", namespace=NAMESPACE, secret_keys=keys).obj


async def create_many(
    api: client.ApiClient, prefix: str, count: int, make: Callable[[str], dict[str, Any]] = linked_deployment
) -> tuple[list[float], int]:
    """Create ``count`` Deployments one after another; the seconds each create took, and how many env entries the
    last stored one has linked (30 when the webhook ran or the body was linked already, 0 otherwise)."""
    durations: list[float] = []
    linked = 0
    for i in range(WARMUP + count):
        body = make(f"{prefix}-{i:04d}")
        started = time.perf_counter()
        stored = await json_request(api, "POST", PATH, body=body)
        elapsed = time.perf_counter() - started
        if i >= WARMUP:
            durations.append(elapsed)
        linked = linked_vars(stored)
    return durations, linked


async def wait_unmutated(api: client.ApiClient, timeout: float = 30) -> None:
    """After unregistering, the apiserver stops calling the webhook a moment later: probe with dry-run creates."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = await json_request(api, "POST", PATH, query={"dryRun": "All"}, body=linked_deployment("probe"))
        if linked_vars(probe) == 0:
            return
        await asyncio.sleep(0.3)
    raise RuntimeError("the apiserver still calls the webhook")


async def measure(count: int) -> None:
    print(f"machine: {machine()}; load average {load_average()}")
    with (
        running_control_plane() as plane,
        tempfile.TemporaryDirectory(prefix="smll-bench-") as tmp,
        stopped_controller_manager(plane, NAMESPACE),
    ):
        apply_objects(plane, secret_objects())
        api = await kube_client(plane.kubeconfig)
        webhook = LocalWebhook(plane, Path(tmp) / "webhook")
        phases: list[tuple[str, list[float], int]] = []
        try:
            phases.append(("without webhook (before)", *await create_many(api, "before", count)))
            webhook.start()
            webhook.register()
            phases.append(("with webhook", *await create_many(api, "hooked", count)))
            webhook.unregister()
            await wait_unmutated(api)
            phases.append(("without webhook (after)", *await create_many(api, "after", count)))
            phases.append(
                ("without webhook, body linked already", *await create_many(api, "pre", count, already_linked))
            )
        finally:
            webhook.unregister()
            webhook.stop()
            await api.close()
    stats = {name: summary_ms(durations) for name, durations, _ in phases}
    rows: list[list[object]] = [
        [name, len(durations), linked, *(stats[name][k] for k in ("p50", "p90", "p99", "max"))]
        for name, durations, linked in phases
    ]
    base = [stats[name] for name in ("without webhook (before)", "without webhook (after)")]
    hooked = stats["with webhook"]
    keys = ("p50", "p90", "p99", "max")
    rows.append(
        ["with - mean of the two without", "", "", *(hooked[k] - statistics.fmean(b[k] for b in base) for k in keys)]
    )
    same_size = stats["without webhook, body linked already"]
    rows.append(["with - linked already (same stored size)", "", "", *(hooked[k] - same_size[k] for k in keys)])
    print(f"\n{count} creates of a linked Deployment per phase, one at a time, after {WARMUP} unmeasured")
    print(table(["phase", "creates", "linked env (last)", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows))
    print(f"load average at the end: {load_average()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_latency")
    parser.add_argument("-n", "--count", type=int, default=300, help="creates per phase (at most 2,000)")
    args = parser.parse_args(argv)
    asyncio.run(measure(min(args.count, 2_000)))


if __name__ == "__main__":
    main()
