"""The controller process: leader election, the rollout key, health and metrics, and the loops it leads.

Each loop (``controller.rollouts``, ``controller.databases``, ``controller.registry``) builds a ``frame.Loop``; this
module only chooses which run and runs them in the frame.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import logging
import secrets
import signal
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.databases.config import load_servers
from controller.databases.loop import database_loop
from controller.frame.loop import Loop, leaf_errors, run_loop
from controller.frame.metrics import ControllerMetrics
from controller.frame.secrets import secret_body
from controller.frame.settings import Settings
from controller.leader import LeaderElector
from controller.registry.loop import registry_loop
from controller.rollouts import rollout_loop
from kubeio.client import kube_client
from kubeio.errors import describe
from kubeio.events import record_event
from kubeio.rest import ApiException, get_or_none, json_request
from rules.names import NAME_LABEL, PRODUCT
from rules.secretdata import decode
from rules.workloads import resource_path

log = logging.getLogger(__name__)

HMAC_SECRET_KEY = "key"
HMAC_KEY_BYTES = 32
HMAC_KEY_MIN_BYTES = 16


class RolloutKeyError(Exception):
    """The rollout key's Secret exists but holds no usable key. Not repaired on its own: a new key changes every
    stored digest, which rolls every service that rolls on changes once; deleting the Secret is that decision."""


async def ensure_hmac_key(api: client.ApiClient, namespace: str, name: str) -> bytes:
    """The key of the rollout digests: kept in a Secret so every replica and every restart uses the same one."""
    path = resource_path("Secret", namespace)
    for _ in range(3):
        found = await get_or_none(api, f"{path}/{name}")
        if found is not None:
            problem = rollout_key_problem(found.get("data") or {})
            if problem is None:
                return decode(found["data"][HMAC_SECRET_KEY])
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
        body = secret_body(
            namespace, name, {HMAC_SECRET_KEY: secrets.token_bytes(HMAC_KEY_BYTES)}, labels={NAME_LABEL: PRODUCT}
        )
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
        key = decode(data[HMAC_SECRET_KEY])
    except (binascii.Error, ValueError, TypeError):
        return f'has a "{HMAC_SECRET_KEY}" entry that is not base64'
    if len(key) < HMAC_KEY_MIN_BYTES:
        return f'has a "{HMAC_SECRET_KEY}" entry of {len(key)} bytes, fewer than {HMAC_KEY_MIN_BYTES}'
    return None


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
    hmac_key = await ensure_hmac_key(api, settings.namespace, settings.hmac_secret)
    loops: list[Loop[Any]] = [rollout_loop(api, settings, metrics, hmac_key)]
    if settings.database_config is not None:
        loops.append(database_loop(api, settings, hmac_key, load_servers(settings.database_config)))
    if settings.registry_url is not None and settings.htpasswd_secret is not None:
        loops.append(registry_loop(api, settings))
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
