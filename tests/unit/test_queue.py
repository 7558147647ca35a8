"""The work queue, driven by an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from controller.frame.loop import Loop, work
from controller.frame.metrics import ControllerMetrics
from controller.frame.queue import WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def drain(queue: WorkQueue[str]) -> list[str]:
    taken: list[str] = []
    while True:
        key, _ = queue.try_get()
        if key is None:
            return taken
        taken.append(key)


def test_a_key_added_many_times_is_processed_once(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    for key in ["a", "b", "a", "a", "b"]:
        queue.add(key)

    assert drain(queue) == ["a", "b"]


def test_a_key_is_never_handed_out_twice_at_once_and_comes_back_when_done(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add("a")
    assert queue.try_get()[0] == "a"

    queue.add("a")  # changed while being processed

    assert queue.try_get() == (None, None)
    queue.done("a")
    assert queue.try_get()[0] == "a"
    queue.done("a")
    assert queue.try_get() == (None, None)


def test_add_after_waits_and_the_earliest_delay_wins(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 5)
    queue.add_after("a", 2)

    assert queue.try_get() == (None, 2)
    clock.now += 2
    assert drain(queue) == ["a"]
    queue.done("a")
    clock.now += 3
    assert drain(queue) == []


def test_add_after_then_add_runs_the_key_now_and_only_once(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add_after("a", 5)
    queue.add("a")

    assert drain(queue) == ["a"]
    queue.done("a")
    clock.now += 5
    assert drain(queue) == []  # the pending delay was made moot by the add
    assert len(queue) == 0


def test_add_after_then_add_while_processing_runs_it_once_more_when_done(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add("a")
    assert queue.try_get()[0] == "a"
    queue.add_after("a", 5)
    queue.add("a")

    queue.done("a")
    assert drain(queue) == ["a"]
    queue.done("a")
    clock.now += 5
    assert drain(queue) == []


def test_changes_within_the_settling_window_become_one_run(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    for _ in range(5):
        queue.add_after("web", 2)
        clock.now += 0.3

    clock.now += 1
    assert drain(queue) == ["web"]
    queue.done("web")
    clock.now += 10
    assert drain(queue) == []


def test_retry_backs_off_exponentially_per_key_until_forgotten(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock, base_delay=0.1, max_delay=1.0)

    delays = [queue.retry("a") for _ in range(6)]
    other = queue.retry("b")
    queue.forget("a")

    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert other == 0.1
    assert queue.retry("a") == 0.1


def test_the_overall_rate_limit_spaces_out_tokens_not_keys(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock, rate=10, burst=2)
    for key in "abcd":
        queue.add(key)

    assert drain(queue) == ["a", "b", "c", "d"]  # taking a key costs nothing: only writes are paced
    assert [queue.take_token() for _ in range(3)] == [0, 0, pytest.approx(0.1)]
    clock.now += 0.1
    assert queue.take_token() == 0


def test_urgent_keys_go_ahead_of_background_ones_and_a_background_key_moves_up(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    for key in ["s1", "s2", "s3", "s4"]:
        queue.add(key, background=True)
    queue.add("changed")
    queue.add("s3")  # a change seen on a watch for a key already waiting in the background
    queue.add("s1", background=True)  # already waiting: nothing

    assert drain(queue) == ["changed", "s3", "s1", "s2", "s4"]
    assert len(queue) == 0


def test_a_key_changed_while_processed_comes_back_in_the_lane_of_the_change(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add("a", background=True)
    queue.add("b", background=True)
    assert queue.try_get()[0] == "a"
    queue.add("a")  # urgent, while processed

    queue.done("a")

    assert drain(queue) == ["a", "b"]


def test_a_retry_keeps_the_lane_the_key_was_taken_from(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock, base_delay=1)
    queue.add("urgent")
    queue.add("quiet", background=True)
    assert drain(queue) == ["urgent", "quiet"]
    queue.retry("quiet")
    queue.retry("urgent")
    queue.done("quiet")
    queue.done("urgent")
    queue.add("other", background=True)
    clock.now += 1

    assert drain(queue) == ["urgent", "other", "quiet"]  # "quiet" back in the background lane, after "other"


@pytest.mark.parametrize(
    ("changes", "runs"),
    [
        pytest.param([0.0], [2.0], id="one-change-runs-a-window-later"),
        pytest.param([0.0, 1.5, 3.0, 4.5], [6.5], id="a-burst-longer-than-the-window-slides-to-one-run"),
        pytest.param([0.0, 2.5], [2.0, 4.5], id="changes-further-apart-than-the-window-run-twice"),
        pytest.param(
            [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5, 12.0],
            [10.0, 14.0],
            id="the-maximum-delay-ends-a-window-and-what-follows-opens-the-next",
        ),
    ],
)
def test_settled_changes_slide_the_run_back_up_to_the_maximum_delay(
    clock: Clock, changes: list[float], runs: list[float]
) -> None:
    """Window 2 s, at most 10 s: the times are seconds from the first change; each run is done at once."""
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    start = clock.now
    seen: list[float] = []
    events = [(moment, "change") for moment in changes]
    moment = 0.0
    while moment <= 30:
        clock.now = start + moment
        for at, _ in events:
            if at == moment:
                queue.add_settled("web", 2, 10)
        for key in drain(queue):
            seen.append(moment)
            queue.done(key)
        moment = round(moment + 0.5, 1)

    assert seen == runs


def test_a_settled_change_to_a_ready_key_runs_with_it_and_moves_it_up(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add("other", background=True)
    queue.add("web", background=True)
    queue.add_settled("web", 2, 10)

    assert drain(queue) == ["web", "other"]
    queue.done("web")
    clock.now += 10
    assert drain(queue) == []


def test_a_settled_change_while_processed_runs_once_more_after_its_window(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock)
    queue.add("web")
    assert queue.try_get()[0] == "web"
    queue.add_settled("web", 2, 10)
    clock.now += 2
    assert drain(queue) == []  # still processed
    queue.done("web")

    assert drain(queue) == ["web"]


def test_a_settled_change_does_not_postpone_an_earlier_retry(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock, base_delay=0.5)
    queue.add("web")
    assert queue.try_get()[0] == "web"
    queue.retry("web")
    queue.done("web")
    queue.add_settled("web", 2, 10)

    clock.now += 0.5
    assert drain(queue) == ["web"]
    queue.done("web")
    clock.now += 10
    assert drain(queue) == []


async def test_get_wakes_up_when_a_key_is_added() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()

    queue.add("a")

    assert await asyncio.wait_for(getter, 1) == "a"


async def test_the_workers_pace_writes_and_not_the_reconciles_that_find_nothing_to_do() -> None:
    """Two tokens and none more: the third write holds the worker; the forty no-ops around them never waited."""
    queue: WorkQueue[str] = WorkQueue(rate=1e-9, burst=2)
    keys = ["write-1", *(f"noop-{i}" for i in range(20)), "write-2", *(f"noop-{i}" for i in range(20, 40))]
    for key in [*keys, "write-3", "last"]:
        queue.add(key, background=True)
    reconciled: list[str] = []

    async def reconcile(key: str) -> bool:
        reconciled.append(key)
        return key.startswith("write")

    worker = asyncio.create_task(work(Loop("test", queue, [], reconcile), ControllerMetrics()))
    try:
        for _ in range(200):
            await asyncio.sleep(0.005)
            if "write-3" in reconciled:
                break
        await asyncio.sleep(0.05)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)

    assert reconciled == [*keys, "write-3"]  # "last" waits for a token the third write must pay first


async def test_a_worker_lets_a_watch_run_between_reconciles_that_await_nothing() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for i in range(100):
        queue.add(f"start-{i}", background=True)
    reconciled: list[str] = []

    async def reconcile(key: str) -> bool:
        reconciled.append(key)
        return False

    async def watch() -> None:
        await asyncio.sleep(0)
        queue.add("changed")

    worker = asyncio.create_task(work(Loop("test", queue, [], reconcile), ControllerMetrics()))
    seen = asyncio.create_task(watch())
    try:
        for _ in range(200):
            await asyncio.sleep(0.005)
            if len(reconciled) == 101:
                break
    finally:
        worker.cancel()
        await asyncio.gather(worker, seen, return_exceptions=True)

    assert reconciled.index("changed") < 5
