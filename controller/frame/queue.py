"""A work queue of keys, in the manner of client-go's: de-duplicating, delaying, in two lanes, never running one key
twice at once, with a token bucket for the work that is paced (rollouts, credentials written).

- ``add(key)`` makes a key ready; a key already waiting is not added again; a key being processed is marked
  dirty and comes back once ``done`` is called.
- Two lanes: ``add(key)`` is urgent (a change seen on a watch), ``add(key, background=True)`` is background work
  (every key at start, a resync). ``get()`` takes urgent keys first, so a real change never waits behind a
  resync; a background key that gets an urgent ``add`` moves up.
- ``add_after(key, delay)`` makes it ready later; of several pending delays the earliest wins.
- ``add_settled(key, settle, settle_max)``: a change to coalesce, on a sliding window (``rules.settling``): each
  one pushes the key back to ``settle`` seconds after it, at most ``settle_max`` after the one that opened the
  window. The window closes when the key becomes ready.
- ``retry(key)`` re-adds it, in the lane it was taken from, after a per-key exponential backoff; ``forget(key)``
  resets that backoff.
- ``pace()`` waits for a token of the overall rate limit: the workers take one for each reconcile whose work is
  paced (a rollout, a credential written) or that failed, none for one that found nothing to do or only recorded
  its bookkeeping — a start's thousands of no-op reconciles and state records are not paced like rollouts.

Time comes from an injected clock and sleeps from an injected sleeper, so tests drive it without waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from rules.settling import settle_due

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
        # Ready keys: key → urgent? The lanes may hold stale entries (a key that moved up, or was taken): a lane's
        # entry counts only while ``_queued`` says the key is ready in that lane.
        self._queued: dict[K, bool] = {}
        self._urgent: deque[K] = deque()
        self._background: deque[K] = deque()
        self._processing: dict[K, bool] = {}  # key → taken from the urgent lane?
        self._dirty: dict[K, bool] = {}  # key changed while processed → urgent?
        self._delayed: list[tuple[float, int, K]] = []
        self._waiting: dict[K, float] = {}  # key → when its pending delay ends
        self._waiting_urgent: set[K] = set()
        self._windows: dict[K, float] = {}  # key → when its open settling window began
        self._counter = 0
        self._failures: dict[K, int] = {}
        self._tokens = float(burst)
        self._refilled = clock()
        self._wakeup = asyncio.Event()

    # ---- adding -------------------------------------------------------------------------------------------

    def add(self, key: K, *, background: bool = False) -> None:
        urgent = not background or key in self._waiting_urgent
        self._waiting.pop(key, None)  # ready now: a pending delay for it is moot
        self._waiting_urgent.discard(key)
        self._windows.pop(key, None)
        if key in self._processing:
            self._dirty[key] = self._dirty.get(key, False) or urgent
            return
        queued = self._queued.get(key)
        if queued is None or (urgent and not queued):
            self._queued[key] = urgent
            (self._urgent if urgent else self._background).append(key)
            self._wakeup.set()

    def add_after(self, key: K, delay: float, *, background: bool = False) -> None:
        if delay <= 0:
            self.add(key, background=background)
            return
        self._wait(key, self.clock() + delay, background=background, earliest=True)

    def add_settled(self, key: K, settle: float, settle_max: float) -> None:
        """An urgent change to coalesce with the others to this key on a sliding window (see the module)."""
        if key in self._queued:
            self.add(key)  # it runs soon and sees this change too; up to the urgent lane
            return
        now = self.clock()
        opened, due = settle_due(self._windows.get(key), now, settle, settle_max)
        if due <= now:
            self.add(key)
            return
        pending = self._waiting.get(key)
        if pending is not None and key not in self._windows and pending <= due:
            # A retry or a plain delay is due before the window would close: it runs then and sees this change.
            self._waiting_urgent.add(key)
            return
        self._windows[key] = opened
        self._wait(key, due, background=False, earliest=False)

    def _wait(self, key: K, due: float, *, background: bool, earliest: bool) -> None:
        if key in self._queued:
            if not background:
                self.add(key)
            return
        if not background:
            self._waiting_urgent.add(key)
        if earliest and self._waiting.get(key, float("inf")) <= due:
            return
        self._waiting[key] = due
        self._counter += 1
        heapq.heappush(self._delayed, (due, self._counter, key))
        self._wakeup.set()

    def retry(self, key: K) -> float:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = float(min(self.base_delay * 2.0**failures, self.max_delay))
        self.add_after(key, delay, background=not self._processing.get(key, True))
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    # ---- taking -------------------------------------------------------------------------------------------

    def _promote_due(self) -> None:
        now = self.clock()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._waiting.get(key) == due:
                self.add(key, background=key not in self._waiting_urgent)

    def _take(self, lane: deque[K], urgent: bool) -> K | None:
        while lane:
            key = lane.popleft()
            if self._queued.get(key) is urgent:
                del self._queued[key]
                self._processing[key] = urgent
                return key
        return None

    def try_get(self) -> tuple[K | None, float | None]:
        """A ready key, urgent first, or (None, seconds until one may be ready; None when nothing is pending)."""
        self._promote_due()
        key = self._take(self._urgent, True)
        if key is None:
            key = self._take(self._background, False)
        if key is not None:
            return key, None
        if self._waiting:
            return None, max(0.0, self._delayed[0][0] - self.clock())
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
        self._processing.pop(key, None)
        if key in self._dirty:
            self.add(key, background=not self._dirty.pop(key))

    # ---- the rate limit -----------------------------------------------------------------------------------

    def take_token(self) -> float:
        """Take a token of the overall rate limit: 0 when taken, else how long until one is there (none taken)."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    async def pace(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Wait until a token is taken."""
        while (wait := self.take_token()) > 0:
            await sleep(wait)

    # ---- looking ------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys ready or waiting for a delay (what a queue-depth metric shows)."""
        return len(self._queued) + len(self._waiting)
