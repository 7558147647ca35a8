"""Leader election against a fake Lease API: expiry by our own clock, errors while acquiring and renewing."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import aiohttp
import pytest

from controller import leader
from controller.leader import LeaderElector
from kubeio.rest import ApiException

LEASE = "/apis/coordination.k8s.io/v1/namespaces/smll-system/leases/controller"


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class FakeLeases:
    """One Lease, written with resourceVersion preconditions. ``failures`` are raised (or awaited, for a
    connection that never answers) by the next requests, one each."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.failures: list[BaseException | asyncio.Event] = []
        self.requests: list[str] = []
        self.answered = asyncio.Event()  # set by every request that got through

    def hold(self, holder: str, renew_time: str) -> None:
        self.version += 1
        spec = {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renew_time, "leaseTransitions": 0}
        self.lease = {"metadata": {"name": "controller", "resourceVersion": str(self.version)}, "spec": spec}

    async def json_request(self, api: object, method: str, path: str, *, body: Any = None, **_: Any) -> Any:
        self.requests.append(method)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, asyncio.Event):
                await failure.wait()  # a dropped connection: no answer, no error
            else:
                raise failure
        self.answered.set()
        if method == "GET":
            if self.lease is None:
                raise ApiException(status=404, reason="Not Found")
            return copy.deepcopy(self.lease)
        if method == "POST":
            if self.lease is not None:
                raise ApiException(status=409, reason="Conflict")
            self.lease = {**copy.deepcopy(body), "metadata": {"name": "controller", "resourceVersion": "1"}}
            self.version = 1
            return copy.deepcopy(self.lease)
        assert method == "PUT"
        assert path == LEASE
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise ApiException(status=409, reason="Conflict")
        self.version += 1
        self.lease = {**copy.deepcopy(body), "metadata": {"name": "controller", "resourceVersion": str(self.version)}}
        return copy.deepcopy(self.lease)

    @property
    def holder(self) -> str:
        return str((self.lease or {}).get("spec", {}).get("holderIdentity"))


@pytest.fixture
def leases(monkeypatch: pytest.MonkeyPatch) -> FakeLeases:
    fake = FakeLeases()
    monkeypatch.setattr(leader, "json_request", fake.json_request)
    return fake


def elector(clock: Clock | None = None, **timing: float) -> LeaderElector:
    return LeaderElector(
        None,  # type: ignore[arg-type]  # every request goes to FakeLeases
        namespace="smll-system",
        name="controller",
        identity="me",
        lease_seconds=15,
        clock=clock or Clock(),
        **timing,  # type: ignore[arg-type]
    )


async def test_a_live_holder_whose_clock_is_an_hour_behind_keeps_the_lease(leases: FakeLeases) -> None:
    clock = Clock()
    candidate = elector(clock)
    leases.hold("other", "2026-01-01T11:00:00.000000Z")  # an hour before the candidate's wall clock

    taken = []
    for second in range(2, 61, 2):  # a minute of the holder renewing every two seconds, by its own clock
        taken.append(await candidate.try_acquire_or_renew())
        clock.now += 2
        leases.hold("other", f"2026-01-01T11:00:{second:02}.000000Z")

    assert not any(taken)
    assert leases.holder == "other"


async def test_a_dead_holder_whose_clock_ran_ahead_is_replaced_after_the_lease_duration_of_our_clock(
    leases: FakeLeases,
) -> None:
    clock = Clock()
    candidate = elector(clock)
    leases.hold("other", "2099-01-01T00:00:00.000000Z")  # far in the candidate's future, and never renewed again

    assert await candidate.try_acquire_or_renew() is False  # first sight: the record just "changed"
    clock.now += 14
    assert await candidate.try_acquire_or_renew() is False
    clock.now += 1
    assert await candidate.try_acquire_or_renew() is True

    assert leases.holder == "me"
    assert leases.lease is not None
    assert leases.lease["spec"]["leaseTransitions"] == 1


async def test_a_refused_lease_ends_acquiring_with_the_error_and_never_leads(leases: FakeLeases) -> None:
    candidate = elector(retry_period=0.01)
    leases.failures = [ApiException(status=403, reason="Forbidden")]

    with pytest.raises(ApiException):
        await candidate.acquire()

    assert not candidate.leading.is_set()
    assert leases.lease is None


async def test_a_write_lost_in_a_dropped_connection_does_not_lead_until_the_lease_says_so(
    leases: FakeLeases,
) -> None:
    candidate = elector(retry_period=0.01)
    # The GET and then the create fail in transit; the next round reads 404 again and creates the Lease.
    leases.failures = [aiohttp.ServerDisconnectedError(), ConnectionResetError()]

    await asyncio.wait_for(candidate.acquire(), 30)

    assert candidate.leading.is_set()
    assert leases.holder == "me"
    assert leases.requests == ["GET", "GET", "GET", "POST"]


async def test_transient_errors_while_renewing_are_tolerated_within_the_renew_deadline(leases: FakeLeases) -> None:
    me = elector(retry_period=0.01, renew_deadline=10)
    await me.acquire()
    leases.failures = [ConnectionResetError(), aiohttp.ServerDisconnectedError(), TimeoutError()]

    keeping = asyncio.create_task(me.keep())
    while leases.requests.count("PUT") < 2:  # the errors waited out, then renewed twice
        leases.answered.clear()
        await leases.answered.wait()
    still_leading = me.leading.is_set() and not keeping.done()
    leases.hold("other", "2026-01-01T12:00:00.000000Z")  # then another replica takes over
    await asyncio.wait_for(keeping, 30)

    assert still_leading
    assert not me.leading.is_set()


async def test_a_connection_that_never_answers_makes_the_leader_step_down_at_the_renew_deadline(
    leases: FakeLeases,
) -> None:
    me = elector(retry_period=0.05, renew_deadline=0.5)
    await me.acquire()
    never = asyncio.Event()
    leases.failures = [never]
    loop = asyncio.get_running_loop()
    started = loop.time()

    await asyncio.wait_for(me.keep(), 30)

    assert not me.leading.is_set()
    assert loop.time() - started >= 0.5  # not before the deadline either
    assert leases.requests.count("GET") == 2  # the acquire, and the renewal that never came back


async def test_a_refused_renewal_steps_down_at_once(leases: FakeLeases) -> None:
    me = elector(retry_period=0.01, renew_deadline=60)
    await me.acquire()
    leases.failures = [ApiException(status=403, reason="Forbidden")]

    await asyncio.wait_for(me.keep(), 30)

    assert not me.leading.is_set()
    assert leases.requests == ["GET", "POST", "GET"]
