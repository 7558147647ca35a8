"""The controller at scale, on the real local control plane.

1. Time from a Secret update to all dependents patched, for 1, 100 and 1,000 dependents (settling window 0).
   Beside it, the apiserver's own PATCH rate on this machine: the ceiling no controller can beat.
2. Controller RSS with 10,000 Secrets and 5,000 Deployments, and cold start to synced at that size, twice: the
   first start records every service (no rollout), the second finds nothing to do (zero rollouts). At each start,
   a Secret changed the moment the controller reports ready ("rollouts: caches synced" in its log, polled every
   50 ms) → the one service reading it rolled: a real change must not wait behind the start's work.

``python -m bench.controller_scale [--dependents 1,100,1000] [--secrets 10000 --deployments 5000]``
The kube-controller-manager is stopped while measuring, so nothing but the controller and the bench writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from bench.apiserver import stopped_controller_manager
from bench.common import load_average, machine, table
from devenv.cluster import ControlPlane, running_control_plane, wait_for
from devenv.controller import LocalController
from kubeio.client import kube_client
from kubeio.rest import MERGE_PATCH, json_request, stream_json_lines
from rules.names import AUTO_ROLLOUT, RESTARTED_AT, ROLLOUT_STATE
from rules.secretdata import encode

NAMESPACE = "scale"


def deployment(
    name: str, secret: str, *, namespace: str = NAMESPACE, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Deployment of 0 replicas reading the key TOKEN of ``secret`` (opted in to rollouts unless told otherwise)."""
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "TOKEN"}}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {AUTO_ROLLOUT: "true"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1", "env": env}]},
            },
        },
    }


def secret_body(name: str, value: str, *, namespace: str = NAMESPACE) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "data": {"TOKEN": encode(value), "OTHER": "eA=="}}


async def create_many(api: client.ApiClient, path: str, bodies: list[dict[str, Any]], concurrency: int = 16) -> float:
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await json_request(api, "POST", path, body=body)

    await asyncio.gather(*(one(body) for body in bodies))
    return time.perf_counter() - started


