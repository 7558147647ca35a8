"""Running the admission server: settings, the Kubernetes watches that fill its indexes, TLS, and the listener."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

from kubeio import loop
from kubeio.client import kube_client
from kubeio.informer import Informer
from kubeio.rest import raw_request
from rules.secretsapi import DEFAULT_STALE_AFTER
from rules.workloads import POD_KINDS, resource_path
from webhook.app import STATE, WebhookState, background, create_app, health_app, serve_until_stopped
from webhook.secretsapi import SecretsApi, add_routes
from webhook.selfmanaged import SelfManagedCertificate, SelfManagedSettings
from webhook.tls import APISERVER, ClientCAFile, ReloadingCertificate
from webhook.validate import CoalescedReads, Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    cert_file: Path
    key_file: Path
    host: str = "0.0.0.0"  # noqa: S104 - a webhook in a pod listens on the pod's address
    port: int = 8443
    kubeconfig: Path | None = None  # None: the in-cluster service account
    cert_reload_seconds: float = 10.0
    # None: the certificate files come from elsewhere (cert-manager, a mounted Secret). Otherwise the webhook
    # issues them itself into self_managed.directory, and cert_file and key_file point there.
    self_managed: SelfManagedSettings | None = None
    drain_seconds: float = 5.0
    api_port: int = 0  # the write-only Secrets API's listener (client certificates required); 0: not served
    stale_after: datetime.timedelta = DEFAULT_STALE_AFTER
    # Set: the admission port requires the apiserver's webhook client certificate, signed by this CA (reloaded when
    # the file changes), and with one of ``allowed_clients`` as its common name when that is not empty.
    client_ca_file: Path | None = None
    allowed_clients: frozenset[str] = frozenset()
    # Not 0: /healthz, /readyz and /metrics are served here (plain HTTP, for the kubelet's probes and scrapers) and
    # not on the admission port, which then answers reviews only.
    health_port: int = 0
    api_allowed_types: frozenset[str] = frozenset()  # Secret types the write-only API writes beside Opaque


def watches(
    settings: Settings, secrets_api: SecretsApi | None, tls: ReloadingCertificate
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the informers that keep the in-memory indexes, for as long as the app runs (and the
    write-only API's watch of the front proxy's settings, when it is served)."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        state = app[STATE]
        api = await kube_client(settings.kubeconfig)
        informers = [
            Informer(api, "/api/v1/secrets", state.secret_keys),
            Informer(api, "/api/v1/namespaces", state.protection.terminating),
            *(
                Informer(api, resource_path(kind), state.protection.referrers.handler(kind))
                for kind in sorted(POD_KINDS)
            ),
        ]
        state.ready_checks.extend(informer.synced.is_set for informer in informers)
        state.protection.consistent_read = CoalescedReads(partial(consistent_snapshot, api))
        state.protection.json_read = partial(json_pages, api)
        tasks = [background(state, informer.run(), f"the watch of {informer.path}") for informer in informers]
        if secrets_api is not None:
            secrets_api.api = api
            tasks.append(background(state, secrets_api.watch_front_proxy(tls), "the front proxy's settings"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await api.close()

    return run


# Protobuf where the API serves it (every built-in kind), JSON otherwise (a custom resource).
PROTOBUF_OR_JSON = "application/vnd.kubernetes.protobuf, application/json"


async def consistent_snapshot(api: client.ApiClient, namespace: str) -> Snapshot:
    """Every referrer kind's LIST of ``namespace``, read now (no resourceVersion: a consistent read), undecoded:
    one answer per kind, in protobuf, which the apiserver encodes in about a third of the time of JSON pages
    (docs/benchmarks.md). It is only searched for a Secret's name; a kind that mentions it is read again as JSON
    (``json_pages``) to be decoded."""

    async def of_kind(kind: str) -> tuple[str, bytes]:
        return kind, await raw_request(api, "GET", resource_path(kind, namespace), accept=PROTOBUF_OR_JSON)

    return list(await asyncio.gather(*(of_kind(kind) for kind in sorted(POD_KINDS))))


async def json_pages(api: client.ApiClient, namespace: str, kind: str) -> list[bytes]:
    """One kind's LIST of ``namespace`` as JSON pages, read now (a consistent read), undecoded."""
    pages: list[bytes] = []
    token = ""
    while True:
        query: dict[str, str | int | bool] = {"limit": 500, **({"continue": token} if token else {})}
        page = await raw_request(api, "GET", resource_path(kind, namespace), query=query)
        pages.append(page)
        token = _continue_token(page)
        if not token:
            return pages


