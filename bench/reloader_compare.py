"""smll-secrets beside Stakater Reloader on one local control plane, one controller at a time (issue 15).

Every row is lower-is-better; the ratio is Reloader ÷ smll-secrets, so above 1 means smll-secrets is ahead.

1. A Secret changed → all its dependents rolled, for ``--dependents`` (1, 100, 1,000) Deployments reading it.
2. Rollouts per burst: one Secret changed ``--burst`` times ``--burst-interval`` apart, read by
   ``--burst-services`` Deployments; rollouts counted until the controller has been quiet for a while.
3. With ``--secrets`` Secrets and ``--deployments`` Deployments more in the cluster (the services of 1. and 2.
   stay): a Secret changed the moment the controller reports ready after a (re)start → its service rolled; RSS
   once synced and idle; cold start to caches synced. Each ``--repeats`` times per controller.

A rollout is a change of a Deployment's ``spec.template`` seen by a watch (``metadata.generation`` also moves
when only annotations change, so it is not used). Times run from the bench's request (the Secret PATCH) or from
the controller's exec to the moment the bench sees the result: on a watch, in smll-secrets' log ("rollouts:
caches synced"), or in Reloader's metrics (it logs nothing when synced; its informer calls its add handler once
per listed Secret, counted in ``reloader_events_received_total{event_type="add",resource_type="secrets"}``, so it is
synced when that count reaches the number of Secrets in the cluster). Both are polled every 50 ms.

smll-secrets runs as ``python -m controller`` (settling window 0, except for the burst, where it has the
product's default); Reloader as its own binary with ``KUBECONFIG`` (it has no kubeconfig flag),
``--reload-strategy=annotations`` (it stamps the pod template's annotations) and
``--resources-to-ignore=configmaps`` (Secrets only, like smll-secrets), everything else at its defaults. Every
Deployment carries both products' opt-ins; only one controller runs at a time. Reloader never rolls on start and
keeps no state, so after each Reloader measurement the bench sets the Secrets it changed back to the values
smll-secrets last saw, and the next smll-secrets start has nothing to catch up on.

Reloader is not built by this repository: the Go module proxy refuses ``github.com/stakater/Reloader`` (its
version list and every version asked, tags and pseudo-versions alike: 403 "This module version is not
available"), so no go.mod of ours can require it. Pass a Reloader binary with ``--reloader PATH``; without one,
only the smll-secrets column is measured. Reloader serves its metrics and liveness on ``:9090`` (fixed in its
code, all interfaces; the bench only ever connects to 127.0.0.1:9090), so that port must be free.

``python -m bench.reloader_compare [--reloader PATH] [--quick]``; the kube-controller-manager is stopped while
measuring, so nothing but the controller and the bench writes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import signal
import socket
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from kubernetes_asyncio import client

from bench import controller_scale as scale
from bench.apiserver import stopped_controller_manager
from bench.common import load_average, machine, table
from controller.frame.settings import Settings
from devenv.cluster import ControlPlane, running_control_plane
from devenv.controller import LocalController
from devenv.process import Component
from kubeio.client import kube_client
from kubeio.rest import MERGE_PATCH, json_request, stream_json_lines
from rules.names import AUTO_ROLLOUT
from rules.secretdata import encode

NAMESPACE = "versus"
ROLLED_FOR = "secrets.smll.io/rolled-for"  # smll-secrets records a service's state here (metadata)
RELOADER_SECRET_ANNOTATION = "secret.reloader.stakater.com/reload"
RELOADER_PORT = 9090
POLL = 0.05
QUICK = {"dependents": "1,10,100", "secrets": 1_000, "deployments": 500}
SMLL = "smll-secrets"
DESCRIPTION = "smll-secrets beside Stakater Reloader on one local control plane, one controller at a time"
RELOADER = "Reloader"

# ---- objects ----------------------------------------------------------------------------------------------


def deployment(name: str, secret: str) -> dict[str, Any]:
    """A Deployment reading ``secret`` through an env var, opted in to both products' rollouts."""
    annotations = {AUTO_ROLLOUT: "true", RELOADER_SECRET_ANNOTATION: secret}
    return scale.deployment(name, secret, namespace=NAMESPACE, annotations=annotations)


def secret_body(name: str, value: str) -> dict[str, Any]:
    return scale.secret_body(name, value, namespace=NAMESPACE)


