"""The server's TLS: TLS 1.2 or newer only, and certificates picked up from disk without a restart."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from rules.certs import KeyPair, make_ca, make_leaf
from webhook.tls import ReloadingCertificate

DAY = datetime.timedelta(days=1)
CA = make_ca("test CA", valid_for=DAY)


def serving(name: str = "first") -> KeyPair:
    return make_leaf(CA, name, valid_for=DAY, ip_addresses=("127.0.0.1",))


def write(directory: Path, pair: KeyPair, *, cert: bool = True, key: bool = True) -> None:
    if key:
        (directory / "tls.key").write_bytes(pair.key_pem)
    if cert:
        (directory / "tls.crt").write_bytes(pair.cert_pem)


def client_context(**versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=CA.cert_pem.decode())
    for attribute, version in versions.items():
        setattr(context, attribute, version)
    return context


@dataclass
class Server:
    port: int
    tls: ReloadingCertificate
    release: asyncio.Event


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """An aiohttp server on loopback serving what ReloadingCertificate loaded; /slow answers when released."""
    write(tmp_path, serving())
    tls = ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert tls.reload()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="slow")

    app = web.Application()

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="fast")

    app.router.add_get("/fast", fast)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(port, tls, release)
    finally:
        await runner.cleanup()


class Connection:
    """One keep-alive HTTPS connection, speaking just enough HTTP/1.1 to see which certificate served it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext | None = None) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port, ssl=context or client_context()))

    @property
    def peer_certificate(self) -> bytes:
        ssl_object = self.writer.get_extra_info("ssl_object")
        return bytes(ssl_object.getpeercert(binary_form=True))

    @property
    def version(self) -> str:
        return str(self.writer.get_extra_info("ssl_object").version())

    async def send(self, path: str) -> None:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await self.writer.drain()

    async def response(self) -> tuple[int, str]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        body = await self.reader.readexactly(int(headers["Content-Length"]))
        return int(lines[0].split()[1]), body.decode()

    async def get(self, path: str) -> tuple[int, str]:
        await self.send(path)
        return await self.response()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def der(pair: KeyPair) -> bytes:
    return pair.certificate.public_bytes(Encoding.DER)


async def served_certificate(port: int) -> bytes:
    connection = await Connection.open(port)
    try:
        return connection.peer_certificate
    finally:
        await connection.close()


# -- versions -------------------------------------------------------------------------------------------------


def legacy_client() -> ssl.SSLContext:
    """A client that speaks TLS 1.0 and 1.1 only (OpenSSL 3 needs security level 0 for them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def permissive_server(directory: Path) -> int:
    """A control: a one-shot server that does accept TLS 1.1, to show the legacy client really speaks it here."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))

    def accept_once() -> None:
        with listener, listener.accept()[0] as raw, context.wrap_socket(raw, server_side=True) as tls:
            tls.recv(1)

    threading.Thread(target=accept_once, daemon=True).start()
    return int(listener.getsockname()[1])