def _continue_token(page: bytes) -> str:
    """The list's continue token, without decoding the whole page (it sits in the list's metadata)."""
    head = page[: page.find(b'"items"')] if b'"items"' in page else page
    marker = b'"continue":"'
    start = head.find(marker)
    if start < 0:
        return ""
    start += len(marker)
    return head[start : head.find(b'"', start)].decode()


def watching(
    watch: Callable[[], Coroutine[Any, Any, None]], what: str
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that runs ``watch()`` as long as the app: a failure of it fails the webhook's state."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        task = background(app[STATE], watch(), what)
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return run


def file_watch(settings: Settings, tls: ReloadingCertificate) -> Callable[[web.Application], AsyncIterator[None]]:
    """Load the certificate files again whenever they change."""
    return watching(lambda: tls.watch(settings.cert_reload_seconds), "the certificate file watch")


def self_managed_certificate(
    settings: Settings, managed: SelfManagedSettings, tls: ReloadingCertificate
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: have a certificate before the listener opens, then keep it renewed."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        api = await kube_client(settings.kubeconfig)
        manager = SelfManagedCertificate(api, managed)
        try:
            await manager.reconcile()
            tls.reload()
            task = background(app[STATE], manager.run(tls), "the certificate renewal")
            try:
                yield
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await api.close()

    return run


def client_ca_watch(settings: Settings, trust: ClientCAFile) -> Callable[[web.Application], AsyncIterator[None]]:
    """Trust the apiserver's webhook client CA anew whenever its file changes."""
    return watching(lambda: trust.watch(settings.cert_reload_seconds), "the client CA file watch")


@dataclass(frozen=True)
class Listeners:
    """The admission app and what is served beside it, each on its own port: the write-only API, health."""

    admission: web.Application
    context: ssl.SSLContext
    more: list[tuple[web.Application, int, ssl.SSLContext | None]]


def build_app(settings: Settings, tls: ReloadingCertificate) -> Listeners:
    state = WebhookState(allowed_clients=settings.allowed_clients)
    app = create_app(state, health=not settings.health_port)
    more: list[tuple[web.Application, int, ssl.SSLContext | None]] = []
    secrets_api = None
    if settings.api_port:
        secrets_api = SecretsApi(
            state.protection.referrers, stale_after=settings.stale_after, allowed_types=settings.api_allowed_types
        )
        api = web.Application(client_max_size=state.max_body_bytes)
        add_routes(api, secrets_api)
        more.append((api, settings.api_port, tls.client_verifying))
    if settings.health_port:
        more.append((health_app(state), settings.health_port, None))
    context = tls.context
    if settings.client_ca_file is not None:
        trust = ClientCAFile(tls, settings.client_ca_file, APISERVER)
        trust.load()  # the file must be there at start: without it the port would accept nobody
        app.cleanup_ctx.append(client_ca_watch(settings, trust))
        context = tls.verifying(APISERVER)
    if settings.self_managed is None:
        app.cleanup_ctx.append(file_watch(settings, tls))
    else:
        app.cleanup_ctx.append(self_managed_certificate(settings, settings.self_managed, tls))
    app.cleanup_ctx.append(watches(settings, secrets_api, tls))
    return Listeners(app, context, more)


def serve(settings: Settings) -> int:
    """Serve until stopped; the exit code is 1 when a background task ended (see ``WebhookState``)."""
    tls = ReloadingCertificate(settings.cert_file, settings.key_file)
    if settings.self_managed is None:
        tls.reload()  # the files must be there at start; in self-managed mode they are written before listening
    listeners = build_app(settings, tls)
    return loop.run(
        serve_until_stopped(
            listeners.admission,
            host=settings.host,
            port=settings.port,
            ssl_context=listeners.context,
            drain_seconds=settings.drain_seconds,
            more_apps=listeners.more,
        )
    )
