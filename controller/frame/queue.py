"""A work queue of keys, in the manner of client-go's: de-duplicating, delaying, rate-limited, never running one key
twice at once.

- ``add(key)`` makes a key ready; a key already waiting is not added again; a key being processed is marked
  dirty and comes back once ``done`` is called.
- ``add_after(key, delay)`` makes it ready later; of several pending delays the earliest wins, so a burst of
  changes within a settling window becomes one run.
- ``retry(key)`` re-adds it after a per-key exponential backoff; ``forget(key)`` resets that backoff.
- ``get()`` waits for a ready key, respecting an overall token-bucket rate limit.

Time comes from an injected clock and sleeps from an injected sleeper, so tests drive it without waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        base_delay: float = 0.1,
        max_delay: float = 120.0,
        rate: float = 200.0,
        burst: int = 500,
    ) -> None:
        self.clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.rate = rate
        self.burst = burst
        self._ready: list[K] = []
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: set[K] = set()
        self._delayed: list[tuple[float, int, K]] = []
        self._waiting: dict[K, float] = {}  # key → when its earliest pending delay ends
        self._counter = 0
        self._failures: dict[K, int] = {}
        self._tokens = float(burst)
        self._refilled = clock()
        self._wakeup = asyncio.Event()

    # ---- adding -------------------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        self._waiting.pop(key, None)  # ready now: a pending delay for it is moot
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)
            self._wakeup.set()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        due = self.clock() + delay
        if key in self._queued or self._waiting.get(key, float("inf")) <= due:
            return
        self._waiting[key] = due
        self._counter += 1
        heapq.heappush(self._delayed, (due, self._counter, key))
        self._wakeup.set()

    def retry(self, key: K) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = float(min(self.base_delay * 2.0**failures, self.max_delay))
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    # ---- taking -------------------------------------------------------------------------------------------

    def _promote_due(self) -> None:
        now = self.clock()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._waiting.get(key) == due:
                del self._waiting[key]
                self.add(key)

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now

    def try_get(self) -> tuple[K | None, float | None]:
        """A ready key, or (None, seconds until one may be ready; None when nothing is pending)."""
        self._promote_due()
        self._refill()
        if self._ready:
            if self._tokens < 1:
                return None, (1 - self._tokens) / self.rate
            self._tokens -= 1
            key = self._ready.pop(0)
            self._queued.discard(key)
            self._processing.add(key)
            return key, None
        if self._waiting:
            return None, max(0.0, min(self._waiting.values()) - self.clock())
        return None, None

    async def get(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> K:
        while True:
            self._wakeup.clear()
            key, wait = self.try_get()
            if key is not None:
                return key
            if wait is None:
                await self._wakeup.wait()
                continue
            waiter = asyncio.ensure_future(self._wakeup.wait())
            sleeper = asyncio.ensure_future(sleep(wait))
            try:
                await asyncio.wait([waiter, sleeper], return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                sleeper.cancel()

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    # ---- looking ------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys ready or waiting for a delay (what a queue-depth metric shows)."""
        return len(self._ready) + len(self._waiting)

    def processing(self, key: K) -> bool:
        return key in self._processing