async def set_secret(api: client.ApiClient, name: str, value: str) -> None:
    path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}"
    await json_request(api, "PATCH", path, body={"data": {"TOKEN": encode(value)}}, content_type=MERGE_PATCH)


async def secret_value(api: client.ApiClient, name: str) -> str:
    found = await json_request(api, "GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}")
    return base64.b64decode(found["data"]["TOKEN"]).decode()


async def count_objects(api: client.ApiClient, path: str) -> int:
    """How many objects a cluster-wide list holds, read from one page of one item."""
    page = await json_request(api, "GET", path, query={"limit": 1})
    metadata = page.get("metadata") or {}
    return len(page.get("items") or []) + int(metadata.get("remainingItemCount") or 0)


# ---- what the bench sees: a watch on the Deployments -------------------------------------------------------


@dataclass
class TemplateWatch:
    """Every change of a Deployment's ``spec.template`` in NAMESPACE, with the time the bench saw it, and which
    Deployments carry smll-secrets' recorded state. Open it with ``async with`` before the measured change."""

    api: client.ApiClient
    templates: dict[str, str] = field(default_factory=dict)
    changes: dict[str, list[float]] = field(default_factory=dict)
    recorded: set[str] = field(default_factory=set)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TemplateWatch:
        token, version = "", ""
        while True:
            query: dict[str, str | int | bool] = {"limit": 500, **({"continue": token} if token else {})}
            page = await json_request(self.api, "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", query=query)
            for item in page.get("items") or []:
                self._see(item, baseline=True)
            token = (page.get("metadata") or {}).get("continue") or ""
            version = version or page["metadata"]["resourceVersion"]
            if not token:
                break
        self._task = asyncio.create_task(self._watch(version))
        await asyncio.sleep(0.2)  # the watch is open
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _see(self, item: dict[str, Any], *, baseline: bool = False) -> None:
        metadata = item.get("metadata") or {}
        name = str(metadata.get("name"))
        if ROLLED_FOR in (metadata.get("annotations") or {}):
            self.recorded.add(name)
        else:
            self.recorded.discard(name)
        fingerprint = json.dumps(item["spec"]["template"], sort_keys=True)
        before = self.templates.get(name)
        self.templates[name] = fingerprint
        if not baseline and before is not None and before != fingerprint:
            self.changes.setdefault(name, []).append(time.perf_counter())

    async def _watch(self, version: str) -> None:
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        for _ in range(100):  # each watch lasts up to 5 minutes; no measurement is that long
            query: dict[str, str | int | bool] = {
                "watch": "true",
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": 300,
            }
            async for event in stream_json_lines(self.api, path, query=query, timeout=400):
                if event.get("type") == "ERROR":
                    raise RuntimeError(f"the bench's watch failed: {event.get('object')}")
                item = event.get("object") or {}
                version = (item.get("metadata") or {}).get("resourceVersion") or version
                if event.get("type") in ("ADDED", "MODIFIED"):
                    self._see(item)

    def _check(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            raise RuntimeError(f"the bench's watch ended: {error!r}")

    def rollouts(self, since: float, names: Sequence[str] | None = None) -> int:
        wanted = self.changes if names is None else {n: self.changes.get(n, []) for n in names}
        return sum(1 for times in wanted.values() for moment in times if moment >= since)

    def first_rolled(self, since: float, names: Sequence[str]) -> list[float]:
        """For each of ``names`` that rolled since ``since``, when the bench first saw it roll."""
        found = []
        for name in names:
            after = [moment for moment in self.changes.get(name, []) if moment >= since]
            if after:
                found.append(after[0])
        return found

    async def wait_rolled(self, since: float, names: Sequence[str], timeout: float) -> tuple[float | None, int]:
        """Seconds from ``since`` until every one of ``names`` rolled (None if not within ``timeout``), and how
        many had rolled by then."""
        deadline = time.perf_counter() + timeout
        while True:
            self._check()
            seen = self.first_rolled(since, names)
            if len(seen) == len(names):
                return max(seen) - since, len(seen)
            if time.perf_counter() > deadline:
                return None, len(seen)
            await asyncio.sleep(POLL)

    async def wait_recorded(self, names: Sequence[str], timeout: float) -> float:
        started = time.perf_counter()
        while not self.recorded.issuperset(names):
            self._check()
            if time.perf_counter() - started > timeout:
                missing = len(set(names) - self.recorded)
                raise TimeoutError(f"{missing} of {len(names)} services without recorded state after {timeout:.0f}s")
            await asyncio.sleep(POLL)
        return time.perf_counter() - started

    async def wait_quiet(self, since: float, quiet: float, timeout: float) -> None:
        """Until no template has changed for ``quiet`` seconds (and ``quiet`` has passed since ``since``)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            self._check()
            last = max((t for times in self.changes.values() for t in times), default=0.0)
            if time.perf_counter() - max(last, since) >= quiet:
                return
            await asyncio.sleep(POLL)


# ---- the two controllers ----------------------------------------------------------------------------------


class Contender(Protocol):
    name: str

    async def start(self, *, settle: float) -> float:
        """Start; seconds from its exec to its caches synced."""
        ...

    def pid(self) -> int: ...

    def stop(self) -> None: ...


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class Smll:
    plane: ControlPlane
    workdir: Path
    name: str = SMLL
    starts: int = 0
    controller: LocalController | None = None

    async def start(self, *, settle: float) -> float:
        self.starts += 1
        label = f"smll-{self.starts}"
        # A Lease of its own each time: no start waits for the previous one's Lease to expire.
        controller = LocalController(
            self.plane, self.workdir / label, identity=label, settle_seconds=settle, lease_name=f"bench-{label}"
        )
        self.controller = controller
        controller.start()
        started = time.perf_counter()  # Popen has returned: the interpreter is exec'd
        assert controller.component is not None
        log, offset, seen = controller.component.log, 0, b""
        while time.perf_counter() - started < 300:
            if not controller.component.alive():
                raise RuntimeError(f"smll-secrets exited during start-up:\n{_tail(log)}")
            with log.open("rb") as file:
                file.seek(offset)
                chunk = file.read()
            offset += len(chunk)
            seen = seen[-200:] + chunk
            if b"rollouts: caches synced" in seen:
                return time.perf_counter() - started
            await asyncio.sleep(POLL)
        raise TimeoutError(f"smll-secrets not synced within 300s:\n{_tail(log)}")

    def pid(self) -> int:
        assert self.controller is not None
        assert self.controller.component is not None
        assert self.controller.component.process is not None
        return self.controller.component.process.pid

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@dataclass
class Reloader:
    plane: ControlPlane
    api: client.ApiClient
    binary: Path
    workdir: Path
    name: str = RELOADER
    starts: int = 0
    component: Component | None = None

    async def start(self, *, settle: float) -> float:
        del settle  # Reloader has no settling window
        self.starts += 1
        expected = await count_objects(self.api, "/api/v1/secrets")
        _port_free(RELOADER_PORT)
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [str(self.binary), "--reload-strategy=annotations", "--resources-to-ignore=configmaps"]
        env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_NAMESPACE", "RELOADER_NAMESPACE")}
        env["KUBECONFIG"] = str(self.plane.kubeconfig)
        component = Component(f"reloader-{self.starts}", args, self.workdir / f"reloader-{self.starts}.log")
        self.component = component
        component.start(detach=False, env=env)
        started = time.perf_counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.perf_counter() - started < 300:
                if not component.alive():
                    raise RuntimeError(f"Reloader exited during start-up:\n{_tail(component.log)}")
                if await _reloader_secret_adds(session) >= expected:
                    return time.perf_counter() - started
                await asyncio.sleep(POLL)
        raise TimeoutError(f"Reloader not synced ({expected} Secrets) within 300s:\n{_tail(component.log)}")

    def pid(self) -> int:
        assert self.component is not None
        assert self.component.process is not None
        return self.component.process.pid

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop(sig=signal.SIGTERM)
            self.component = None


def _port_free(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError as error:
            raise RuntimeError(f"Reloader listens on :{port} (fixed in its code), which is taken: {error}") from None


async def _reloader_secret_adds(session: aiohttp.ClientSession) -> float:
    try:
        async with session.get(f"http://127.0.0.1:{RELOADER_PORT}/metrics") as answer:
            text = await answer.text()
    except (aiohttp.ClientError, TimeoutError):
        return -1.0  # not listening yet
    return parse_secret_adds(text)


def parse_secret_adds(metrics: str) -> float:
    """Reloader's count of Secrets its informer handed to the add handler (its initial list, then creates)."""
    total = 0.0
    for line in metrics.splitlines():
        labels = 'event_type="add"' in line and 'resource_type="secrets"' in line
        if line.startswith("reloader_events_received_total{") and labels:
            total += float(line.rsplit(" ", 1)[1])
    return total


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_meter(pids: dict[str, int]) -> Callable[[], str]:
    """CPU seconds each process uses from now until the returned function is called, as a note."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def used() -> str:
        return "CPU " + ", ".join(f"{name} {cpu_seconds(pid) - before[name]:.2f} s" for name, pid in pids.items())

    return used


async def wait_idle(pid: int, *, window: float = 3.0, busy: float = 0.03, timeout: float = 300) -> bool:
    """Until the process used under ``busy`` of a CPU over ``window`` seconds; False if it never did."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        before = cpu_seconds(pid)
        await asyncio.sleep(window)
        if cpu_seconds(pid) - before < busy * window:
            return True
    return False


# ---- results ----------------------------------------------------------------------------------------------


@dataclass
class Sample:
    value: float | None  # None: not reached within the bench's time limit
    load: str
    note: str = ""


@dataclass
class Row:
    what: str
    unit: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def add(self, who: str, value: float | None, note: str = "") -> None:
        self.samples.setdefault(who, []).append(Sample(value, load_average().split()[0], note))
        shown = "not reached" if value is None else fmt_value(value, self.unit)
        print(f"  {who}: {self.what}: {shown}{f' ({note})' if note else ''}, load {load_average()}", flush=True)

    def cells(self) -> list[str]:
        smll, reloader = self.samples.get(SMLL, []), self.samples.get(RELOADER, [])
        loads = " / ".join(", ".join(s.load for s in samples) or "—" for samples in (smll, reloader))
        return [self.what, spread(smll, self.unit), spread(reloader, self.unit), ratio(smll, reloader), loads]


def fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:g}"


