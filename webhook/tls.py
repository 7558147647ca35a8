"""The server's TLS: TLS 1.2 or newer, certificate and key read from files and reloaded when they change.

The listener keeps one SSLContext for its whole life. Each load makes a fresh context from the files, and the
listener's context hands every new handshake to the newest one (the SNI callback runs on every ClientHello, with
or without a server name). A pair that does not load — a half-written renewal, a key that does not match its
certificate, a missing file — never touches the context in use: the old certificate is served until a good pair
is on disk. Connections already open keep the certificate they were made with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

# What identifies one version of a file: a rename (Kubernetes' atomic volume update, our own os.replace) changes
# the inode; an in-place rewrite changes the mtime or the size.
Stamp = tuple[tuple[int, int, int], ...]


def server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    return context


# Whose client certificates a verifying listener requires: the apiserver's front proxy (the write-only API's port),
# or the apiserver calling its webhooks (the admission port, with the chart's webhook.clientAuth).
FRONT_PROXY = "the apiserver's front proxy"
APISERVER = "the apiserver's webhook client"


class _Trust:
    """One verifying listener: the context a site serves with, the CA its clients must be signed by, and the
    context (the served pair and that CA) every new handshake is handed to."""

    def __init__(self) -> None:
        self.listener = server_context()
        self.listener.verify_mode = ssl.CERT_REQUIRED
        self.listener.sni_callback = self._hand_over
        self.ca: str | None = None
        self.current: ssl.SSLContext | None = None

    def _hand_over(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        if self.current is not None:
            connection.context = self.current


class ReloadingCertificate:
    """``context`` is what the listener serves with; ``reload()`` (or ``watch()``) picks up new files.

    ``verifying(clients)`` is another listener context with the same certificate that requires a client certificate
    signed by the CA given to ``trust_clients(…, clients=clients)``; until then it accepts nobody. ``client_verifying``
    is the write-only API's (the front proxy's).
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = server_context()
        self.context.sni_callback = self._hand_over
        self._trusts: dict[str, _Trust] = {}
        self.client_verifying = self.verifying(FRONT_PROXY)
        self._current: ssl.SSLContext | None = None
        self._stamp: Stamp | None = None
        self._failed: Stamp | None = None

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def _hand_over(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        if self._current is not None:
            connection.context = self._current

    def verifying(self, clients: str) -> ssl.SSLContext:
        """The listener context that requires the client certificates of ``clients`` (one per kind of client)."""
        return self._trusts.setdefault(clients, _Trust()).listener

    def _verifying(self, ca_pem: str | None) -> ssl.SSLContext | None:
        """A context with the served pair that requires clients signed by ``ca_pem``; None without one."""
        if not ca_pem:
            return None
        verifying = server_context()
        verifying.verify_mode = ssl.CERT_REQUIRED
        verifying.load_verify_locations(cadata=ca_pem)
        verifying.load_cert_chain(self.cert_file, self.key_file)
        return verifying

    def trust_clients(self, ca_pem: str, *, clients: str = FRONT_PROXY) -> None:
        """Require client certificates signed by ``ca_pem`` on ``verifying(clients)`` (from now on; again when the
        CA changes). Raises ssl.SSLError when the bundle does not load; what is in use stays."""
        trust = self._trusts.setdefault(clients, _Trust())
        # The listener's own context verifies too (the handshake may be judged by either, whatever the SNI swap).
        trust.listener.load_verify_locations(cadata=ca_pem)
        if ca_pem == trust.ca or self._current is None:
            trust.ca = ca_pem
            return
        trust.current = self._verifying(ca_pem)
        trust.ca = ca_pem

    def _current_stamp(self) -> Stamp:
        stats = (os.stat(self.cert_file), os.stat(self.key_file))
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def reload(self) -> bool:
        """Load the files if they changed since the last good load; True when a new certificate was loaded.

        Raises OSError or ssl.SSLError when the files changed but do not make a usable pair; what is served
        stays as it was.
        """
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        fresh = server_context()
        # load_cert_chain checks that the key belongs to the certificate. The stamp was taken before reading: if
        # the files change while they are read, the next call sees a new stamp and loads again.
        fresh.load_cert_chain(self.cert_file, self.key_file)
        verifying = {trust: self._verifying(trust.ca) for trust in self._trusts.values()}
        self._current = fresh
        for trust, context in verifying.items():
            trust.current = context
        self._stamp = stamp
        self._failed = None
        return True

    def poll(self) -> None:
        """One step of ``watch``: reload, and say once per version of the files when they cannot be loaded."""
        try:
            if self.reload():
                log.info("serving the certificate in %s", self.cert_file)
        except (OSError, ssl.SSLError) as error:
            stamp = self._safe_stamp()
            if stamp is None or stamp != self._failed:
                log.warning("keeping the current certificate: %s does not load yet: %s", self.cert_file, error)
            self._failed = stamp

    def _safe_stamp(self) -> Stamp | None:
        try:
            return self._current_stamp()
        except OSError:
            return None

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.poll()


def common_names(peer: object) -> frozenset[str]:
    """The subject's common names of a verified peer certificate, as ``getpeercert()`` gives it (none without one)."""
    subject = peer.get("subject", ()) if isinstance(peer, dict) else ()
    return frozenset(value for rdn in subject for key, value in rdn if key == "commonName")


class TrustError(ValueError):
    """A client CA file that cannot be trusted (missing, empty, not PEM certificates); the message says which."""


class ClientCAFile:
    """A CA bundle on disk (a mounted ConfigMap) whose clients ``tls`` requires on ``verifying(clients)``: loaded at
    start, and again whenever the file changes. A bundle that does not load never replaces the one in use."""

    def __init__(self, tls: ReloadingCertificate, path: Path, clients: str) -> None:
        self.tls, self.path, self.clients = tls, path, clients
        self._stamp: tuple[int, int, int] | None = None
        self._warned = False

    def load(self) -> bool:
        """Trust the file's CA if it changed since the last good load; True when it did. Raises TrustError."""
        try:
            status = os.stat(self.path)
            stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
            if stamp == self._stamp:
                return False
            pem = self.path.read_text()
            if "-----BEGIN CERTIFICATE-----" not in pem:
                raise TrustError(f"{self.path} holds no PEM certificate")
            self.tls.trust_clients(pem, clients=self.clients)
        except (OSError, ssl.SSLError, UnicodeDecodeError) as error:
            raise TrustError(f"cannot trust {self.clients} from {self.path}: {error}") from None
        self._stamp = stamp
        return True

    def poll(self) -> None:
        """One step of ``watch``: load, and say once (until a good load) when the file does not load."""
        try:
            if self.load():
                log.info("requiring client certificates of %s signed by %s", self.clients, self.path)
            self._warned = False
        except TrustError as error:
            if not self._warned:
                log.warning("keeping the client CA in use: %s", error)
            self._warned = True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.poll()
