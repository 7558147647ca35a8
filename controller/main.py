"""The controller process: leader election, informers, the work queue and its workers, health and metrics."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import datetime
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.databases import DATABASES, DatabaseKey, Databases, load_servers
from controller.leader import LeaderElector
from controller.metrics import ControllerMetrics
from controller.queue import WorkQueue
from controller.registry import registry_loop
from controller.rollouts import SERVICE_PATHS, Caches, Rollouts, ServiceKey
from kubeio.client import kube_client
from kubeio.errors import conflict, describe, transient
from kubeio.events import record_event
from kubeio.informer import Informer
from kubeio.rest import ApiException, get_or_none, json_request
from rules.database import Server
from rules.failures import InvalidSpec
from rules.names import PRODUCT_NAMESPACE

log = logging.getLogger(__name__)

HMAC_SECRET_KEY = "key"
HMAC_KEY_BYTES = 32
HMAC_KEY_MIN_BYTES = 16


@dataclass(frozen=True)
class Settings:
    namespace: str = PRODUCT_NAMESPACE
    kubeconfig: Path | None = None
    identity: str = f"{socket.gethostname()}-{os.getpid()}"
    lease_name: str = "smll-secrets-controller"
    lease_seconds: int = 15
    settle_seconds: float = 2.0
    workers: int = 8
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped inside the cluster
    metrics_port: int = 8080
    hmac_secret: str = "smll-secrets-rollout-key"
    database_config: Path | None = None
    rotation_grace_seconds: float = 3600.0
    registry_url: str | None = None
    htpasswd_secret: str | None = None  # "namespace/name" of the registry's htpasswd Secret


class RolloutKeyError(Exception):
    """The rollout key's Secret exists but holds no usable key. Not repaired on its own: a new key changes every
    stored digest, which rolls every service that rolls on changes once; deleting the Secret is that decision."""


async def ensure_hmac_key(api: client.ApiClient, namespace: str, name: str) -> bytes:
    """The key of the rollout digests: kept in a Secret so every replica and every restart uses the same one."""
    path = f"/api/v1/namespaces/{namespace}/secrets"
    for _ in range(3):
        found = await get_or_none(api, f"{path}/{name}")
        if found is not None:
            problem = rollout_key_problem(found.get("data") or {})
            if problem is None:
                return base64.b64decode(found["data"][HMAC_SECRET_KEY])
            message = (
                f"the rollout key Secret {namespace}/{name} {problem}. Its digests cannot be checked any more: "
                f"delete it (kubectl -n {namespace} delete secret {name}) and the controller makes a new key; every "
                "service that rolls on changes then rolls once"
            )
            await record_event(
                api,
                api_version="v1",
                kind="Secret",
                name=name,
                namespace=namespace,
                uid=str((found.get("metadata") or {}).get("uid", "")),
                reason="RolloutKeyInvalid",
                message=message,
                warning=True,
            )
            raise RolloutKeyError(message)
        body = {
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "smll-secrets"}},
            "data": {HMAC_SECRET_KEY: base64.b64encode(secrets.token_bytes(HMAC_KEY_BYTES)).decode()},
        }
        try:
            await json_request(api, "POST", path, body=body)
        except ApiException as error:
            if error.status != 409:  # another replica made it first: read theirs
                raise
    raise RuntimeError(f"could not read or create the Secret {namespace}/{name}")


def rollout_key_problem(data: dict[str, str]) -> str | None:
    """What is wrong with the rollout key Secret's data, in words that name entries and never show a value."""
    if HMAC_SECRET_KEY not in data:
        others = ", ".join(sorted(data)) or "none"
        return f'has no "{HMAC_SECRET_KEY}" entry (its entries: {others})'
    try:
        key = base64.b64decode(data[HMAC_SECRET_KEY], validate=True)
    except (binascii.Error, ValueError, TypeError):
        return f'has a "{HMAC_SECRET_KEY}" entry that is not base64'
    if len(key) < HMAC_KEY_MIN_BYTES:
        return f'has a "{HMAC_SECRET_KEY}" entry of {len(key)} bytes, fewer than {HMAC_KEY_MIN_BYTES}'
    return None