def blocking_handshake(port: int, context: ssl.SSLContext) -> str:
    """A handshake on a plain blocking socket, which reads the server's alert before the connection goes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return str(tls.version())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_a_tls_1_1_client_is_refused_and_a_tls_1_2_client_is_served(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    control = await Connection.open(permissive_server(tmp_path), legacy_client())
    assert control.version == "TLSv1.1"
    await control.close()

    # asyncio names the reason of a failed server handshake only in debug mode.
    asyncio.get_running_loop().set_debug(True)
    with caplog.at_level(logging.DEBUG, logger="asyncio"), pytest.raises(ssl.SSLError):
        await asyncio.to_thread(blocking_handshake, server.port, legacy_client())
    for _ in range(50):
        if "UNSUPPORTED_PROTOCOL" in caplog.text:
            break
        await asyncio.sleep(0.01)
    assert "UNSUPPORTED_PROTOCOL" in caplog.text  # the server refused the version, not something else

    tls12 = await Connection.open(server.port, client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert tls12.version == "TLSv1.2"
    assert await tls12.get("/fast") == (200, "fast")
    await tls12.close()


async def test_the_listener_and_every_loaded_context_require_tls_1_2(server: Server, tmp_path: Path) -> None:
    assert server.tls.context.minimum_version == ssl.TLSVersion.TLSv1_2
    write(tmp_path, serving("second"))
    assert server.tls.reload()
    tls12 = await Connection.open(server.port, client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert tls12.version == "TLSv1.2"
    await tls12.close()


# -- reloading ------------------------------------------------------------------------------------------------


async def test_a_certificate_rewritten_on_disk_is_served_on_the_next_handshake_while_a_request_in_flight_completes(
    server: Server, tmp_path: Path
) -> None:
    old = await Connection.open(server.port)
    original = old.peer_certificate
    await old.send("/slow")  # in flight on a keep-alive connection while the certificate changes

    renewed = serving("renewed")
    write(tmp_path, renewed)
    watcher = asyncio.create_task(server.tls.watch(0.02))
    try:
        for _ in range(100):
            if await served_certificate(server.port) == der(renewed):
                break
            await asyncio.sleep(0.02)
        assert await served_certificate(server.port) == der(renewed)
    finally:
        watcher.cancel()

    server.release.set()
    assert await old.response() == (200, "slow")
    assert await old.get("/fast") == (200, "fast")  # the same connection, still on its original certificate
    assert old.peer_certificate == original != der(renewed)
    await old.close()


@pytest.mark.parametrize(
    ("cert", "key"),
    [(True, False), (False, True)],
    ids=["certificate-renewed-key-not-yet", "key-renewed-certificate-not-yet"],
)
async def test_a_half_written_pair_is_not_loaded_and_the_old_certificate_is_still_served(
    server: Server, tmp_path: Path, cert: bool, key: bool
) -> None:
    before = await served_certificate(server.port)
    renewed = serving("renewed")
    write(tmp_path, renewed, cert=cert, key=key)

    with pytest.raises(ssl.SSLError):
        server.tls.reload()
    server.tls.poll()  # what the watch does: log, keep going

    assert await served_certificate(server.port) == before
    write(tmp_path, renewed)
    assert server.tls.reload()
    assert await served_certificate(server.port) == der(renewed)


async def test_a_missing_file_keeps_the_old_certificate(server: Server, tmp_path: Path) -> None:
    before = await served_certificate(server.port)
    (tmp_path / "tls.key").unlink()

    server.tls.poll()

    assert await served_certificate(server.port) == before


async def test_a_pair_swapped_in_by_rename_is_loaded_even_with_the_same_mtime_and_size(
    server: Server, tmp_path: Path
) -> None:
    # Kubernetes updates a mounted Secret by an atomic rename; the copy may keep its timestamps.
    staged = tmp_path / "staged"
    staged.mkdir()
    # ECDSA signatures and serial numbers vary by a byte or two: draw pairs and take two of one size (the fixture's
    # own pair may be of a rare size, so the first is written and loaded here rather than matched).
    by_size: dict[tuple[int, int], list[KeyPair]] = {}
    for pair in (serving() for _ in range(40)):
        by_size.setdefault((len(pair.cert_pem), len(pair.key_pem)), []).append(pair)
    current, renewed = max(by_size.values(), key=len)[:2]
    write(tmp_path, current)
    assert server.tls.reload()
    assert await served_certificate(server.port) == der(current)
    write(staged, renewed)
    for name in ("tls.crt", "tls.key"):
        old = (tmp_path / name).stat()
        assert (staged / name).stat().st_size == old.st_size
        os.utime(staged / name, ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(staged / name, tmp_path / name)

    assert server.tls.reload()
    assert await served_certificate(server.port) == der(renewed)


def test_unchanged_files_are_not_loaded_again(tmp_path: Path) -> None:
    write(tmp_path, serving())
    tls = ReloadingCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")

    assert not tls.loaded
    assert tls.reload()
    assert tls.loaded
    assert not tls.reload()
