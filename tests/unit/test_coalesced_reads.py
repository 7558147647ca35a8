"""Coalesced consistent reads: fewer reads, and never one that started before the request arrived."""

from __future__ import annotations

import asyncio

import pytest

from webhook.validate import CoalescedReads, Snapshot


class Reads:
    """A fake consistent read that records when each read started (in arrival order)."""

    def __init__(self) -> None:
        self.clock = 0
        self.started: list[int] = []
        self.release = asyncio.Event()

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    async def __call__(self, namespace: str) -> Snapshot:
        stamp = self.tick()
        self.started.append(stamp)
        await self.release.wait()
        return [(namespace, str(stamp).encode())]


async def test_a_burst_of_requests_shares_two_reads_each_started_after_its_requests_arrived() -> None:
    reads = Reads()
    coalesced = CoalescedReads(reads)

    async def request() -> tuple[int, int]:
        arrived = reads.tick()
        result = await coalesced("shop")
        return arrived, int(result[0][1])

    first = asyncio.create_task(request())
    await asyncio.sleep(0)  # the first read starts
    await asyncio.sleep(0)
    burst = [asyncio.create_task(request()) for _ in range(9)]
    await asyncio.sleep(0)
    reads.release.set()
    results = await asyncio.gather(first, *burst)

    assert len(reads.started) == 2
    for arrived, read_started in results:
        assert read_started > arrived, "a read must start after the request it answers arrived"


async def test_a_failed_read_fails_every_waiter_and_the_next_request_reads_again() -> None:
    calls = 0

    async def failing(namespace: str) -> Snapshot:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("apiserver gone")
        return []

    coalesced = CoalescedReads(failing)

    with pytest.raises(OSError, match="apiserver gone"):
        await coalesced("shop")
    assert await coalesced("shop") == []
    assert calls == 2


async def test_namespaces_do_not_share_reads() -> None:
    reads = Reads()
    reads.release.set()
    coalesced = CoalescedReads(reads)

    shop, bank = await asyncio.gather(coalesced("shop"), coalesced("bank"))

    assert shop[0][0] == "shop"
    assert bank[0][0] == "bank"
