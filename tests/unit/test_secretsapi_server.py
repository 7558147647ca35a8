"""The write-only API's listener over real TLS on loopback: only a client certificate of the apiserver's front proxy
(signed by its CA, with an allowed name) and a user named in its headers get an answer; the admission listener
never serves the API."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from rules.certs import KeyPair, make_ca, make_leaf
from webhook.apiprotocol import FrontProxy
from webhook.referrers import ReferrerIndex
from webhook.secretsapi import SecretsApi, add_routes
from webhook.tls import ReloadingCertificate

DAY = datetime.timedelta(days=1)
SERVING_CA = make_ca("serving CA", valid_for=DAY)
FRONT_PROXY_CA = make_ca("front-proxy-ca", valid_for=DAY)
OTHER_CA = make_ca("some other CA", valid_for=DAY)


def client(ca: KeyPair | None, name: str = "front-proxy-client") -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=SERVING_CA.cert_pem.decode())
    if ca is not None:
        pair = make_leaf(ca, name, valid_for=DAY, client=True)
        directory = Path(tempfile.mkdtemp())
        (directory / "c.crt").write_bytes(pair.cert_pem)
        (directory / "c.key").write_bytes(pair.key_pem)
        context.load_cert_chain(directory / "c.crt", directory / "c.key")
    return context


@dataclass
class Listeners:
    admission: int
    api: int
    tls: ReloadingCertificate
    secrets_api: SecretsApi


@pytest.fixture
async def listeners(tmp_path: Path) -> AsyncIterator[Listeners]:
    serving = make_leaf(SERVING_CA, "smll-secrets-webhook", valid_for=DAY, ip_addresses=("127.0.0.1",))
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    tls = ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert tls.reload()
    secrets_api = SecretsApi(ReferrerIndex())
    secrets_api.front_proxy = FrontProxy(FRONT_PROXY_CA.cert_pem.decode(), frozenset({"front-proxy-client"}))
    tls.trust_clients(FRONT_PROXY_CA.cert_pem.decode())
    app = web.Application()
    add_routes(app, secrets_api)
    runner = web.AppRunner(app)
    await runner.setup()
    sites = [
        web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.context),
        web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.client_verifying),
    ]
    for site in sites:
        await site.start()
    ports = [address[1] for address in runner.addresses]
    try:
        yield Listeners(ports[0], ports[1], tls, secrets_api)
    finally:
        await runner.cleanup()


async def exchange(port: int, context: ssl.SSLContext, path: str, headers: dict[str, str]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{lines}\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def get(port: int, context: ssl.SSLContext, path: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    head, _, body = (await exchange(port, context, path, headers)).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


USER = {"X-Remote-User": "alice", "X-Remote-Group": "devs"}


async def test_the_front_proxy_with_a_user_gets_discovery(listeners: Listeners) -> None:
    code, body = await get(listeners.api, client(FRONT_PROXY_CA), "/apis/secrets.smll.io/v1alpha1", USER)
    assert code == 200
    assert body["groupVersion"] == "secrets.smll.io/v1alpha1"


@pytest.mark.parametrize("ca", [None, OTHER_CA], ids=["no-certificate", "another-ca"])
async def test_a_client_without_the_front_proxy_s_certificate_is_refused_at_the_handshake(
    listeners: Listeners, ca: KeyPair | None
) -> None:
    # With TLS 1.3 the client may learn of the refusal only when it reads: an alert, or a connection closed unanswered.
    try:
        answer = await exchange(listeners.api, client(ca), "/apis/secrets.smll.io/v1alpha1", USER)
    except (ssl.SSLError, ConnectionError):
        return
    assert answer == b""


async def test_a_certificate_of_the_right_ca_but_not_an_allowed_name_is_unauthorized(listeners: Listeners) -> None:
    code, body = await get(listeners.api, client(FRONT_PROXY_CA, "someone"), "/apis/secrets.smll.io", USER)
    assert code == 401
    assert body["reason"] == "Unauthorized"


async def test_no_user_named_is_unauthorized(listeners: Listeners) -> None:
    code, body = await get(listeners.api, client(FRONT_PROXY_CA), "/apis", {"X-Remote-Group": "devs"})
    assert (code, body["message"]) == (401, "the front proxy named no user")


async def test_the_admission_listener_never_serves_the_api(listeners: Listeners) -> None:
    code, body = await get(listeners.admission, client(None), "/apis/secrets.smll.io/v1alpha1", USER)
    assert code == 401
    assert body["kind"] == "Status"


async def test_a_new_front_proxy_ca_is_trusted_once_given(listeners: Listeners) -> None:
    listeners.tls.trust_clients(OTHER_CA.cert_pem.decode())
    listeners.secrets_api.front_proxy = FrontProxy(OTHER_CA.cert_pem.decode(), frozenset({"front-proxy-client"}))
    code, _ = await get(listeners.api, client(OTHER_CA), "/apis/secrets.smll.io", USER)
    assert code == 200


async def test_requests_before_the_api_client_exists_are_answered_with_a_status(listeners: Listeners) -> None:
    code, body = await get(listeners.api, client(FRONT_PROXY_CA), "/apis/secrets.smll.io/v1alpha1/writeonlysecrets",
                           USER)  # fmt: skip
    assert code == 503
    assert body["kind"] == "Status"


async def test_a_watch_is_refused_with_a_status_that_says_why(listeners: Listeners) -> None:
    path = "/apis/secrets.smll.io/v1alpha1/namespaces/shop/writeonlysecrets?watch=true"
    code, body = await get(listeners.api, client(FRONT_PROXY_CA), path, USER)
    assert code == 405
    assert "cannot be watched" in str(body["message"])
