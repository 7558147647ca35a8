"""A loop: informers that keep its caches and feed its queue, and the reconcile of one key, run by workers.

A reconcile may say whether its work is paced (``False``: it found nothing to do, or wrote only bookkeeping that
the rate limit is not meant for); the workers take a token of the queue's rate limit after each one that said
``True``, failed, or did not say.

The workers apply the error model (``frame.failures``) to every reconcile the same way: a conflict is retried
quietly, a transient failure with per-key backoff; a terminal one is reported on the object (``failed``) and not
retried — the next change to the object brings its key back; anything else is logged in full and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from controller.frame.failures import Failure, classify
from controller.frame.logs import outcome, reconcile_logger, reconciling
from controller.frame.metrics import ControllerMetrics
from controller.frame.queue import WorkQueue
from kubeio.errors import describe_error
from kubeio.informer import Informer

log = logging.getLogger(__name__)
reconcile_log = reconcile_logger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass
class Loop(Generic[K]):
    """One controller loop. ``failed`` tells the user that a key failed for good (a status condition where the
    object has one, and an Event); without it the failure is only logged."""

    name: str
    queue: WorkQueue[K]
    informers: list[Informer]
    reconcile: Callable[[K], Awaitable[bool | None]]
    failed: Callable[[K, str], Awaitable[None]] | None = None


async def work(loop: Loop[Any], metrics: ControllerMetrics) -> None:
    """Take keys and reconcile them, one at a time, until cancelled."""
    queue = loop.queue
    while True:
        key = await queue.get()
        started = time.perf_counter()
        paced: bool | None = None
        with reconciling(loop.name, key):
            try:
                paced = await loop.reconcile(key)
            except Exception as error:
                await handle_failure(loop, metrics, key, error)
            else:
                queue.forget(key)
                reconcile_log.debug("%s: reconciled %s", loop.name, key, extra=outcome("done"))
            finally:
                queue.done(key)
                metrics.reconcile_duration.labels(loop.name).observe(time.perf_counter() - started)
                metrics.queue_depth.labels(loop.name).set(len(queue))
        if paced is False:
            # Not paced (nothing written, or only a recorded state), and maybe nothing awaited: let the watches
            # run (a change must not wait for a whole start's worth of such reconciles to be done).
            await asyncio.sleep(0)
        else:
            await queue.pace()


async def handle_failure(loop: Loop[Any], metrics: ControllerMetrics, key: Any, error: Exception) -> None:
    queue = loop.queue
    failure = classify(error)
    if failure is Failure.CONFLICT:
        delay = queue.retry(key)
        reconcile_log.debug("%s: conflict on %s; retrying in %.2fs", loop.name, key, delay, extra=outcome("conflict"))
        return
    metrics.reconcile_errors.labels(loop.name).inc()
    if failure is Failure.TRANSIENT:
        delay = queue.retry(key)
        reconcile_log.warning(
            "%s: reconcile of %s failed (%s); retrying in %.2fs",
            loop.name,
            key,
            describe_error(error),
            delay,
            extra=outcome("retry"),
        )
        return
    if failure is Failure.TERMINAL:
        queue.forget(key)
        reconcile_log.error(
            "%s: reconcile of %s failed for good, not retried: %s",
            loop.name,
            key,
            describe_error(error),
            extra=outcome("failed"),
        )
        if loop.failed is not None:
            try:
                await loop.failed(key, describe_error(error))
            except Exception as reporting:
                reconcile_log.warning(
                    "%s: could not report the failure of %s: %s",
                    loop.name,
                    key,
                    describe_error(reporting),
                    extra=outcome("failed"),
                )
        return
    delay = queue.retry(key)
    reconcile_log.error(
        "%s: reconcile of %s failed; retrying in %.2fs", loop.name, key, delay, exc_info=error, extra=outcome("error")
    )


def release_free_memory() -> None:
    """Ask glibc to return freed heap to the OS (a no-op where there is no glibc)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def run_loop(loop: Loop[Any], metrics: ControllerMetrics, workers: int) -> None:
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
