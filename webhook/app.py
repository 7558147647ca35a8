"""The aiohttp edge: decode the body, call the pure admission functions, encode the answer.

A body that is not a review we can judge gets HTTP 400 with the reason; a refused operation is a normal 200
response with ``allowed: false``. Linking (``/mutate``) makes no API call: what it needs is in memory from watches.
Protection (``/validate``) confirms a delete it would allow with a consistent read (webhook/validate.py).

Who may ask is settled before any of that: with ``webhook.clientAuth`` the admission port's TLS requires the
apiserver's webhook client certificate (webhook/tls.py), and ``allowed_clients`` narrows it to the names given.
Health and metrics can have a port of their own (``health_app``), which judges nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubeio.errors import describe_error
from webhook.admission import AdmissionRequest, AdmissionResponse, BadReview, deny, mutate, parse_review, review
from webhook.metrics import Metrics
from webhook.secret_keys import SecretKeyIndex
from webhook.tls import common_names
from webhook.validate import ProtectionView, validate

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024
BODY_TIMEOUT_SECONDS = 10.0


@dataclass
class WebhookState:
    """What the handlers read: the in-memory indexes (kept by watches elsewhere) and the readiness checks.

    ``failure`` says which background task ended (none should, while the process runs); from then on the process
    is neither ready nor live, and ``failed`` tells whoever runs the server to stop it with a non-zero code."""

    secret_keys: SecretKeyIndex = field(default_factory=SecretKeyIndex)
    protection: ProtectionView = field(default_factory=ProtectionView)
    metrics: Metrics = field(default_factory=Metrics)
    ready_checks: list[Callable[[], bool]] = field(default_factory=list)
    # Not empty: a review is judged only when the client certificate's common name is one of these.
    allowed_clients: frozenset[str] = frozenset()
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout: float = BODY_TIMEOUT_SECONDS
    failure: str | None = None
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    draining: bool = False  # asked to stop: not ready any more, still serving until the drain period ends

    def fail(self, failure: str) -> None:
        if self.failure is None:
            self.failure = failure
            log.error("%s; the webhook is not ready any more and stops", failure)
        self.failed.set()


def background(state: WebhookState, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Start a task meant to run as long as the server: the watches behind the indexes, certificate renewal. If it
    ends — with an error, or at all — the state fails (see ``WebhookState``). Cancelling it is not a failure."""
    task = asyncio.create_task(work, name=name)

    def ended(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        state.fail(f"{name} ended" + (f": {describe_error(error)}" if error is not None else ""))

    task.add_done_callback(ended)
    return task


STATE = web.AppKey("state", WebhookState)
Decide = Callable[[WebhookState, AdmissionRequest], Awaitable[AdmissionResponse]]


def _outcome(response: AdmissionResponse) -> str:
    if not response["allowed"]:
        return "denied"
    return "patched" if "patch" in response else "allowed"


def admission_handler(name: str, decide: Decide) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        started = time.perf_counter()
        if state.allowed_clients and not _allowed_client(request, state.allowed_clients):
            state.metrics.reviews.labels(name, "", "unauthorized").inc()
            raise web.HTTPForbidden(text="this port judges reviews of the apiserver's webhook client only")
        try:
            async with asyncio.timeout(state.body_timeout):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            state.metrics.reviews.labels(name, "", "bad_request").inc()
            raise web.HTTPBadRequest(text=f"body larger than {state.max_body_bytes} bytes") from None
        except TimeoutError:
            state.metrics.reviews.labels(name, "", "bad_request").inc()
            raise web.HTTPBadRequest(text=f"body not received within {state.body_timeout:.0f}s") from None
        try:
            admission = parse_review(body)
        except BadReview as error:
            state.metrics.reviews.labels(name, "", "bad_request").inc()
            raise web.HTTPBadRequest(text=f"not an AdmissionReview we can judge: {error}") from None
        try:
            response = await decide(state, admission)
        except Exception:
            # A bug of ours: answer with a well-formed refusal instead of a 500, and keep the traceback in the log.
            log.exception("%s failed on %s %s", name, admission["operation"], admission["kind"]["kind"])
            response = deny(admission["uid"], f"internal error in the {name} webhook; see its log", code=500)
        state.metrics.reviews.labels(name, admission["operation"], _outcome(response)).inc()
        state.metrics.duration.labels(name).observe(time.perf_counter() - started)
        return web.Response(body=orjson.dumps(review(response)), content_type="application/json")

    return handle


def _allowed_client(request: web.Request, allowed: frozenset[str]) -> bool:
    transport = request.transport
    return bool(common_names(transport.get_extra_info("peercert") if transport is not None else None) & allowed)


async def healthz(request: web.Request) -> web.Response:
    failure = request.app[STATE].failure
    if failure is not None:
        return web.Response(status=503, text=failure)
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.failure is not None:
        return web.Response(status=503, text=state.failure)
    if state.draining:
        return web.Response(status=503, text="stopping: draining")
    if all(check() for check in state.ready_checks):
        return web.Response(text="ok")
    return web.Response(status=503, text="caches not synced yet")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[STATE].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _mutate(state: WebhookState, admission: AdmissionRequest) -> AdmissionResponse:
    return mutate(admission, state.secret_keys)


async def _validate(state: WebhookState, admission: AdmissionRequest) -> AdmissionResponse:
    return await validate(admission, state.protection)


async def serve_until_stopped(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
    drain_seconds: float = 0.0,
    more_apps: Sequence[tuple[web.Application, int, ssl.SSLContext | None]] = (),
) -> int:
    """Serve until a signal (exit code 0) or until a background task ends (1), then shut down gracefully.

    ``more_apps`` are served beside ``app``, each on its own port with its own TLS (or none): what one port answers
    is never reachable on another. ``app`` holds the state and the background work.

    After a signal the server answers ``/readyz`` with 503 and goes on serving for ``drain_seconds``: the pod leaves
    the Service's endpoints a moment after it is told to stop, and until then the API server still sends it reviews
    (with ``failurePolicy: Fail``, a closed port would refuse them)."""
    state = app[STATE]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    runners = [web.AppRunner(app, access_log=None)]
    await runners[0].setup()  # the app's cleanup contexts: the watches, the certificate
    try:
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        for more, _, _ in more_apps:
            runners.append(web.AppRunner(more, access_log=None))
            await runners[-1].setup()
        sites = [(port, ssl_context)] + [(more_port, context) for _, more_port, context in more_apps]
        for runner, (site_port, context) in zip(runners, sites, strict=True):
            site = web.TCPSite(runner, host, site_port, ssl_context=context)
            await site.start()
            log.info("serving on %s", site.name)
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(state.failed.wait())
        try:
            await asyncio.wait([stopping, failing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            failing.cancel()
        if stop.is_set() and state.failure is None and drain_seconds > 0:
            state.draining = True
            log.info("stopping: serving %.0fs more while the pod leaves the Service's endpoints", drain_seconds)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(state.failed.wait(), drain_seconds)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for runner in reversed(runners):
            await runner.cleanup()
    return 1 if state.failure is not None else 0


def create_app(state: WebhookState | None = None, *, health: bool = True) -> web.Application:
    """The admission app: ``/mutate`` and ``/validate``, and unless ``health`` is False (they are on a port of their
    own, ``health_app``), ``/healthz``, ``/readyz`` and ``/metrics``."""
    state = state or WebhookState()
    app = web.Application(client_max_size=state.max_body_bytes)
    app[STATE] = state
    app.router.add_post("/mutate", admission_handler("mutate", _mutate))
    app.router.add_post("/validate", admission_handler("validate", _validate))
    if health:
        _add_health_routes(app)
    return app


def health_app(state: WebhookState) -> web.Application:
    """``/healthz``, ``/readyz`` and ``/metrics`` of ``state`` and nothing else: a port for probes that judges no
    review."""
    app = web.Application()
    app[STATE] = state
    _add_health_routes(app)
    return app


def _add_health_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
