"""The token endpoint's brute-force throttle is per client: a source guessing a VPC's password is slowed down and
then refused, and nobody else is — not the VPC's own kubelet or CI from another address, with a cold cache (a
controller restart, a new replica, a rotation), nor anyone while one source floods the bcrypt threads."""

from __future__ import annotations

import asyncio
import base64
import datetime
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from controller.registry import tokens as endpoint
from controller.registry.tokens import Signer, TokenConfig, TokenServer
from rules import registry as r
from rules import registry_token as t
from rules.certs import make_ca
from tests.unit.test_registry_tokens import ca_secret

PASSWORD = "p" * 40
CONFIG = TokenConfig(port=0, host="127.0.0.1", ca_secret=("smll-system", "tokens-ca"), service="reg:5000")
SOURCE = "X-Test-Source"  # the test's stand-in for the client address (request.remote)
USERS = [f"vpc-u{i}" for i in range(60)]


@pytest.fixture
def server() -> TokenServer:
    signer = Signer(CONFIG)
    signer.replace([ca_secret(make_ca("tokens", valid_for=datetime.timedelta(days=30)))])
    server = TokenServer(CONFIG, signer)
    hashed = r.hash_password(PASSWORD, cost=4)
    server.users.entries = {user: hashed for user in ["vpc-bank", "vpc-shop", *USERS]}
    server.namespaces.replace([("bank", "bank"), ("shop", "shop"), *((user[4:], user[4:]) for user in USERS)])
    server.synced = True
    return server


