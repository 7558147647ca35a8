"""Where a controller's cold start goes: the phases of each start, timed inside the process from its exec.

    .venv/bin/python -m bench.start_timeline [--starts 8] [--secrets 10000 --deployments 5000]

A local control plane is filled with Secrets and Deployments that read them (the kube-controller-manager stopped,
as in ``bench.controller_scale``), the first start records every service's state, then the controller is started
``--starts`` times more. Each start is a process of its own: its phases are marked where they begin and end
(imports; the client, health server, Lease and rollout key; each informer's list) and printed when it logs
``rollouts: caches synced``, with the CPU time the process used. The bench then prints the median and range of
each mark. Nothing here asserts on a timing.

The module imports next to nothing at its top: in a start, what it imports before the first mark would be counted
as the interpreter's and missing from the imports'.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

SYNCED = "rollouts: caches synced"
SETTLE_SECONDS = 15.0
PAUSE_SECONDS = 2.0


def since_exec() -> float:
    """Seconds since this process was exec'd (its start time in /proc, to the clock tick)."""
    with open("/proc/self/stat") as stat_file:
        stat = stat_file.read()
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
    return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")


def child(argv: list[str]) -> None:
    """One controller start, marked: prints {mark: seconds since exec} as JSON when the caches are synced."""
    marks: dict[str, float] = {"interpreter": since_exec()}
    import logging

    import controller.__main__ as entry
    import controller.leader
    import controller.main
    import kubeio.informer

    marks["imports"] = since_exec()

    def timed(owner: Any, name: str, label: str) -> None:
        original: Callable[..., Awaitable[Any]] = getattr(owner, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = await original(*args, **kwargs)
            marks[label] = since_exec()
            return result

        setattr(owner, name, wrapper)

    timed(controller.main, "kube_client", "client")
    timed(controller.main, "serve_health", "health server")
    timed(controller.leader.LeaderElector, "acquire", "lease")
    timed(controller.main, "ensure_rollout_key", "rollout key")
    original_list = kubeio.informer.Informer.list

    async def listed(self: kubeio.informer.Informer) -> None:
        await original_list(self)
        marks[f"listed {self.path.rsplit('/', 1)[-1]}"] = since_exec()

    kubeio.informer.Informer.list = listed  # type: ignore[method-assign]

    class Synced(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == SYNCED:
                marks["synced"] = since_exec()
                marks["cpu"] = time.process_time()
                print(json.dumps(marks), flush=True)
                os._exit(0)

    logging.getLogger("controller.frame.loop").addHandler(Synced())
    sys.exit(entry.main(argv))


def one_start(kubeconfig: Path, number: int, port: int) -> dict[str, float]:
    import subprocess

    identity = f"timeline-{number}-{time.time_ns()}"
    args = [sys.executable, "-m", "bench.start_timeline", "--child", "--kubeconfig", str(kubeconfig)]
    args += ["--identity", identity, "--lease-name", f"bench-{identity}", "--settle-seconds", "0"]
    args += ["--metrics-port", str(port)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the controller did not report synced: {done.stderr[-2000:]}")
    found: dict[str, float] = json.loads(lines[-1])
    return found


async def fill(kubeconfig: Path, secrets: int, deployments: int) -> None:
    from bench.controller_scale import NAMESPACE, create_many, deployment, secret_body
    from kubeio.client import kube_client

    api = await kube_client(kubeconfig)
    try:
        await create_many(
            api, f"/api/v1/namespaces/{NAMESPACE}/secrets", [secret_body(f"s-{i}", f"v-{i}") for i in range(secrets)]
        )
        bodies = [deployment(f"d-{i}", f"s-{i % max(secrets, 1)}") for i in range(deployments)]
        await create_many(api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", bodies)
    finally:
        await api.close()


async def all_recorded(kubeconfig: Path) -> None:
    from bench.controller_scale import wait_all_recorded
    from kubeio.client import kube_client

    api = await kube_client(kubeconfig)
    try:
        await wait_all_recorded(api, timeout=900)
    finally:
        await api.close()


def record_every_state(kubeconfig: Path, port: int) -> None:
    """A first controller, run until every service's state is recorded: the timed starts then find what a
    restarted controller finds."""
    import asyncio
    import subprocess

    args = [sys.executable, "-m", "controller", "--kubeconfig", str(kubeconfig), "--identity", "timeline-first"]
    args += ["--lease-name", "bench-timeline-first", "--metrics-port", str(port)]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.perf_counter()
        asyncio.run(all_recorded(kubeconfig))
        print(f"first start: every state recorded {time.perf_counter() - started:.1f} s after its start")
    finally:
        first.terminate()
        first.wait(timeout=60)


def report(starts: list[dict[str, float]]) -> str:
    import statistics

    from bench.common import table

    rows: list[list[object]] = []
    for mark in starts[0]:
        values = [start[mark] for start in starts if mark in start]
        rows.append([mark, f"{statistics.median(values):.3f}", f"{min(values):.3f} to {max(values):.3f}"])
    return table(["mark (s since exec; cpu: the process's CPU seconds)", "median", "range"], rows)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return
    import argparse
    import asyncio

    from bench.apiserver import stopped_controller_manager
    from bench.common import load_average, machine
    from bench.controller_scale import NAMESPACE
    from devenv.cluster import running_control_plane
    from devenv.controller import CONTROLLER_NAMESPACE
    from devenv.process import free_port

    parser = argparse.ArgumentParser(prog="python -m bench.start_timeline")
    parser.add_argument("--starts", type=int, default=8, help="timed starts after the first (at most 50)")
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=5_000)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    with running_control_plane() as plane, stopped_controller_manager(plane, NAMESPACE):
        plane.kubectl("create", "namespace", CONTROLLER_NAMESPACE)
        asyncio.run(fill(plane.kubeconfig, args.secrets, args.deployments))
        record_every_state(plane.kubeconfig, free_port())
        time.sleep(SETTLE_SECONDS)  # the apiserver and etcd catch up on 5,000 writes before the first timed start
        print(f"{args.secrets:,} Secrets, {args.deployments:,} Deployments; load average {load_average()}")
        starts = []
        for number in range(1, min(args.starts, 50) + 1):
            starts.append(one_start(plane.kubeconfig, number, free_port()))
            time.sleep(PAUSE_SECONDS)  # each start finds the machine as the one before it left it
        print(report(starts))
        print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
