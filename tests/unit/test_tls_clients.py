"""The admission port decides only for the apiserver: over real TLS on loopback, a review is judged only with the
apiserver's webhook client certificate (signed by the CA of ``--client-ca-file``, with an allowed name), and the
health port answers health and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from devenv.process import free_port
from rules.certs import KeyPair, make_ca, make_leaf
from tests.factories import admission_review, secret
from webhook import __main__ as main
from webhook.app import WebhookState, create_app, health_app, serve_until_stopped
from webhook.tls import APISERVER, ClientCAFile, ReloadingCertificate, TrustError

DAY = datetime.timedelta(days=1)
SERVING_CA = make_ca("serving CA", valid_for=DAY)
APISERVER_CA = make_ca("admission client CA", valid_for=DAY)
OTHER_CA = make_ca("some other CA", valid_for=DAY)
APISERVER_NAME = "kube-apiserver-admission-client"


def client(ca: KeyPair | None, name: str = APISERVER_NAME) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=SERVING_CA.cert_pem.decode())
    if ca is not None:
        pair = make_leaf(ca, name, valid_for=DAY, client=True)
        directory = Path(tempfile.mkdtemp())
        (directory / "c.crt").write_bytes(pair.cert_pem)
        (directory / "c.key").write_bytes(pair.key_pem)
        context.load_cert_chain(directory / "c.crt", directory / "c.key")
    return context


@dataclass
class Ports:
    admission: int
    health: int
    ca_file: Path
    trust: ClientCAFile


@pytest.fixture
async def ports(tmp_path: Path) -> AsyncIterator[Ports]:
    """The admission app on a port that requires the apiserver's client certificate, health on a port of its own."""
    serving = make_leaf(SERVING_CA, "smll-secrets-webhook", valid_for=DAY, ip_addresses=("127.0.0.1",))
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    (tmp_path / "client-ca.crt").write_bytes(APISERVER_CA.cert_pem)
    tls = ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert tls.reload()
    trust = ClientCAFile(tls, tmp_path / "client-ca.crt", APISERVER)
    assert trust.load()
    state = WebhookState(allowed_clients=frozenset({APISERVER_NAME}))
    runners = [web.AppRunner(create_app(state, health=False)), web.AppRunner(health_app(state))]
    for runner in runners:
        await runner.setup()
    await web.TCPSite(runners[0], "127.0.0.1", 0, ssl_context=tls.verifying(APISERVER)).start()
    await web.TCPSite(runners[1], "127.0.0.1", 0).start()
    try:
        yield Ports(runners[0].addresses[0][1], runners[1].addresses[0][1], tmp_path / "client-ca.crt", trust)
    finally:
        for runner in runners:
            await runner.cleanup()


