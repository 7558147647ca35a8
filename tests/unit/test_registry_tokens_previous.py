"""The token endpoint after a rotation: the new password, and the previous one until it is retired (by the
controller, once the readers have rolled) and never past its grace period."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest

from controller.registry.tokens import Signer, TokenConfig, TokenServer
from rules import registry as r
from rules import registry_token as t
from rules.certs import make_ca
from tests.unit.test_registry_tokens import ca_secret

OLD, NEW = "o" * 40, "n" * 40
GRACE = datetime.timedelta(hours=1)
CONFIG = TokenConfig(
    port=0,
    host="127.0.0.1",
    ca_secret=("smll-system", "tokens-ca"),
    service="reg:5000",
    previous_grace_seconds=GRACE.total_seconds(),
)
OLD_HASH, NEW_HASH = r.hash_password(OLD, cost=4), r.hash_password(NEW, cost=4)


def htpasswd_secret(entries: dict[str, str], previous: dict[str, tuple[r.PreviousEntry, ...]]) -> dict[str, Any]:
    data = {r.HTPASSWD_KEY: r.format_htpasswd(entries)}
    if previous:
        data[r.PREVIOUS_KEY] = r.format_previous(previous)
    return {
        "metadata": {"namespace": "registry", "name": "htpasswd"},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def rotated(ago: datetime.timedelta) -> dict[str, Any]:
    at = datetime.datetime.now(datetime.UTC) - ago
    return htpasswd_secret({"vpc-a": NEW_HASH}, {"vpc-a": (r.PreviousEntry(OLD_HASH, at),)})


@pytest.fixture
def server() -> TokenServer:
    signer = Signer(CONFIG)
    signer.replace([ca_secret(make_ca("tokens", valid_for=datetime.timedelta(days=30)))])
    server = TokenServer(CONFIG, signer)
    server.users.replace([rotated(datetime.timedelta(minutes=1))])
    server.namespaces.replace([("a", "main")])
    server.synced = True
    return server


def basic(password: str, user: str = "vpc-a") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def status(http: Any, password: str) -> int:
    answer = await http.get("/token", params={"service": "reg:5000"}, headers=basic(password))
    return int(answer.status)


async def test_the_old_password_gets_a_token_until_its_entry_is_retired(
    server: TokenServer, aiohttp_client: Any
) -> None:
    http = await aiohttp_client(server.app())
    assert await status(http, NEW) == 200
    assert await status(http, OLD) == 200, "the old password is refused while the readers have not rolled"
    assert await status(http, OLD) == 200  # remembered, for its hash

    server.users.apply("MODIFIED", htpasswd_secret({"vpc-a": NEW_HASH}, {}))  # the controller retired it

    assert await status(http, OLD) == 401, "a retired password still gets a token (remembered as good)"
    assert await status(http, NEW) == 200


async def test_the_old_password_is_refused_past_its_grace_period_even_if_still_listed(
    server: TokenServer, aiohttp_client: Any
) -> None:
    http = await aiohttp_client(server.app())
    assert await status(http, OLD) == 200
    server.users.apply("MODIFIED", rotated(GRACE + datetime.timedelta(seconds=1)))

    assert await status(http, OLD) == 401
    assert await status(http, NEW) == 200


async def test_a_namespace_that_leaves_loses_both_passwords_at_once(server: TokenServer, aiohttp_client: Any) -> None:
    http = await aiohttp_client(server.app())
    assert await status(http, OLD) == 200
    assert await status(http, NEW) == 200
    server.namespaces.apply("MODIFIED", ("a", None))  # the label went (before the controller removes the entries)
    assert await status(http, OLD) == 401
    assert await status(http, NEW) == 401
    server.namespaces.apply("MODIFIED", ("a", "main"))
    server.users.apply(
        "MODIFIED", htpasswd_secret({}, {"vpc-a": (r.PreviousEntry(OLD_HASH, datetime.datetime.now(datetime.UTC)),)})
    )
    assert await status(http, OLD) == 401, "a previous entry without an entry is no login"


async def test_wrong_passwords_are_still_throttled_with_a_previous_entry(
    server: TokenServer, aiohttp_client: Any
) -> None:
    http = await aiohttp_client(server.app())
    statuses = [await status(http, f"wrong{i}") for i in range(t.FAILURE_BURST + 1)]
    assert statuses[: t.FAILURE_BURST] == [401] * t.FAILURE_BURST
    assert statuses[-1] == 429