def release_free_memory() -> None:
    """Ask glibc to return freed heap to the OS (a no-op where there is no glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Loop:
    """One controller loop: the informers that feed its queue, and the reconcile of one key.

    ``failed`` tells the user that a key failed for good (a status condition where the object has one, and an
    Event); without it the failure is only logged."""

    name: str
    queue: WorkQueue[Any]
    informers: list[Informer]
    reconcile: Callable[[Any], Awaitable[None]]
    failed: Callable[[Any, str], Awaitable[None]] | None = None


async def work(loop: Loop, metrics: ControllerMetrics) -> None:
    """Take keys and reconcile them. A conflict is retried quietly, a transient failure with per-key backoff; a
    terminal one (a refusal such as 403 or 422, an invalid spec) is reported on the object and not retried: the
    next change to the object brings its key back. Anything else (a bug, another system's error) is logged in
    full and retried with backoff."""
    queue = loop.queue
    while True:
        key = await queue.get()
        started = time.perf_counter()
        try:
            await loop.reconcile(key)
        except Exception as error:
            await handle_failure(loop, metrics, key, error)
        else:
            queue.forget(key)
        finally:
            queue.done(key)
            metrics.reconcile_duration.labels(loop.name).observe(time.perf_counter() - started)
            metrics.queue_depth.labels(loop.name).set(len(queue))


async def handle_failure(loop: Loop, metrics: ControllerMetrics, key: Any, error: Exception) -> None:
    queue = loop.queue
    if conflict(error):  # our cache was behind the object
        log.debug("%s: conflict on %s; retrying in %.2fs", loop.name, key, queue.retry(key))
        return
    metrics.reconcile_errors.labels(loop.name).inc()
    if transient(error):
        delay = queue.retry(key)
        log.warning("%s: reconcile of %s failed (%s); retrying in %.2fs", loop.name, key, describe(error), delay)
        return
    if isinstance(error, ApiException | InvalidSpec):
        queue.forget(key)
        log.error("%s: reconcile of %s failed for good, not retried: %s", loop.name, key, describe(error))
        if loop.failed is not None:
            try:
                await loop.failed(key, describe(error))
            except Exception as reporting:
                log.warning("%s: could not report the failure of %s: %s", loop.name, key, describe(reporting))
        return
    delay = queue.retry(key)
    log.error("%s: reconcile of %s failed; retrying in %.2fs", loop.name, key, delay, exc_info=error)


async def serve_health(settings: Settings, metrics: ControllerMetrics) -> web.AppRunner:
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.metrics_host, settings.metrics_port).start()
    return runner


def rollout_loop(api: client.ApiClient, settings: Settings, metrics: ControllerMetrics, hmac_key: bytes) -> Loop:
    queue: WorkQueue[ServiceKey] = WorkQueue()
    caches = Caches(hmac_key, queue, settings.settle_seconds)
    informers = [Informer(api, "/api/v1/secrets", caches.secret_handler())] + [
        Informer(api, path, caches.service_handler(kind)) for kind, (path, _) in SERVICE_PATHS.items()
    ]
    rollouts = Rollouts(api, caches, metrics)
    return Loop("rollouts", queue, informers, rollouts.reconcile, rollouts.failed)


def database_loop(api: client.ApiClient, settings: Settings, hmac_key: bytes, servers: dict[str, Server]) -> Loop:
    queue: WorkQueue[DatabaseKey] = WorkQueue()
    databases = Databases(
        api,
        queue,
        servers=servers,
        namespace=settings.namespace,
        hmac_key=hmac_key,
        grace=datetime.timedelta(seconds=settings.rotation_grace_seconds),
    )

    async def failed(key: DatabaseKey, message: str) -> None:
        obj = databases.objects.get(key)
        if obj is not None:  # the Ready condition, and an Event when its reason changes
            await databases.status(obj, "False", "ReconcileFailed", message)

    return Loop("databases", queue, [Informer(api, DATABASES, databases)], databases.reconcile, failed)


async def run_loop(loop: Loop, metrics: ControllerMetrics, workers: int) -> None:
    """The loop's informers and workers until cancelled. Should any of them end — an informer refused for good,
    a bug — the others are cancelled and its exception is raised: the process then exits non-zero, rather than
    working on from caches that no longer change."""
    async with asyncio.TaskGroup() as group:
        for informer in loop.informers:
            group.create_task(supervised(informer.run(), f"{loop.name}: watch of {informer.path}"))
        # Every cache first: a service reconciled before its Secrets are known would see them as absent.
        await asyncio.gather(*(informer.synced.wait() for informer in loop.informers))
        log.info("%s: caches synced", loop.name)
        release_free_memory()  # the initial lists were decoded in full; hand their freed pages back
        for number in range(workers):
            group.create_task(supervised(work(loop, metrics), f"{loop.name}: worker {number}"))


async def supervised(task: Awaitable[None], name: str) -> None:
    """Run a task that should run for as long as the process; its ending at all is a failure."""
    await task
    raise BackgroundTaskEnded(f"{name} ended")


class BackgroundTaskEnded(RuntimeError):
    pass


def leaf_errors(error: BaseException | None) -> list[BaseException]:
    """The failures inside a TaskGroup's exception group (or the one error), without the cancellations."""
    if error is None:
        return [BackgroundTaskEnded("the controller's loops ended")]
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaf_errors(inner)]
    return [] if isinstance(error, asyncio.CancelledError) else [error]


