"""The controller process: leader election, informers, the work queue and its workers, health and metrics."""

from __future__ import annotations

import asyncio
import base64
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
from kubeio.informer import Informer
from kubeio.rest import ApiException, json_request
from rules.database import Server
from rules.names import PRODUCT_NAMESPACE

log = logging.getLogger(__name__)

HMAC_SECRET_KEY = "key"


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


async def ensure_hmac_key(api: client.ApiClient, namespace: str, name: str) -> bytes:
    """The key of the rollout digests: kept in a Secret so every replica and every restart uses the same one."""
    path = f"/api/v1/namespaces/{namespace}/secrets"
    for _ in range(3):
        try:
            found = await json_request(api, "GET", f"{path}/{name}")
            return base64.b64decode(found["data"][HMAC_SECRET_KEY])
        except ApiException as error:
            if error.status != 404:
                raise
        body = {
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "smll-secrets"}},
            "data": {HMAC_SECRET_KEY: base64.b64encode(secrets.token_bytes(32)).decode()},
        }
        try:
            await json_request(api, "POST", path, body=body)
        except ApiException as error:
            if error.status != 409:  # another replica made it first: read theirs
                raise
    raise RuntimeError(f"could not read or create the Secret {namespace}/{name}")


def release_free_memory() -> None:
    """Ask glibc to return freed heap to the OS (a no-op where there is no glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Loop:
    """One controller loop: the informers that feed its queue, and the reconcile of one key."""

    name: str
    queue: WorkQueue[Any]
    informers: list[Informer]
    reconcile: Callable[[Any], Awaitable[None]]


async def work(loop: Loop, metrics: ControllerMetrics) -> None:
    queue = loop.queue
    while True:
        key = await queue.get()
        started = time.perf_counter()
        try:
            await loop.reconcile(key)
        except ApiException as error:
            delay = queue.retry(key)
            if error.status == 409:  # our cache was behind the object: a quiet retry
                log.debug("%s: conflict on %s; retrying in %.2fs", loop.name, key, delay)
            else:
                metrics.reconcile_errors.labels(loop.name).inc()
                log.warning(
                    "%s: reconcile of %s failed (%s %s); retrying in %.2fs",
                    loop.name,
                    key,
                    error.status,
                    error.reason,
                    delay,
                )
        except Exception:
            delay = queue.retry(key)
            metrics.reconcile_errors.labels(loop.name).inc()
            log.exception("%s: reconcile of %s failed; retrying in %.2fs", loop.name, key, delay)
        else:
            queue.forget(key)
        finally:
            queue.done(key)
            metrics.reconcile_duration.labels(loop.name).observe(time.perf_counter() - started)
            metrics.queue_depth.labels(loop.name).set(len(queue))


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
    return Loop("rollouts", queue, informers, Rollouts(api, caches, metrics).reconcile)


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
    return Loop("databases", queue, [Informer(api, DATABASES, databases)], databases.reconcile)


async def run_loop(loop: Loop, metrics: ControllerMetrics, workers: int) -> None:
    tasks = [asyncio.create_task(informer.run(), name=informer.path) for informer in loop.informers]
    try:
        # Every cache first: a service reconciled before its Secrets are known would see them as absent.
        await asyncio.gather(*(informer.synced.wait() for informer in loop.informers))
        log.info("%s: caches synced", loop.name)
        release_free_memory()  # the initial lists were decoded in full; hand their freed pages back
        tasks += [asyncio.create_task(work(loop, metrics)) for _ in range(workers)]
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def lead(api: client.ApiClient, settings: Settings, metrics: ControllerMetrics) -> None:
    """Everything the leader does, until cancelled."""
    hmac_key = await ensure_hmac_key(api, settings.namespace, settings.hmac_secret)
    loops = [rollout_loop(api, settings, metrics, hmac_key)]
    if settings.database_config is not None:
        loops.append(database_loop(api, settings, hmac_key, load_servers(settings.database_config)))
    if settings.registry_url is not None and settings.htpasswd_secret is not None:
        loops.append(registry_loop(api, settings, metrics))
    await asyncio.gather(*(run_loop(loop, metrics, settings.workers) for loop in loops))


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
        if stop.is_set():
            acquiring.cancel()
            return 0
        metrics.leader.set(1)
        leading = asyncio.create_task(lead(api, settings, metrics))
        keeping = asyncio.create_task(elector.keep())
        done, _ = await asyncio.wait([leading, keeping, stopping], return_when=asyncio.FIRST_COMPLETED)
        if keeping in done:
            log.error("lost leadership; exiting so that this replica starts again as a standby")
            code = 1
        elif leading in done and leading.exception() is not None:
            log.error("the controller failed: %r", leading.exception())
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