@web.middleware
async def remote_from_header(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    return await handler(request.clone(remote=request.headers.get(SOURCE) or request.remote or "unknown"))


def app_of(server: TokenServer) -> web.Application:
    app = server.app()
    app.middlewares.append(remote_from_header)
    return app


def login(user: str, password: str, source: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}", SOURCE: source}


async def status(http: Any, user: str, password: str, source: str) -> int:
    answer = await http.get("/token", params={"service": "reg:5000"}, headers=login(user, password, source))
    return int(answer.status)


async def test_guessing_a_vpcs_password_from_one_address_does_not_lock_out_its_owner_elsewhere(
    server: TokenServer, aiohttp_client: Any
) -> None:
    """The attack: 10+ wrong passwords for vpc-bank from A; bank's right password from B, nothing cached (a fresh
    endpoint: a restart, a new replica, a rotation), must still get a token."""
    http = await aiohttp_client(app_of(server))
    guesses = [await status(http, "vpc-bank", f"wrong{i}", "10.0.0.66") for i in range(t.FAILURE_BURST + 3)]
    assert guesses[: t.FAILURE_BURST] == [401] * t.FAILURE_BURST
    assert guesses[-1] == 429
    assert await status(http, "vpc-bank", PASSWORD, "10.0.0.7") == 200
    assert await status(http, "vpc-bank", "wrong", "10.0.0.66") == 429, "the guessing source is still refused"


async def test_a_source_that_keeps_guessing_is_throttled_per_user_and_overall(
    server: TokenServer, aiohttp_client: Any
) -> None:
    clock = [1000.0]
    server.clock = lambda: clock[0]
    http = await aiohttp_client(app_of(server))
    attacker = "10.0.0.66"
    assert [await status(http, "vpc-bank", f"w{i}", attacker) for i in range(t.FAILURE_BURST)] == [401] * 10
    assert await status(http, "vpc-bank", "w", attacker) == 429
    clock[0] += 0.9 / t.FAILURES_PER_SECOND
    assert await status(http, "vpc-bank", "w", attacker) == 429
    clock[0] += 0.1 / t.FAILURES_PER_SECOND
    assert await status(http, "vpc-bank", "w", attacker) == 401, "one more guess per 1 / FAILURES_PER_SECOND s"
    assert await status(http, "vpc-bank", "w", attacker) == 429
    # other users from the same source: the source's own bucket stops it too
    statuses = [await status(http, user, "w", attacker) for user in USERS[: t.SOURCE_FAILURE_BURST]]
    level = t.FAILURE_BURST + 1 - 2 * t.SOURCE_FAILURES_PER_SECOND  # 11 failures, 2 s drained
    fit = int(t.SOURCE_FAILURE_BURST - level)
    assert statuses == [401] * fit + [429] * (t.SOURCE_FAILURE_BURST - fit)
    assert await status(http, "vpc-shop", PASSWORD, attacker) == 429, "a throttled source is refused unchecked"
    assert await status(http, "vpc-shop", PASSWORD, "10.0.0.8") == 200, "nobody else is"
    clock[0] += t.SOURCE_FAILURE_BURST / t.SOURCE_FAILURES_PER_SECOND
    assert await status(http, "vpc-shop", PASSWORD, attacker) == 200, "the source's bucket drains"


async def test_a_known_password_is_answered_whatever_its_source_did(server: TokenServer, aiohttp_client: Any) -> None:
    http = await aiohttp_client(app_of(server))
    assert await status(http, "vpc-bank", PASSWORD, "10.0.0.66") == 200
    for i in range(t.SOURCE_FAILURE_BURST + 1):
        await status(http, USERS[i % len(USERS)], "w", "10.0.0.66")
    assert await status(http, "vpc-bank", PASSWORD, "10.0.0.66") == 200  # remembered: no check, no throttle


async def test_a_flood_of_wrong_guesses_from_one_source_does_not_make_another_wait_into_429(
    server: TokenServer, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One source sends many wrong guesses at once across many users while the bcrypt threads are held; a right
    password from another source waits for a thread but is never refused, and gets its token."""
    gate = threading.Event()
    started = threading.Semaphore(0)
    check = endpoint._first_match

    def held(password: str, hashes: tuple[str, ...]) -> str | None:
        started.release()
        assert gate.wait(30), "the test never opened the gate"
        return check(password, hashes)

    monkeypatch.setattr(endpoint, "_first_match", held)
    http = await aiohttp_client(app_of(server))
    flood = [asyncio.create_task(status(http, user, "wrong", "10.0.0.66")) for user in USERS]
    for _ in range(200):  # until every guess was answered at once or is waiting (bounded)
        await asyncio.sleep(0.01)
        if sum(task.done() for task in flood) + server_waiting(server) >= len(USERS):
            break
    rightful = asyncio.create_task(status(http, "vpc-bank", PASSWORD, "10.0.0.7"))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if rightful.done() or server_waiting(server) > sum(not task.done() for task in flood):
            break
    gate.set()
    assert await rightful == 200
    statuses = await asyncio.gather(*flood)
    assert set(statuses) <= {401, 429}
    bound = endpoint.MAX_WAITING
    assert statuses.count(401) <= (sum(bound.values()) if isinstance(bound, dict) else bound), "bounded waiting"


def server_waiting(server: TokenServer) -> int:
    """Requests admitted to a bcrypt check (waiting or running), whichever way the endpoint counts them."""
    waiting = getattr(server, "waiting", 0)
    return int(waiting) if isinstance(waiting, int) else sum(waiting.values())


# ---- the pure throttle (rules.registry_token.Throttle) ----------------------------------------------------


def guessed(pairs: dict[tuple[str, str], int], now: float = 100.0) -> t.Throttle:
    throttle = t.Throttle()
    for (source, user), times in pairs.items():
        for _ in range(times):
            throttle.failed(source, user, now)
    return throttle


@pytest.mark.parametrize(
    ("history", "source", "user", "refused"),
    [
        ({("A", "vpc-bank"): 10}, "A", "vpc-bank", True),
        ({("A", "vpc-bank"): 10}, "B", "vpc-bank", False),  # the owner from elsewhere: checked
        ({("A", "vpc-bank"): 10}, "A", "vpc-shop", False),  # the source is not over its own bucket yet
        ({("A", "vpc-bank"): 9}, "A", "vpc-bank", False),
        ({("A", f"vpc-u{i}"): 1 for i in range(30)}, "A", "vpc-bank", True),  # the source overall
        ({("A", f"vpc-u{i}"): 1 for i in range(29)}, "A", "vpc-bank", False),
        ({(f"10.0.{i}.1", "vpc-bank"): 9 for i in range(50)}, "B", "vpc-bank", False),  # many sources: not a lockout
    ],
)
def test_the_throttle_refuses_a_source_never_a_user(
    history: dict[tuple[str, str], int], source: str, user: str, refused: bool
) -> None:
    assert guessed(history).refused(source, user, 100.0) is refused


@pytest.mark.parametrize(
    ("history", "source", "under_way", "later", "lane"),
    [
        ({}, "A", 0, 0.0, "clean"),
        ({}, "A", t.SOURCE_CLEAN_CHECKS - 1, 0.0, "clean"),
        ({}, "A", t.SOURCE_CLEAN_CHECKS, 0.0, "failing"),  # many at once from one source: the failing lane
        ({("A", "vpc-bank"): 1}, "A", 0, 0.0, "failing"),
        ({("A", "vpc-bank"): 1}, "B", 0, 0.0, "clean"),
        ({("A", "vpc-bank"): 1}, "A", 0, 0.5 / t.SOURCE_FAILURES_PER_SECOND, "failing"),
        ({("A", "vpc-bank"): 1}, "A", 0, 1 / t.SOURCE_FAILURES_PER_SECOND, "clean"),  # drained: clean again
    ],
)
def test_the_lane_of_a_check(
    history: dict[tuple[str, str], int], source: str, under_way: int, later: float, lane: str
) -> None:
    assert guessed(history).lane(source, under_way, 100.0 + later) == lane


def test_a_right_password_clears_its_pair_but_not_the_source() -> None:
    throttle = guessed({("A", "vpc-bank"): 10})
    throttle.succeeded("A", "vpc-bank")
    assert not throttle.refused("A", "vpc-bank", 100.0)
    assert throttle.sources["A"].level == 10


def test_the_throttle_stays_bounded_dropping_drained_buckets_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(t, "MAX_TRACKED", 4)
    throttle = guessed({("old", "vpc-a"): 1, ("old", "vpc-b"): 1, ("old", "vpc-c"): 1}, now=0.0)
    throttle.failed("A", "vpc-bank", 100.0)  # 3 pairs: room
    throttle.failed("A", "vpc-bank", 100.0)  # 4 pairs: the drained ones go
    assert set(throttle.pairs) == {("A", "vpc-bank")}
    assert throttle.pairs["A", "vpc-bank"].level == 2
    fresh = guessed({("A", f"vpc-u{i}"): 1 for i in range(5)})
    assert len(fresh.pairs) <= 4
    assert len(fresh.sources) == 1