async def lead(api: client.ApiClient, settings: Settings, metrics: ControllerMetrics) -> None:
    """Everything the leader does, until cancelled; raises as soon as any part of it fails."""
    hmac_key = await ensure_hmac_key(api, settings.namespace, settings.hmac_secret)
    loops = [rollout_loop(api, settings, metrics, hmac_key)]
    if settings.database_config is not None:
        loops.append(database_loop(api, settings, hmac_key, load_servers(settings.database_config)))
    if settings.registry_url is not None and settings.htpasswd_secret is not None:
        loops.append(registry_loop(api, settings, metrics))
    async with asyncio.TaskGroup() as group:
        for loop in loops:
            group.create_task(run_loop(loop, metrics, settings.workers))


async def run(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api = await kube_client(settings.kubeconfig)
    metrics = ControllerMetrics()
    elector = LeaderElector(
        api,
        namespace=settings.namespace,
        name=settings.lease_name,
        identity=settings.identity,
        lease_seconds=settings.lease_seconds,
        renew_deadline=settings.lease_seconds * 2 / 3,
        retry_period=max(1.0, settings.lease_seconds / 7.5),
    )
    health = await serve_health(settings, metrics)
    stopping = asyncio.create_task(stop.wait())
    code = 0
    try:
        acquiring = asyncio.create_task(elector.acquire())
        await asyncio.wait([acquiring, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not acquiring.done():
            acquiring.cancel()
            await asyncio.gather(acquiring, return_exceptions=True)
            return 0
        if acquiring.exception() is not None:  # never lead after an error: the Lease may be anyone's
            log.error("could not take part in leader election; exiting")
            return 1
        metrics.leader.set(1)
        leading = asyncio.create_task(lead(api, settings, metrics))
        keeping = asyncio.create_task(elector.keep())
        done, _ = await asyncio.wait([leading, keeping, stopping], return_when=asyncio.FIRST_COMPLETED)
        if keeping in done:
            log.error("lost leadership; exiting so that this replica starts again as a standby")
            code = 1
        elif leading in done:
            for failure in leaf_errors(leading.exception()):
                log.error("the controller failed: %s", describe(failure), exc_info=failure)
            code = 1
        for task in (leading, keeping):
            task.cancel()
        await asyncio.gather(leading, keeping, return_exceptions=True)
        with contextlib.suppress(Exception):
            await elector.release()
        metrics.leader.set(0)
        return code
    finally:
        stopping.cancel()
        await health.cleanup()
        await api.close()
