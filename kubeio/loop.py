"""The event loop both processes run on: uvloop's.

Its sockets, TLS and timers are in C (libuv and Cython) instead of asyncio's Python ``SSLProtocol`` and selector
loop. Measured on one process on one core (docs/benchmarks.md): the webhook's ``/validate`` of an 8 KB review
(parsed and allowed) went from 4,140 to 6,418 requests per CPU-second, an empty ``/healthz`` from 10,162 to 20,931.
The code is the same asyncio code; only the loop under it changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a uvloop loop."""
    with asyncio.Runner(loop_factory=new_loop) as runner:
        return runner.run(main)
