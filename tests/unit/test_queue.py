"""The work queue, driven by an injected clock."""

from __future__ import annotations

import asyncio

import pytest

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


def test_the_overall_rate_limit_spaces_out_a_burst(clock: Clock) -> None:
    queue: WorkQueue[str] = WorkQueue(clock=clock, rate=10, burst=2)
    for key in "abcd":
        queue.add(key)

    assert drain(queue) == ["a", "b"]
    taken, wait = queue.try_get()
    assert taken is None
    assert wait == pytest.approx(0.1)
    clock.now += 0.1
    assert drain(queue) == ["c"]


async def test_get_wakes_up_when_a_key_is_added() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()

    queue.add("a")

    assert await asyncio.wait_for(getter, 1) == "a"