async def list_deployments(api: client.ApiClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        query: dict[str, str | int | bool] = {"limit": 500, **({"continue": token} if token else {})}
        page = await json_request(api, "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", query=query)
        items += page.get("items") or []
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return items


def annotated(items: list[dict[str, Any]], where: str, key: str, *, besides: str = "") -> int:
    count = 0
    for item in items:
        if item["metadata"]["name"] == besides:
            continue
        node = item["metadata"] if where == "metadata" else item["spec"]["template"]["metadata"]
        count += key in (node.get("annotations") or {})
    return count


async def wait_count(api: client.ApiClient, where: str, key: str, count: int, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if annotated(await list_deployments(api), where, key) >= count:
            return time.perf_counter() - started
        await asyncio.sleep(1)  # a list of thousands of Deployments is heavy: do not compete with the controller
    raise TimeoutError(f"{count} deployments with {key} not seen within {timeout:.0f}s")


async def wait_all_recorded(api: client.ApiClient, timeout: float) -> None:
    """Until every Deployment of the namespace carries its recorded state: one paged list, then a watch (a list of
    thousands of Deployments a second would load the apiserver the controller is writing to)."""
    missing: set[str] = set()
    token, version = "", ""
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    while True:
        query: dict[str, str | int | bool] = {"limit": 500, **({"continue": token} if token else {})}
        page = await json_request(api, "GET", path, query=query)
        missing |= {i["metadata"]["name"] for i in page["items"] if ROLLOUT_STATE not in _meta_annotations(i)}
        version = version or page["metadata"]["resourceVersion"]
        token = page["metadata"].get("continue") or ""
        if not token:
            break

    async def watch() -> None:
        query: dict[str, str | int | bool] = {"watch": "true", "resourceVersion": version}
        async for event in stream_json_lines(api, path, query=query, timeout=timeout + 60):
            item = event.get("object") or {}
            if event.get("type") == "MODIFIED" and ROLLOUT_STATE in _meta_annotations(item):
                missing.discard(item["metadata"]["name"])
            if not missing:
                return

    if missing:
        await asyncio.wait_for(watch(), timeout=timeout)


def _meta_annotations(item: dict[str, Any]) -> dict[str, str]:
    return dict((item.get("metadata") or {}).get("annotations") or {})


async def patch_rate(api: client.ApiClient, names: list[str], concurrency: int = 16) -> float:
    """Merge-patches per second the apiserver takes on these Deployments (an annotation each)."""
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(name: str) -> None:
        async with gate:
            await json_request(
                api,
                "PATCH",
                f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}",
                body={"metadata": {"annotations": {"bench/touched": str(time.time())}}},
                content_type=MERGE_PATCH,
            )

    await asyncio.gather(*(one(name) for name in names))
    return len(names) / (time.perf_counter() - started)


def rss_mib(controller: LocalController) -> float:
    assert controller.component is not None
    assert controller.component.process is not None
    status = Path(f"/proc/{controller.component.process.pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def start_controller(plane: ControlPlane, workdir: Path, name: str) -> tuple[LocalController, float]:
    """A controller started and synced; its cold start counted from its process's exec (the harness's own
    ``kubectl create namespace`` before it is not the controller's time)."""
    controller = LocalController(plane, workdir / name, identity=name, settle_seconds=0, lease_name=f"bench-{name}")
    controller.start()
    wait_for(
        lambda: "rollouts: caches synced" in controller.log(),
        timeout=300,
        what="the controller's caches",
        interval=0.05,
    )
    return controller, time.clock_gettime(time.CLOCK_BOOTTIME) - exec_time(controller)


def exec_time(controller: LocalController) -> float:
    """When the controller's process started, in seconds since boot (CLOCK_BOOTTIME), to the clock tick."""
    assert controller.component is not None
    assert controller.component.process is not None
    stat = Path(f"/proc/{controller.component.process.pid}/stat").read_text()
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime; the name in parentheses may hold spaces
    return ticks / os.sysconf("SC_CLK_TCK")


PROBE = "probe"  # a Deployment reading the Secret of the same name, its state recorded before the big start


async def changed_at_ready(
    plane: ControlPlane, api: client.ApiClient, workdir: Path, name: str, value: str
) -> tuple[LocalController, float, float]:
    """Start a controller; the moment it reports ready, change the probe's Secret. (The controller, its cold start,
    the seconds from the change to the probe rolled.)"""
    found = await json_request(api, "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{PROBE}")
    watch = asyncio.create_task(wait_restamped(api, {PROBE: _stamp(found)}, 1, found["metadata"]["resourceVersion"]))
    await asyncio.sleep(0.2)  # the watch is open
    controller, synced = start_controller(plane, workdir, name)
    started = time.perf_counter()
    await json_request(
        api,
        "PATCH",
        f"/api/v1/namespaces/{NAMESPACE}/secrets/{PROBE}",
        body={"stringData": {"TOKEN": value}},
        content_type=MERGE_PATCH,
    )
    await asyncio.wait_for(watch, timeout=300)
    return controller, synced, time.perf_counter() - started


async def latency(plane: ControlPlane, api: client.ApiClient, workdir: Path, counts: list[int]) -> list[list[object]]:
    rows: list[list[object]] = []
    await create_many(api, f"/api/v1/namespaces/{NAMESPACE}/secrets", [secret_body("shared", "v0")])
    made = 0
    for count in counts:
        await create_many(
            api,
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
            [deployment(f"dep-{i}", "shared") for i in range(made, count)],
        )
        made = max(made, count)
        controller, _ = start_controller(plane, workdir, f"latency-{count}")
        try:
            await wait_count(api, "metadata", ROLLOUT_STATE, count, timeout=300)
            listing = await json_request(api, "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")
            before = {i["metadata"]["name"]: _stamp(i) for i in listing["items"]}
            watch = asyncio.create_task(wait_restamped(api, before, count, listing["metadata"]["resourceVersion"]))
            await asyncio.sleep(0.2)  # the watch is open
            started = time.perf_counter()
            await json_request(
                api,
                "PATCH",
                f"/api/v1/namespaces/{NAMESPACE}/secrets/shared",
                body={"stringData": {"TOKEN": f"v-{count}"}},
                content_type=MERGE_PATCH,
            )
            await asyncio.wait_for(watch, timeout=300)
            took = time.perf_counter() - started
        finally:
            controller.stop()
        rows.append([count, f"{took:.2f} s", {1: "≤ 1 s", 100: "≤ 2 s", 1000: "≤ 10 s"}.get(count, "")])
    return rows


async def wait_restamped(api: client.ApiClient, before: dict[str, str | None], count: int, version: str) -> None:
    """Watch (not poll, which would load the apiserver it measures) until ``count`` Deployments have a new stamp."""
    done: set[str] = set()
    query: dict[str, str | int | bool] = {"watch": "true", "resourceVersion": version}
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    async for event in stream_json_lines(api, path, query=query, timeout=600):
        item = event.get("object") or {}
        name = (item.get("metadata") or {}).get("name")
        if event.get("type") == "MODIFIED" and name and _stamp(item) != before.get(name):
            done.add(name)
            if len(done) >= count:
                return


def _annotations(plane: ControlPlane, name: str) -> dict[str, str]:
    found = json.loads(plane.kubectl("get", f"deployment/{name}", "-n", NAMESPACE, "-o", "json").stdout)
    return dict(found["metadata"].get("annotations") or {})


def _stamp(item: dict[str, Any]) -> str | None:
    stamp = (item["spec"]["template"]["metadata"].get("annotations") or {}).get(RESTARTED_AT)
    return str(stamp) if stamp else None


async def scale(
    plane: ControlPlane, api: client.ApiClient, workdir: Path, secrets: int, deployments: int
) -> list[list[object]]:
    await create_many(api, f"/api/v1/namespaces/{NAMESPACE}/secrets", [secret_body(PROBE, "p0")])
    await create_many(api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", [deployment(PROBE, PROBE)])
    recorder, _ = start_controller(plane, workdir, "probe")
    wait_for(lambda: ROLLOUT_STATE in _annotations(plane, PROBE), timeout=120, what="the probe's state recorded")
    recorder.stop()
    took = await create_many(
        api, f"/api/v1/namespaces/{NAMESPACE}/secrets", [secret_body(f"s-{i}", f"value-{i}") for i in range(secrets)]
    )
    print(f"  created {secrets:,} Secrets in {took:.0f}s")
    took = await create_many(
        api,
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
        [deployment(f"big-{i}", f"s-{i}") for i in range(deployments)],
    )
    print(f"  created {deployments:,} Deployments in {took:.0f}s")
    rows: list[list[object]] = []
    began = time.perf_counter()
    first, synced, rolled = await changed_at_ready(plane, api, workdir, "cold-1", "p1")
    rollouts_before = annotated(await list_deployments(api), "template", RESTARTED_AT, besides=PROBE)
    await wait_all_recorded(api, timeout=600)
    recorded = time.perf_counter() - began
    rows.append(["first start: caches synced", f"{synced:.1f} s", "≤ 10 s"])
    rows.append(["first start: a Secret changed at ready → its service rolled", f"{rolled:.2f} s", "≤ 1 s"])
    rows.append(["first start: every service's state recorded (no rollout)", f"{recorded:.1f} s", ""])
    rows.append(["RSS after the first start", f"{rss_mib(first):.0f} MiB", "≤ 150 MB"])
    rollouts_after = annotated(await list_deployments(api), "template", RESTARTED_AT, besides=PROBE)
    rows.append(["first start: rollouts besides the probe's", str(rollouts_after - rollouts_before), "0"])
    first.stop()
    rollouts_before = annotated(await list_deployments(api), "template", RESTARTED_AT, besides=PROBE)
    second, synced, rolled = await changed_at_ready(plane, api, workdir, "cold-2", "p2")
    await asyncio.sleep(10)
    rollouts_after = annotated(await list_deployments(api), "template", RESTARTED_AT, besides=PROBE)
    rows.append(["second start: caches synced", f"{synced:.1f} s", "≤ 10 s"])
    rows.append(["second start: a Secret changed at ready → its service rolled", f"{rolled:.2f} s", "≤ 1 s"])
    rows.append(["second start: rollouts besides the probe's", str(rollouts_after - rollouts_before), "0"])
    rows.append(["RSS after the second start (synced, 10 s idle)", f"{rss_mib(second):.0f} MiB", "≤ 150 MB"])
    second.stop()
    return rows


async def run(args: argparse.Namespace, workdir: Path) -> None:
    counts = [int(n) for n in args.dependents.split(",")]
    with running_control_plane() as plane, stopped_controller_manager(plane, NAMESPACE):
        plane.kubectl("create", "namespace", "smll-system")
        api = await kube_client(plane.kubeconfig)
        try:
            print("1. Secret update → all dependents patched (settling window 0)")
            rows = await latency(plane, api, workdir, counts)
            names = [f"dep-{i}" for i in range(max(counts))]
            rate = await patch_rate(api, names)
            print(table(["dependents", "update → all patched", "aim"], rows))
            print(f"the apiserver's own PATCH rate here (16 concurrent clients, {len(names)} patches): {rate:.0f}/s")
            print(f"load average: {load_average()}")
            print(f"\n2. {args.secrets:,} Secrets and {args.deployments:,} Deployments", flush=True)
            print(table(["what", "measured", "aim"], await scale(plane, api, workdir, args.secrets, args.deployments)))
            print(f"load average: {load_average()}")
        finally:
            await api.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.controller_scale")
    parser.add_argument("--dependents", default="1,100,1000")
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=5_000)
    parser.add_argument("--workdir", type=Path, help="where the controllers' logs go (default: a new temp dir)")
    args = parser.parse_args(argv)
    print(machine())
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="smll-bench-controller-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args, args.workdir))


if __name__ == "__main__":
    main()
