"""Failing loudly: a background task that ends makes the process unready and exit non-zero; the controller
reports terminal errors on the object instead of retrying them; a broken rollout key Secret says what is wrong."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from kubernetes_asyncio.client import ApiClient

import controller.main as main
from controller import rollout_key
from controller.frame import loop as frame
from controller.frame.metrics import ControllerMetrics
from controller.frame.queue import WorkQueue
from controller.frame.settings import Settings
from controller.leader import LeaderElector
from devenv.process import free_port
from kubeio import informer as informer_module
from kubeio.informer import Informer
from kubeio.rest import ApiException
from rules.failures import InvalidSpec
from webhook.app import STATE, WebhookState, background, create_app, serve_until_stopped

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]


class Keys:
    """An informer handler that keeps nothing."""

    def replace(self, objects: list[Any]) -> None:
        pass

    def apply(self, event_type: str, obj: Any) -> None:
        pass


def answers(*steps: Any) -> Callable[..., Awaitable[Any]]:
    """A fake ``json_request``: each call takes the next step, raising it if it is an exception."""
    pending = list(steps)

    async def request(api: object, method: str, path: str, **_: Any) -> Any:
        step = pending.pop(0) if pending else ApiException(status=500, reason="no more answers")
        if isinstance(step, BaseException):
            raise step
        return step

    return request


def informer(path: str, **options: float) -> Informer:
    """An informer whose requests the test's fake ``json_request`` answers (no client behind it): it lists in pages
    (the streamed list is a watch; tests/unit/test_informer.py has it)."""
    return Informer(cast(ApiClient, None), path, Keys(), streaming=False, **options)  # type: ignore[arg-type]


EMPTY_LIST = {"items": [], "metadata": {"resourceVersion": "7"}}


# ---- the webhook ------------------------------------------------------------------------------------------------


def with_watches(state: WebhookState, informers: list[Informer]) -> web.Application:
    app = create_app(state)

    async def watches(app: web.Application) -> AsyncIterator[None]:
        state.ready_checks.extend(informer.synced.is_set for informer in informers)
        tasks = [background(state, informer.run(), f"the watch of {informer.path}") for informer in informers]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(watches)
    return app


async def test_a_watch_refused_for_good_makes_the_webhook_unready_and_unhealthy(
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = asyncio.Event()

    async def request(api: object, method: str, path: str, **_: Any) -> Any:
        if path == "/api/v1/namespaces":
            await refused.wait()
            raise ApiException(status=403, reason="Forbidden")
        return EMPTY_LIST

    async def no_watch(*args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()
        yield {}

    monkeypatch.setattr(informer_module, "json_request", request)
    monkeypatch.setattr(informer_module, "stream_json_lines", no_watch)
    state = WebhookState()
    informers = [informer("/api/v1/secrets"), informer("/api/v1/namespaces")]
    client = await aiohttp_client(with_watches(state, informers))
    await informers[0].synced.wait()
    assert (await client.get("/readyz")).status == 503  # the namespaces have not listed yet

    refused.set()
    await state.failed.wait()
    ready = await client.get("/readyz")
    healthy = await client.get("/healthz")

    assert ready.status == 503
    assert healthy.status == 503
    assert await ready.text() == "the watch of /api/v1/namespaces ended: HTTP 403 Forbidden"


async def test_a_watch_whose_connection_breaks_reconnects_and_the_webhook_stays_ready(
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    watched = asyncio.Event()

    async def watch(*args: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        if not watched.is_set():
            watched.set()
            raise ConnectionResetError()
        await asyncio.Event().wait()
        yield {}

    monkeypatch.setattr(informer_module, "json_request", answers(ApiException(status=503), EMPTY_LIST))
    monkeypatch.setattr(informer_module, "stream_json_lines", watch)
    state = WebhookState()
    informers = [informer("/api/v1/secrets", max_backoff=0.01)]
    client = await aiohttp_client(with_watches(state, informers))
    await informers[0].synced.wait()
    await watched.wait()

    assert (await client.get("/readyz")).status == 200
    assert state.failure is None


async def test_a_background_task_that_ends_at_all_is_a_failure() -> None:
    state = WebhookState()

    async def returns() -> None:
        return None

    await asyncio.gather(background(state, returns(), "the certificate file watch"))
    await asyncio.wait_for(state.failed.wait(), 5)

    assert state.failure == "the certificate file watch ended"


async def test_a_cancelled_background_task_is_no_failure() -> None:
    state = WebhookState()
    task = background(state, asyncio.Event().wait(), "the watch of /api/v1/pods")  # type: ignore[arg-type]
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert state.failure is None
    assert not state.failed.is_set()


def failing_after_start(state: WebhookState, go: asyncio.Event) -> web.Application:
    app = create_app(state)

    async def broken() -> None:
        await go.wait()
        raise ApiException(status=401, reason="Unauthorized")

    async def context(app: web.Application) -> AsyncIterator[None]:
        task = background(app[STATE], broken(), "the watch of /api/v1/secrets")
        yield
        task.cancel()

    app.cleanup_ctx.append(context)
    return app


async def test_the_server_exits_non_zero_when_a_background_task_fails() -> None:
    go = asyncio.Event()
    state = WebhookState()
    serving = asyncio.create_task(
        serve_until_stopped(failing_after_start(state, go), host="127.0.0.1", port=0, signals=())
    )
    await asyncio.sleep(0.1)
    assert not serving.done()

    go.set()

    assert await asyncio.wait_for(serving, 30) == 1


async def test_the_server_exits_zero_on_a_signal() -> None:
    state = WebhookState()
    serving = asyncio.create_task(
        serve_until_stopped(
            failing_after_start(state, asyncio.Event()), host="127.0.0.1", port=0, signals=(signal.SIGUSR1,)
        )
    )
    await asyncio.sleep(0.1)
    os.kill(os.getpid(), signal.SIGUSR1)

    assert await asyncio.wait_for(serving, 30) == 0


async def test_after_a_signal_the_server_is_unready_but_serves_until_the_drain_period_ends() -> None:
    port = free_port()
    state = WebhookState()
    serving = asyncio.create_task(
        serve_until_stopped(
            failing_after_start(state, asyncio.Event()),
            host="127.0.0.1",
            port=port,
            signals=(signal.SIGUSR1,),
            drain_seconds=2.0,
        )
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(50):
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as answer:
                    if answer.status == 200:
                        break
            await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.3)

        async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
            assert answer.status == 503
            assert "draining" in await answer.text()
        async with session.get(f"http://127.0.0.1:{port}/healthz") as answer:
            assert answer.status == 200
        assert not serving.done()

    assert await asyncio.wait_for(serving, 30) == 0


# ---- the controller ---------------------------------------------------------------------------------------------


class Reconciles:
    def __init__(self, *errors: Exception | None) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.reported: list[tuple[str, str]] = []

        self.busy = False  # inside a reconcile or its failure report

    async def reconcile(self, key: str) -> None:
        self.calls += 1
        error = self.errors.pop(0) if self.errors else None
        self.busy = error is not None  # a failure is reported next
        if error is not None:
            raise error

    async def failed(self, key: str, message: str) -> None:
        self.reported.append((key, message))
        self.busy = False


def one_loop(reconciles: Reconciles) -> frame.Loop[str]:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.001)
    return frame.Loop("test", queue, [], reconciles.reconcile, reconciles.failed)


async def run_until_quiet(loop: frame.Loop[str], reconciles: Reconciles) -> None:
    worker = asyncio.create_task(frame.work(loop, ControllerMetrics()))
    try:
        for _ in range(200):
            await asyncio.sleep(0.005)
            if not len(loop.queue) and not reconciles.busy:
                await asyncio.sleep(0.05)
                if not len(loop.queue):
                    return
        raise AssertionError("the queue never went quiet")
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        pytest.param(ApiException(status=403, reason="Forbidden"), "HTTP 403 Forbidden", id="403"),
        pytest.param(
            ApiException(status=422, reason="Unprocessable Entity"), "HTTP 422 Unprocessable Entity", id="422"
        ),
        pytest.param(InvalidSpec("rotateEvery 'a week' is not a duration"), "InvalidSpec: rotateEvery", id="spec"),
    ],
)
async def test_a_terminal_error_is_reported_on_the_object_and_not_retried(error: Exception, message: str) -> None:
    reconciles = Reconciles(error)
    loop = one_loop(reconciles)
    loop.queue.add("db")

    await run_until_quiet(loop, reconciles)

    assert reconciles.calls == 1
    assert len(reconciles.reported) == 1
    assert reconciles.reported[0][0] == "db"
    assert reconciles.reported[0][1].startswith(message)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ApiException(status=409, reason="Conflict"), id="409"),
        pytest.param(ApiException(status=429, reason="Too Many Requests"), id="429"),
        pytest.param(ApiException(status=503, reason="Service Unavailable"), id="503"),
        pytest.param(TimeoutError(), id="timeout"),
        pytest.param(ConnectionResetError(), id="connection"),
        pytest.param(KeyError("a bug, or another system's error"), id="unexpected"),
    ],
)
async def test_a_transient_or_unexpected_error_is_retried_and_not_reported(error: Exception) -> None:
    reconciles = Reconciles(error, error)
    loop = one_loop(reconciles)
    loop.queue.add("db")

    await run_until_quiet(loop, reconciles)

    assert reconciles.calls == 3
    assert reconciles.reported == []


async def test_a_loop_whose_informer_fails_for_good_ends_with_that_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer_module, "json_request", answers(ApiException(status=404, reason="Not Found")))
    databases = informer("/apis/smll.io/v1alpha1/databases")
    loop: frame.Loop[str] = frame.Loop("databases", WorkQueue(), [databases], Reconciles().reconcile)

    with pytest.raises(ExceptionGroup) as failed:
        await asyncio.wait_for(frame.run_loop(loop, ControllerMetrics(), workers=2), 30)

    assert [(type(error), getattr(error, "status", None)) for error in frame.leaf_errors(failed.value)] == [
        (ApiException, 404)
    ]


async def test_the_controller_exits_non_zero_and_never_leads_when_acquiring_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    led = []

    class Api:
        async def close(self) -> None:
            pass

    class Health:
        async def cleanup(self) -> None:
            pass

    async def kube_client(*args: Any) -> Api:
        return Api()

    async def serve_health(*args: Any) -> Health:
        return Health()

    async def lead(*args: Any) -> None:
        led.append(True)

    async def refused(self: Any) -> bool:
        raise ApiException(status=403, reason="Forbidden")

    monkeypatch.setattr(main, "kube_client", kube_client)
    monkeypatch.setattr(main, "serve_health", serve_health)
    monkeypatch.setattr(main, "lead", lead)
    monkeypatch.setattr(LeaderElector, "try_acquire_or_renew", refused)

    code = await asyncio.wait_for(main.run(Settings()), 30)
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().remove_signal_handler(sig)

    assert code == 1
    assert led == []


# ---- the rollout key --------------------------------------------------------------------------------------------

CANARY = base64.b64encode(b"canary-value-never-shown").decode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param({"other": CANARY}, 'has no "key" entry (its entries: other)', id="no-key-entry"),
        pytest.param({}, 'has no "key" entry (its entries: none)', id="no-data"),
        pytest.param({"key": "%%%"}, 'has a "key" entry that is not base64', id="not-base64"),
        pytest.param({"key": base64.b64encode(b"short").decode()}, "of 5 bytes, fewer than 16", id="too-short"),
        pytest.param({"key": base64.b64encode(b"k" * 32).decode()}, None, id="good"),
    ],
)
def test_what_is_wrong_with_the_rollout_key_is_said_without_its_value(
    data: dict[str, str], problem: str | None
) -> None:
    found = rollout_key.rollout_key_problem(data)

    assert found is None if problem is None else (found is not None and problem in found)
    assert CANARY not in (found or "")
    assert "canary" not in (found or "")


async def test_a_rollout_key_secret_without_its_key_stops_the_controller_with_an_event_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[dict[str, Any]] = []
    secret = {"metadata": {"name": "smll-secrets-rollout-key", "uid": "u1"}, "data": {"other": CANARY}}

    async def request(api: object, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        if method == "POST" and path.endswith("/events"):
            events.append(body)
            return body
        assert method == "GET", "a Secret whose key is missing is never overwritten"
        return secret

    monkeypatch.setattr("kubeio.rest.json_request", request)
    monkeypatch.setattr("kubeio.events.json_request", request)

    with pytest.raises(rollout_key.RolloutKeyError) as error:
        await rollout_key.ensure_rollout_key(None, "smll-system", "smll-secrets-rollout-key")  # type: ignore[arg-type]

    assert 'the rollout key Secret smll-system/smll-secrets-rollout-key has no "key" entry' in str(error.value)
    assert "kubectl -n smll-system delete secret smll-secrets-rollout-key" in str(error.value)
    assert [(e["reason"], e["type"], e["involvedObject"]["uid"]) for e in events] == [
        ("RolloutKeyInvalid", "Warning", "u1")
    ]
    assert CANARY not in json.dumps(events) + str(error.value)
