"""The controller process: leader election, health and metrics, and the loops it leads.

Each loop (``controller.rollouts``, ``controller.databases``, ``controller.registry``) builds a ``frame.Loop``; this
module only chooses which run and runs them in the frame. The database and registry loops are imported only when
their flags turn them on: a controller that only rolls out never loads their SQL driver, YAML or bcrypt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING, Any

from aiohttp import web
from kubernetes_asyncio import client
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.frame.loop import Loop, leaf_errors, run_loop
from controller.frame.metrics import ControllerMetrics
from controller.frame.settings import Settings
from controller.leader import LeaderElector
from controller.rollout_key import ensure_rollout_key
from controller.rollouts import rollout_loop
from kubeio.client import kube_client
from kubeio.errors import describe_error

if TYPE_CHECKING:
    from controller.registry.tokens import Serving

log = logging.getLogger(__name__)


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


async def lead(api: client.ApiClient, settings: Settings, metrics: ControllerMetrics) -> None:
    """Everything the leader does, until cancelled; raises as soon as any part of it fails."""
    hmac_key = await ensure_rollout_key(api, settings.namespace, settings.hmac_secret)
    loops: list[Loop[Any]] = [rollout_loop(api, settings, metrics, hmac_key)]
    if settings.database_config is not None:
        from controller.databases.config import load_servers  # only when turned on (module doc)
        from controller.databases.loop import database_loop

        loops.append(database_loop(api, settings, hmac_key, load_servers(settings.database_config)))
    if settings.registry_url is not None and settings.htpasswd_secret is not None:
        from controller.registry.loop import registry_loop  # only when turned on (module doc)

        loops.append(registry_loop(api, settings, hmac_key))
    async with asyncio.TaskGroup() as group:
        for loop in loops:
            group.create_task(run_loop(loop, metrics, settings.workers))


async def serve_registry_tokens(api: client.ApiClient, settings: Settings) -> Serving | None:
    """The registry's token endpoint, on every replica (it reads, never writes); None when it is off."""
    if settings.registry_token_port is None or settings.registry_url is None or settings.htpasswd_secret is None:
        return None
    assert settings.registry_token_ca is not None  # checked with the flags
    from controller.registry.config import parse_secret_ref  # only when turned on (module doc)
    from controller.registry.tokens import TokenConfig, serve_tokens
    from rules.registry import registry_host

    config = TokenConfig(
        port=settings.registry_token_port,
        host=settings.registry_token_host,
        ca_secret=parse_secret_ref(settings.registry_token_ca),
        service=settings.registry_token_service or registry_host(settings.registry_url),
        issuer=settings.registry_token_issuer,
        lifetime=settings.registry_token_seconds,
        previous_grace_seconds=settings.rotation_grace_seconds,
    )
    return await serve_tokens(api, config, settings.htpasswd_secret)


def _failure(task: asyncio.Task[None]) -> str:
    error = task.exception()
    return describe_error(error) if error is not None else "its informers ended"


async def _first(*tasks: asyncio.Task[Any]) -> None:
    """Wait until the first of these tasks ends."""
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)


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
    tokens = await serve_registry_tokens(api, settings)
    stopping: asyncio.Task[Any] = asyncio.create_task(stop.wait())
    if tokens is not None:  # its informers end only by failing: then the replica stops, as a failed loop does
        stopping = asyncio.create_task(_first(stopping, tokens.task))
    code = 0
    try:
        acquiring = asyncio.create_task(elector.acquire())
        await asyncio.wait([acquiring, stopping], return_when=asyncio.FIRST_COMPLETED)
        if tokens is not None and tokens.task.done():
            acquiring.cancel()
            await asyncio.gather(acquiring, return_exceptions=True)
            log.error("the registry token endpoint failed: %s", _failure(tokens.task))
            return 1
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
        if tokens is not None and tokens.task.done():
            log.error("the registry token endpoint failed: %s", _failure(tokens.task))
            code = 1
        elif keeping in done:
            log.error("lost leadership; exiting so that this replica starts again as a standby")
            code = 1
        elif leading in done:
            for failure in leaf_errors(leading.exception()):
                log.error("the controller failed: %s", describe_error(failure), exc_info=failure)
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
        if tokens is not None:
            await tokens.stop()
        await health.cleanup()
        await api.close()