def spread(samples: Sequence[Sample], unit: str) -> str:
    """One value, or the lowest to the highest of several; what was not reached, when one was not."""
    if not samples:
        return "—"
    if any(s.value is None for s in samples):
        return "not reached: " + "; ".join(s.note for s in samples if s.value is None)
    values = sorted(s.value for s in samples if s.value is not None)
    low, high = fmt_value(values[0], unit), fmt_value(values[-1], unit)
    return low if low == high else f"{low.split()[0]}-{high}"


def ratio(smll: Sequence[Sample], reloader: Sequence[Sample]) -> str:
    """Reloader ÷ smll-secrets of the medians: above 1, smll-secrets is ahead (every row is lower-is-better)."""
    mine = [s.value for s in smll if s.value is not None]
    theirs = [s.value for s in reloader if s.value is not None]
    if not mine or not theirs or len(mine) < len(smll) or len(theirs) < len(reloader):
        return "—"
    value = statistics.median(theirs) / max(statistics.median(mine), 1e-3)
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


# ---- the measurements -------------------------------------------------------------------------------------


@dataclass
class Bench:
    api: client.ApiClient
    contenders: list[Contender]
    settle: float
    servers: dict[str, int] = field(default_factory=dict)  # etcd and kube-apiserver: their CPU is noted too
    rows: list[Row] = field(default_factory=list)

    def meter(self, contender: Contender) -> Callable[[], str]:
        return cpu_meter({contender.name: contender.pid(), **self.servers})

    def row(self, what: str, unit: str) -> Row:
        found = Row(what, unit)
        self.rows.append(found)
        return found

    async def each(self, measure: Callable[[Contender], Awaitable[None]], secrets: Sequence[str]) -> None:
        """``measure`` each controller in turn. Reloader's changes to ``secrets`` are undone after it stopped, so
        that smll-secrets' next start finds the values it last saw (Reloader never looks back)."""
        for contender in self.contenders:
            before = {name: await secret_value(self.api, name) for name in secrets}
            try:
                await measure(contender)
            finally:
                contender.stop()
            if contender.name != SMLL:
                for name, value in before.items():
                    await set_secret(self.api, name, value)

    async def dependents(self, counts: list[int]) -> None:
        await scale.create_many(self.api, f"/api/v1/namespaces/{NAMESPACE}/secrets", [secret_body("shared", "v0")])
        made = 0
        for count in counts:
            bodies = [deployment(f"dep-{i}", "shared") for i in range(made, count)]
            await scale.create_many(self.api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", bodies)
            made = max(made, count)
            names = [f"dep-{i}" for i in range(count)]
            kinds = "Deployment" if count == 1 else "Deployments"
            row = self.row(f"a Secret read by {count:,} {kinds} changed → all rolled", "s")

            async def measure(contender: Contender, names: list[str] = names, row: Row = row) -> None:
                async with TemplateWatch(self.api) as watch:
                    await contender.start(settle=0)
                    if contender.name == SMLL:
                        await watch.wait_recorded(names, timeout=600)  # its first start records, rolls nothing
                    await asyncio.sleep(1)
                    meter = self.meter(contender)
                    started = time.perf_counter()
                    await set_secret(self.api, "shared", f"{contender.name}-{len(names)}")
                    took, rolled = await watch.wait_rolled(started, names, timeout=60 + 0.6 * len(names))
                    cpu = meter()
                    await asyncio.sleep(2)  # a second rollout of any of them would show now
                    note = f"{watch.rollouts(started, names)} rollouts; {cpu}"
                    row.add(contender.name, took, note if took is not None else f"{rolled} of {len(names)}; {note}")

            await self.each(measure, ["shared"])

    async def burst(self, services: int, changes: int, interval: float) -> None:
        await scale.create_many(self.api, f"/api/v1/namespaces/{NAMESPACE}/secrets", [secret_body("burst", "b0")])
        names = [f"burst-{i}" for i in range(services)]
        bodies = [deployment(name, "burst") for name in names]
        await scale.create_many(self.api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", bodies)
        row = self.row(f"rollouts per service for a burst of {changes} changes {interval:g} s apart", "")

        async def measure(contender: Contender) -> None:
            async with TemplateWatch(self.api) as watch:
                settle = self.settle if contender.name == SMLL else 0
                await contender.start(settle=settle)
                if contender.name == SMLL:
                    await watch.wait_recorded(names, timeout=600)
                await asyncio.sleep(1)
                started = time.perf_counter()
                for number in range(changes):
                    await set_secret(self.api, "burst", f"{contender.name}-{number}")
                    await asyncio.sleep(interval)
                # quiet for longer than the settling window, after the last change
                await watch.wait_quiet(time.perf_counter(), quiet=settle + 10, timeout=300)
                total = watch.rollouts(started, names)
                note = f"{total} rollouts of {services} services" + (
                    f", settling window {settle:g} s" if settle else ""
                )
                row.add(contender.name, total / services, note)

        await self.each(measure, ["burst"])

    async def scale(self, secrets: int, deployments: int, repeats: int) -> None:
        took = await scale.create_many(
            self.api,
            f"/api/v1/namespaces/{NAMESPACE}/secrets",
            [secret_body(f"s-{i}", f"value-{i}") for i in range(secrets)],
        )
        print(f"  created {secrets:,} Secrets in {took:.0f} s", flush=True)
        took = await scale.create_many(
            self.api,
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments",
            [deployment(f"big-{i}", f"s-{i % secrets}") for i in range(deployments)],
        )
        print(f"  created {deployments:,} Deployments in {took:.0f} s", flush=True)
        in_cluster = await count_objects(self.api, "/apis/apps/v1/deployments")
        all_secrets = await count_objects(self.api, "/api/v1/secrets")
        size = f"{all_secrets:,} Secrets + {in_cluster:,} Deployments"
        first = self.row(f"first start: every service's state recorded, {size}", "s")
        restart = self.row(f"a Secret changed right after a (re)start, {in_cluster:,} services → rolled", "s")
        memory = self.row(f"RSS, synced and idle, {size}", "MiB")
        cold = self.row(f"cold start to caches synced, {size}", "s")

        smll = next((c for c in self.contenders if c.name == SMLL), None)
        if smll is not None:  # a restart needs a first start before it: record every service's state once
            async with TemplateWatch(self.api) as watch:
                everything = sorted(watch.templates)
                synced = await smll.start(settle=0)
                recorded = await watch.wait_recorded(everything, timeout=900)
                rolled = watch.rollouts(0)
                first.add(SMLL, synced + recorded, f"{rolled} rollouts; synced in {synced:.1f} s")
            smll.stop()

        for attempt in range(repeats):
            name = f"s-{attempt % deployments}"
            service = f"big-{attempt % deployments}"

            async def idle(contender: Contender) -> None:
                cold.add(contender.name, await contender.start(settle=0))
                pid = contender.pid()
                quiet = await wait_idle(pid)
                memory.add(contender.name, rss_mib(pid), "" if quiet else "never idle within 300 s")

            async def changed(
                contender: Contender, name: str = name, service: str = service, attempt: int = attempt
            ) -> None:
                async with TemplateWatch(self.api) as watch:
                    synced = await contender.start(settle=0)
                    meter = self.meter(contender)
                    started = time.perf_counter()  # the moment it reports ready
                    await set_secret(self.api, name, f"{contender.name}-restart-{attempt}")
                    took, _ = await watch.wait_rolled(started, [service], timeout=300)
                    cpu = meter()
                    cold.add(contender.name, synced)
                    restart.add(contender.name, took, cpu if took is not None else f"not within 300 s; {cpu}")

            await self.each(idle, [])
            await self.each(changed, [name])


async def run(args: argparse.Namespace) -> list[Row]:
    counts = [int(n) for n in args.dependents.split(",")]
    with running_control_plane() as plane, stopped_controller_manager(plane, NAMESPACE):
        plane.kubectl("create", "namespace", "smll-system")
        api = await kube_client(plane.kubeconfig)
        try:
            contenders: list[Contender] = [Smll(plane, args.workdir)]
            if args.reloader is not None:
                contenders.append(Reloader(plane, api, args.reloader.resolve(), args.workdir))
            servers = {name: plane.components[name].process for name in ("etcd", "kube-apiserver")}
            pids = {name: process.pid for name, process in servers.items() if process is not None}
            bench = Bench(api, contenders, args.settle_seconds, pids)
            print(f"1. a Secret changed → dependents rolled ({', '.join(map(str, counts))})", flush=True)
            await bench.dependents(counts)
            print(f"2. a burst of {args.burst} changes, {args.burst_services} services", flush=True)
            await bench.burst(args.burst_services, args.burst, args.burst_interval)
            print(f"3. {args.secrets:,} Secrets and {args.deployments:,} Deployments more", flush=True)
            await bench.scale(args.secrets, args.deployments, args.repeats)
            return bench.rows
        finally:
            await api.close()


def report(rows: list[Row]) -> str:
    headers = ["row (lower is better)", SMLL, RELOADER, "Reloader ÷ smll-secrets", "load 1 min (smll / Reloader)"]
    return table(headers, [row.cells() for row in rows])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reloader_compare", description=DESCRIPTION)
    parser.add_argument("--reloader", type=Path, help="a Reloader binary (this repository does not build it)")
    parser.add_argument("--quick", action="store_true", help="small sizes: " + json.dumps(QUICK))
    parser.add_argument("--dependents", default="1,100,1000", help="comma-separated counts of dependents")
    parser.add_argument("--secrets", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=5_000)
    parser.add_argument("--burst", type=int, default=10, help="changes in the burst")
    parser.add_argument("--burst-interval", type=float, default=0.1, help="seconds between the burst's changes")
    parser.add_argument("--burst-services", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2, help="restarts of each controller at scale")
    parser.add_argument(
        "--settle-seconds", type=float, default=Settings().settle_seconds, help="smll-secrets' window in the burst"
    )
    parser.add_argument("--workdir", type=Path, help="where the controllers' logs go (default: a new temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.reloader is not None and not os.access(args.reloader, os.X_OK):
        parser.error(f"--reloader {args.reloader}: not an executable file")
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="smll-bench-versus-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(machine())
    print(f"load average at the start: {load_average()}; logs in {args.workdir}", flush=True)
    started = time.monotonic()
    rows = asyncio.run(run(args))
    print()
    print(report(rows))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nbench process peak RSS {peak:.0f} MiB; {time.monotonic() - started:.0f} s in all")
    results = [
        {"what": row.what, "unit": row.unit, "samples": {k: [vars(s) for s in v] for k, v in row.samples.items()}}
        for row in rows
    ]
    (args.workdir / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results in {args.workdir / 'results.json'}")


if __name__ == "__main__":
    main()
