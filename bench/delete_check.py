"""Delete-check latency of the validating webhook's decision, and how it grows.

    .venv/bin/python -m bench.delete_check [--runs 5000] [--skip-apiserver]

1. The deny path, answered from memory: a ReferrerIndex filled (through ``index.handler(kind).replace(...)``, as the
   informers fill it) with Deployments, their ReplicaSets and two Pods each; ``webhook.validate.validate`` timed for
   a DELETE of a Secret that some of them use. 5,000 workloads first, then 500 / 5,000 / 50,000 workloads by 1 / 10 /
   1,000 referrers of the deleted Secret.
2. The allow path: a DELETE of a Secret nothing uses, which the index confirms with a consistent read
   (``webhook.server.consistent_referrers``) of the namespace against a real apiserver holding 5,000 Deployments
   with their ReplicaSets and Pods (devenv.cluster.running_control_plane; fewer runs).

Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from bench.cluster_objects import USED, workloads
from bench.common import load_average, machine, summary_ms, table
from kubeio import loop
from webhook.admission import AdmissionRequest, AdmissionResponse
from webhook.referrers import ReferrerIndex
from webhook.validate import ProtectionView, validate

NAMESPACE = "shop"


def delete_request(secret: str, namespace: str = NAMESPACE) -> AdmissionRequest:
    return {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Secret"},
        "operation": "DELETE",
        "namespace": namespace,
        "name": secret,
        "object": None,
        "oldObject": {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": namespace},
            "data": {"API_KEY": "eA=="},
        },
    }


def filled_index(count: int, users: int) -> tuple[ReferrerIndex, float]:
    """The index as the informers leave it after their first list; and the seconds the fill took."""
    objects = workloads(count, users, NAMESPACE)
    index = ReferrerIndex()
    started = time.perf_counter()
    for kind, found in objects.items():
        index.handler(kind).replace(found)
    return index, time.perf_counter() - started


async def time_calls(call: Callable[[], Awaitable[AdmissionResponse]], runs: int) -> tuple[list[float], Any]:
    """Wall time of each of ``runs`` awaits of ``call`` after a short warm-up; and the last answer."""
    answer = None
    for _ in range(min(runs, 50)):
        answer = await call()
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = await call()
        durations.append(time.perf_counter() - started)
    return durations, answer


def deny_path(runs: int) -> None:
    print("1. deny path, from memory: validate() for DELETE of a Secret in use, one namespace")
    rows: list[list[object]] = []
    headline = None
    for count in (500, 5_000, 50_000):
        for users in (1, 10, 1_000):
            if users > count:
                rows.append([count, users, "-", "-", "-", "-", "-", "-", "(more referrers than workloads)"])
                continue
            index, fill = filled_index(count, users)
            view = ProtectionView(referrers=index)
            request = delete_request(USED)
            n = runs if users < 1_000 else max(200, runs // 10)
            cpu = time.process_time()
            durations, answer = asyncio.run(time_calls(partial(validate, request, view), n))
            cpu_ms = (time.process_time() - cpu) / (n + min(n, 50)) * 1000
            assert answer is not None, "no answer"
            assert not answer["allowed"], answer  # the decision, not a timing
            stats = summary_ms(durations)
            rows.append(
                [count, users, len(index), f"{fill:.1f} s", n, stats["p50"], stats["p99"], stats["max"], cpu_ms]
            )
            if count == 5_000 and users == 10:
                headline = (stats, answer["status"]["message"])
            del index, view
    print(table(
        ["workloads", "referrers", "index entries", "fill time", "runs", "p50 ms", "p99 ms", "max ms", "CPU ms mean"],
        rows,
    ))  # fmt: skip
    if headline:
        stats, message = headline
        print(f"headline (5,000 workloads, 10 referrers): p50 {stats['p50']:.3f} ms, p99 {stats['p99']:.3f} ms")
        print(f"the answer: {message}")


async def allow_path(count: int, runs: int) -> None:
    from bench.apiserver import create_all, stopped_controller_manager
    from devenv.cluster import running_control_plane
    from kubeio.client import kube_client
    from webhook.server import consistent_snapshot, json_pages

    print(f"\n2. allow path: consistent read of a namespace with {count:,} Deployments (+ ReplicaSets, Pods)")
    with running_control_plane() as plane:
        api = await kube_client(plane.kubeconfig)
        try:
            with stopped_controller_manager(plane, NAMESPACE):
                objects = workloads(count, 10, NAMESPACE, pods=1)
                created, seconds = await create_all(api, objects)
                print(f"    created {created:,} objects through the apiserver in {seconds:.0f} s")
                view = ProtectionView(
                    consistent_read=partial(consistent_snapshot, api), json_read=partial(json_pages, api)
                )
                request = delete_request("nobody-uses-this")
                durations, answer = await time_calls(partial(validate, request, view), runs)
                assert answer is not None, "no answer"
                assert answer["allowed"], answer
                read_only, found = await time_calls(partial(consistent_snapshot, api, NAMESPACE), runs)  # type: ignore[arg-type]
                stats, read = summary_ms(durations), summary_ms(read_only)
                print(table(
                    ["what", "runs", "answers read", "p50 ms", "p99 ms", "max ms"],
                    [
                        ["validate() allow (index empty → consistent read)", runs, len(found), stats["p50"], stats["p99"], stats["max"]],  # noqa: E501
                        ["consistent_snapshot() alone", runs, len(found), read["p50"], read["p99"], read["max"]],
                    ],
                ))  # fmt: skip
        finally:
            await api.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.delete_check")
    parser.add_argument("--runs", type=int, default=5_000, help="timed calls per in-memory case (at most 100,000)")
    parser.add_argument("--allow-workloads", type=int, default=5_000, help="Deployments for the allow path")
    parser.add_argument("--allow-runs", type=int, default=5, help="timed consistent reads (at most 200)")
    parser.add_argument("--skip-apiserver", action="store_true", help="only the in-memory deny path")
    parser.add_argument("--skip-memory", action="store_true", help="only the allow path against the apiserver")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}; load average {load_average()}\n")
    if not args.skip_memory:
        deny_path(min(args.runs, 100_000))
    if not args.skip_apiserver:
        # On the webhook's own event loop (uvloop, kubeio/loop.py): the read is the webhook's, TLS reads included.
        loop.run(allow_path(min(args.allow_workloads, 20_000), min(args.allow_runs, 200)))
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