async def exchange(port: int, context: ssl.SSLContext | None, method: str, path: str, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


def status_of(answer: bytes) -> int:
    return int(answer.split(b"\r\n", 1)[0].split()[1])


def forged_delete() -> bytes:
    return json.dumps(admission_review(None, operation="DELETE", old=secret("stripe", KEY="YQ=="))).encode()


async def test_the_apiserver_s_certificate_gets_a_decision(ports: Ports) -> None:
    answer = await exchange(ports.admission, client(APISERVER_CA), "POST", "/validate", forged_delete())
    assert status_of(answer) == 200
    assert b'"allowed":true' in answer


@pytest.mark.parametrize("ca", [None, OTHER_CA], ids=["no-certificate", "another-ca"])
async def test_a_client_without_the_apiserver_s_certificate_is_refused_at_the_handshake(
    ports: Ports, ca: KeyPair | None
) -> None:
    # With TLS 1.3 the client may learn of the refusal only when it reads: an alert, or a connection closed unanswered.
    try:
        answer = await exchange(ports.admission, client(ca), "POST", "/validate", forged_delete())
    except (ssl.SSLError, ConnectionError):
        return
    assert answer == b"", "no byte of an answer without the apiserver's certificate"


async def test_a_certificate_of_the_right_ca_but_not_an_allowed_name_gets_no_decision(ports: Ports) -> None:
    answer = await exchange(ports.admission, client(APISERVER_CA, "someone"), "POST", "/validate", forged_delete())
    assert status_of(answer) == 403
    assert b"allowed" not in answer.partition(b"\r\n\r\n")[2]


async def test_the_health_port_answers_health_and_judges_nothing(ports: Ports) -> None:
    assert status_of(await exchange(ports.health, None, "GET", "/readyz")) == 200
    assert b"reviews" in await exchange(ports.health, None, "GET", "/metrics")
    for path in ("/validate", "/mutate"):
        assert status_of(await exchange(ports.health, None, "POST", path, forged_delete())) in (404, 405)
    # And the admission port serves no health: everything there needs the apiserver's certificate anyway.
    assert status_of(await exchange(ports.admission, client(APISERVER_CA), "GET", "/readyz")) == 404


async def test_a_new_client_ca_on_disk_is_trusted_on_the_next_poll_and_a_bad_one_never(ports: Ports) -> None:
    ports.ca_file.write_text("not a certificate")
    ports.trust.poll()
    answer = await exchange(ports.admission, client(APISERVER_CA), "POST", "/validate", forged_delete())
    assert status_of(answer) == 200, "a bundle that does not load keeps the one in use"

    ports.ca_file.write_bytes(OTHER_CA.cert_pem)
    ports.trust.poll()
    answer = await exchange(ports.admission, client(OTHER_CA), "POST", "/validate", forged_delete())
    assert status_of(answer) == 200


def test_a_client_ca_file_that_is_not_a_certificate_says_so(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("")
    tls = ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
    with pytest.raises(TrustError, match="holds no PEM certificate"):
        ClientCAFile(tls, tmp_path / "ca.crt", APISERVER).load()
    with pytest.raises(TrustError, match="cannot trust the apiserver's webhook client from"):
        ClientCAFile(tls, tmp_path / "missing.crt", APISERVER).load()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(["--client-ca-file=/ca.crt"], "--client-ca-file needs --health-port", id="health-stays"),
        pytest.param(["--client-allowed-name=x"], "--client-allowed-name needs --client-ca-file", id="names-alone"),
    ],
)
def test_contradicting_flags_say_what_to_change(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = main.parser()
    args = parser.parse_args(["--cert-file=/c", "--key-file=/k", *flags])
    with pytest.raises(SystemExit):
        main.settings_from(args, parser)
    assert message in capsys.readouterr().err


async def test_serve_until_stopped_serves_each_app_on_its_own_port_only() -> None:
    state = WebhookState()
    admission, health = free_port(), free_port()
    served = asyncio.create_task(
        serve_until_stopped(
            create_app(state, health=False),
            host="127.0.0.1",
            port=admission,
            signals=(),
            more_apps=[(health_app(state), health, None)],
        )
    )
    try:
        for _ in range(50):
            with contextlib.suppress(OSError):
                answer = await exchange(health, None, "GET", "/readyz")
                break
            await asyncio.sleep(0.1)
        assert status_of(answer) == 200
        assert status_of(await exchange(admission, None, "GET", "/readyz")) == 404
        assert status_of(await exchange(health, None, "POST", "/validate", forged_delete())) in (404, 405)
    finally:
        state.fail("the test is over")
        assert await served == 1


async def test_a_renewed_serving_pair_is_served_on_the_admission_port_still_behind_the_client_check(
    ports: Ports,
) -> None:
    directory = ports.ca_file.parent
    renewed = make_leaf(SERVING_CA, "renewed", valid_for=DAY, ip_addresses=("127.0.0.1",))
    (directory / "tls.key").write_bytes(renewed.key_pem)
    (directory / "tls.crt").write_bytes(renewed.cert_pem)
    assert ports.trust.tls.reload()

    _, writer = await asyncio.open_connection("127.0.0.1", ports.admission, ssl=client(APISERVER_CA))
    served = writer.get_extra_info("ssl_object").getpeercert()
    writer.close()
    assert dict(rdn[0] for rdn in served["subject"])["commonName"] == "renewed"
    try:
        answer = await exchange(ports.admission, client(None), "POST", "/validate", forged_delete())
    except (ssl.SSLError, ConnectionError):
        return
    assert answer == b""
